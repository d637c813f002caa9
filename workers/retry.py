"""The only place that decides when a failed delivery is tried again.

Default: the first attempt, then up to 5 retries after 5, 10, 20, 40 and 80 s (base 5 s, factor 2), each
with at most +-10 % jitter so a burst of failures does not come back as a burst. A `Retry-After` hint from the
vendor (429/503) is honoured: wait max(schedule, hint), the hint capped. `time_scale` shrinks the schedule
(not vendor hints, which are the vendor's to set) so tests run the real schedule fast.

A rate-limited attempt that names its wait (429 with Retry-After, or 503 with Retry-After) is the vendor pacing
us, not a failure: it does not use the budget, and is bounded by elapsed time instead
(`rate_limited_max_elapsed_s`), so a vendor that paces forever still ends dead (`rate_limited_too_long`).
A send whose worker vanished (lease expired) counts as a failed attempt and waits its scheduled delay.
The sweeper's republish deadlines are decided here too (they grow with the broker's backlog).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.config import Settings
from shared.deliveries import Claimed, LostSend
from shared.errors import ATTEMPTS_EXHAUSTED, DeliveryError, RateLimited

RATE_LIMITED_TOO_LONG = "rate_limited_too_long"


@dataclass(frozen=True)
class RetryPolicy:
    base_delay_s: float = 5.0
    factor: float = 2.0
    max_retries: int = 5
    jitter_ratio: float = 0.1
    retry_after_cap_s: float = 3600.0
    time_scale: float = 1.0
    rate_limited_max_elapsed_s: float = 3600.0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        max_retries: int | None = None,
        base_delay_s: float | None = None,
    ) -> RetryPolicy:
        return cls(
            base_delay_s=settings.retry_base_delay_s if base_delay_s is None else base_delay_s,
            factor=settings.retry_factor,
            max_retries=settings.retry_max_retries if max_retries is None else max_retries,
            jitter_ratio=settings.retry_jitter_ratio,
            retry_after_cap_s=settings.retry_after_cap_s,
            time_scale=settings.retry_time_scale,
            rate_limited_max_elapsed_s=settings.rate_limited_max_elapsed_s,
        )

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def scheduled_delay_s(self, attempts_made: int) -> float:
        """The un-jittered, un-scaled wait after attempt number `attempts_made` (1-based) failed."""
        return self.base_delay_s * self.factor ** (attempts_made - 1)

    def next_delay_s(
        self,
        attempts_made: int,
        *,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when the retry budget is spent."""
        if attempts_made >= self.max_attempts:
            return None
        scheduled = self.scheduled_delay_s(attempts_made)
        jitter = (rng or random).uniform(-self.jitter_ratio, self.jitter_ratio)
        delay_s = scheduled * (1 + jitter) * self.time_scale
        if retry_after_s is not None:
            delay_s = max(delay_s, min(retry_after_s, self.retry_after_cap_s))
        return delay_s


@dataclass(frozen=True)
class RetryDecision:
    """What to do after a retryable error: retry after `delay_s`, or (delay_s None) dead with `dead_reason`."""

    delay_s: float | None
    dead_reason: str | None = None
    #: the attempt was the vendor pacing us and does not count against the budget
    paced: bool = False
    #: why it ended dead, in words (stored as the delivery's detail)
    detail: str | None = None


def is_pacing(err: DeliveryError) -> bool:
    """A 429, or a 503, that names its wait: the vendor setting our pace, not the delivery failing."""
    return isinstance(err, RateLimited) and err.retry_after_s is not None


def after_error(
    policy: RetryPolicy,
    claimed: Claimed,
    err: DeliveryError,
    *,
    elapsed_s: float,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Decide the fate of a claimed attempt that failed with a retryable error.

    `elapsed_s` is the time since this budget's first attempt (PostgreSQL's clock at the claim, plus the
    attempt's own duration)."""
    hint = getattr(err, "retry_after_s", None)
    failures = claimed.failures_before
    if is_pacing(err):
        delay_s = policy.next_delay_s(failures + 1, retry_after_s=hint, rng=rng)
        if delay_s is None:  # the schedule has no step this far out: the hint alone sets the wait
            delay_s = min(float(hint or 0.0), policy.retry_after_cap_s)
        if elapsed_s + delay_s > policy.rate_limited_max_elapsed_s:
            return RetryDecision(
                None,
                RATE_LIMITED_TOO_LONG,
                paced=True,
                detail=(
                    f"rate limited for {elapsed_s:.0f} s, the next wait ({delay_s:.0f} s) would pass the "
                    f"{policy.rate_limited_max_elapsed_s:.0f} s limit: {err.detail}"
                ),
            )
        return RetryDecision(delay_s, paced=True)
    delay_s = policy.next_delay_s(failures + 1, retry_after_s=hint, rng=rng)
    if delay_s is None:
        return RetryDecision(
            None,
            ATTEMPTS_EXHAUSTED,
            detail=f"{failures + 1} failed attempt(s), the retry budget is spent: {err.detail}",
        )
    return RetryDecision(delay_s)


def after_lost(policy: RetryPolicy, lost: LostSend, rng: random.Random | None = None) -> float | None:
    """Seconds until a lost send (its worker vanished) is tried again, or None when that spent the budget."""
    return policy.next_delay_s(lost.attempt_no - lost.paced_count, rng=rng)


def republish_after_s(base_s: float, backlog_messages: int, cap_s: float) -> float:
    """How long published work may sit unclaimed before the sweeper publishes it again.

    With the broker's queue empty, `base_s`; each message already waiting adds a base's worth (the work is
    most likely among them), up to `cap_s`: an overloaded system must not multiply its own load."""
    return min(max(cap_s, base_s), base_s * (1 + max(backlog_messages, 0)))
