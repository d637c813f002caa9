"""The only place that decides when a failed delivery is tried again.

Default: the first attempt, then up to 5 retries after 5, 10, 20, 40 and 80 s (base 5 s, factor 2), each
with at most +-10 % jitter so a burst of failures does not come back as a burst. A `Retry-After` hint from the
vendor (429/503) is honoured: wait max(schedule, hint), the hint capped. `time_scale` shrinks the schedule
(not vendor hints, which are the vendor's to set) so tests run the real schedule fast.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.config import Settings


@dataclass(frozen=True)
class RetryPolicy:
    base_delay_s: float = 5.0
    factor: float = 2.0
    max_retries: int = 5
    jitter_ratio: float = 0.1
    retry_after_cap_s: float = 3600.0
    time_scale: float = 1.0

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
