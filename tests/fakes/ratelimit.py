"""A vendor's rate limit for the fakes: at most `limit` requests per `window_s` per key (a sliding window).

Off unless a test turns it on (SlackFake/DiscordFake(rate=...)), so every other test sees the fakes as before.
The fake counts what it accepted and what it refused, and says how long until the window has room again, which
it sends back the way its vendor does (Slack: `Retry-After`; Discord: the body's `retry_after`).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    limit: int
    window_s: float


class Window:
    def __init__(self, rate: RateLimit) -> None:
        self.rate = rate
        self.accepted = 0
        self.refused = 0
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, key: str) -> float | None:
        """None: accepted (and counted); else the seconds until the window has room."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen[key]
            while seen and seen[0] <= now - self.rate.window_s:
                seen.popleft()
            if len(seen) >= self.rate.limit:
                self.refused += 1
                return max(seen[0] + self.rate.window_s - now, 0.001)
            seen.append(now)
            self.accepted += 1
            return None
