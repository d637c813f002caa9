"""The retry schedule: 5, 10, 20, 40, 80 s with bounded jitter, Retry-After honoured and capped."""

from __future__ import annotations

import random

import pytest

from shared.config import Settings
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
