"""The retry schedule: 5, 10, 20, 40, 80 s with bounded jitter, Retry-After honoured and capped."""

from __future__ import annotations

import random
import uuid

import pytest

from shared.config import Settings
from shared.db.models import DELIVERY_STATES
from shared.deliveries import TRANSITIONS, Claimed, DeliveryState, LostSend
from shared.errors import ProviderUnavailable, RateLimited
from workers import retry
from workers.retry import RetryPolicy


def test_default_schedule_is_5_10_20_40_80_then_exhausted():
    policy = RetryPolicy()
    assert [policy.scheduled_delay_s(n) for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert policy.max_attempts == 6
    assert policy.next_delay_s(6) is None
    assert policy.next_delay_s(5) is not None


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5])
def test_jitter_stays_within_ten_percent_and_varies(attempt):
    policy = RetryPolicy()
    rng = random.Random(7)
    delays = [policy.next_delay_s(attempt, rng=rng) for _ in range(200)]
    scheduled = policy.scheduled_delay_s(attempt)
    assert all(scheduled * 0.9 <= d <= scheduled * 1.1 for d in delays if d is not None)
    assert len(set(delays)) > 100  # not a constant


def test_retry_after_wins_when_longer_and_is_capped():
    policy = RetryPolicy(jitter_ratio=0, retry_after_cap_s=120)
    assert policy.next_delay_s(1, retry_after_s=30) == 30
    assert policy.next_delay_s(1, retry_after_s=1) == 5  # the schedule is the floor
    assert policy.next_delay_s(1, retry_after_s=10_000) == 120
    assert policy.next_delay_s(6, retry_after_s=1) is None  # a hint does not extend the budget


def test_time_scale_shrinks_the_schedule_but_not_vendor_hints():
    policy = RetryPolicy(jitter_ratio=0, time_scale=0.01)
    assert policy.next_delay_s(5) == pytest.approx(0.8)
    assert policy.next_delay_s(1, retry_after_s=2) == 2


def test_per_integration_overrides_from_settings():
    policy = RetryPolicy.from_settings(Settings(), max_retries=2, base_delay_s=1)
    assert policy.max_attempts == 3
    assert policy.scheduled_delay_s(2) == 2
    assert RetryPolicy.from_settings(Settings()).max_attempts == 6


# --- decisions after an error, a lost send, and the sweeper's republish deadlines (workers/retry.py) ----------


def _claimed(attempt_no: int, paced_count: int = 0, budget_elapsed_s: float = 0.0) -> Claimed:
    return Claimed(
        uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), attempt_no, None, None, None, paced_count, budget_elapsed_s
    )


def test_the_database_check_and_the_enum_name_the_same_states():
    assert set(DELIVERY_STATES) == {s.value for s in DeliveryState} == set(TRANSITIONS)


def test_a_429_naming_its_wait_does_not_use_the_budget():
    """Repro (before): the sixth 429 in a row ended the delivery dead attempts_exhausted."""
    policy = RetryPolicy(max_retries=1)
    err = RateLimited("webhook", "rate limited", status_code=429, retry_after_s=2.0)
    decision = retry.after_error(policy, _claimed(attempt_no=6, paced_count=5), err, elapsed_s=10)
    assert decision.paced and decision.delay_s is not None and decision.delay_s >= 2.0


def test_pacing_is_bounded_by_elapsed_time():
    policy = RetryPolicy(rate_limited_max_elapsed_s=60)
    err = RateLimited("webhook", "rate limited", status_code=429, retry_after_s=30.0)
    assert retry.after_error(policy, _claimed(3, paced_count=2), err, elapsed_s=20).delay_s is not None
    late = retry.after_error(policy, _claimed(4, paced_count=3), err, elapsed_s=40)
    assert (late.delay_s, late.dead_reason) == (None, retry.RATE_LIMITED_TOO_LONG)
    assert late.detail is not None and "rate limited for 40 s" in late.detail


def test_a_429_without_a_wait_counts_like_any_failure():
    policy = RetryPolicy(max_retries=1)
    err = RateLimited("webhook", "rate limited", status_code=429)
    assert retry.after_error(policy, _claimed(1), err, elapsed_s=0).delay_s is not None
    spent = retry.after_error(policy, _claimed(2), err, elapsed_s=0)
    assert (spent.delay_s, spent.dead_reason, spent.paced) == (None, "attempts_exhausted", False)


def test_paced_attempts_are_not_counted_when_failures_come_after_them():
    policy = RetryPolicy(max_retries=1)
    err = ProviderUnavailable("webhook", "unavailable", status_code=500)
    # attempt 4 after three paced ones is the budget's first failure: it is retried
    assert retry.after_error(policy, _claimed(4, paced_count=3), err, elapsed_s=0).delay_s is not None


def test_a_lost_send_waits_its_scheduled_delay_and_counts_as_a_failure():
    """Repro (before): the sweeper made a lost send due at once, deciding in SQL, not here."""
    policy = RetryPolicy()
    lost = LostSend(
        uuid.uuid4(),
        uuid.uuid4(),
        attempt_no=2,
        paced_count=0,
        retry_max_retries=None,
        retry_base_delay_s=None,
    )
    delay_s = retry.after_lost(policy, lost, rng=random.Random(1))
    assert delay_s is not None and 9.0 <= delay_s <= 11.0
    spent = LostSend(uuid.uuid4(), uuid.uuid4(), 6, 0, None, None)
    assert retry.after_lost(policy, spent) is None


def test_republish_deadlines_grow_with_the_backlog_up_to_a_cap():
    assert retry.republish_after_s(30, 0, 600) == 30
    assert retry.republish_after_s(30, 3, 600) == 120
    assert retry.republish_after_s(30, 852, 600) == 600


def test_the_dead_letter_selection_names_the_dead_letter_states():
    from shared.dead_letter_selection import SELECTABLE_STATES
    from shared.deliveries import DEAD_LETTER_STATES

    assert set(SELECTABLE_STATES) == set(DEAD_LETTER_STATES)
