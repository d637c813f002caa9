"""A small bounded pool of reusable connections per destination key, for transports without one (SMTP).

Bounds: at most `per_key` connections open to one destination (a relay throttles clients that open many) and
`total` across all destinations of a worker process; a connection idle longer than `idle_s` is closed. A send
that finds every connection of its destination busy waits for one, but only until its attempt's deadline:
the wait counts against the deadline (`PoolTimeout`), it is not a failure of the destination.

Single event loop only (the worker process's send loop): the bookkeeping is synchronous between awaits, so
`release` can run from a cancelled send's `finally` without awaiting anything.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")


class PoolTimeout(Exception):
    """No connection to this destination became free before the deadline."""


@dataclass
class Lease(Generic[C]):
    """A connection handed out: `conn` is None when the caller must open one (its slot is reserved)."""

    key: str
    conn: C | None
    #: how long the connection sat idle before this lease (0 for a new one): a long idle deserves a probe
    idle_s: float = 0.0


class ConnectionPool(Generic[C]):
    def __init__(self, *, per_key: int, total: int, idle_s: float, close: Callable[[C], None]) -> None:
        self.per_key = max(1, per_key)
        self.total = max(1, total)
        self.idle_s = idle_s
        self._close = close
        self._idle: dict[str, list[tuple[C, float]]] = defaultdict(list)  # LIFO: the warmest first
        self._busy: dict[str, int] = defaultdict(int)
        self._open = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def open_connections(self) -> int:
        return self._open

    async def acquire(self, key: str, deadline: float) -> Lease[C]:
        """An idle connection for `key`, else a reserved slot to open one, waiting at most until `deadline`."""
        while True:
            now = time.monotonic()
            self._evict_idle(now)
            idle = self._idle.get(key)
            if idle:
                conn, since = idle.pop()
                self._busy[key] += 1
                return Lease(key, conn, now - since)
            if self._busy[key] + len(self._idle.get(key, ())) < self.per_key:
                if self._open < self.total:
                    self._open += 1
                    self._busy[key] += 1
                    return Lease(key, None)
                if self._close_least_recent_idle():
                    continue
            left_s = deadline - now
            if left_s <= 0:
                raise PoolTimeout(key)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left_s)
            except TimeoutError:
                raise PoolTimeout(key) from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self, lease: Lease[C], conn: C | None, *, reusable: bool) -> None:
        """Give the lease back: `conn` kept for reuse if `reusable`, else closed. Never awaits."""
        self._busy[lease.key] -= 1
        if conn is not None and reusable:
            self._idle[lease.key].append((conn, time.monotonic()))
        else:
            if conn is not None:
                self._close(conn)
            self._open -= 1
        self._wake()

    def close_all(self) -> None:
        """Close every idle connection (busy ones are closed by their sends as they finish)."""
        for key in list(self._idle):
            for conn, _ in self._idle.pop(key):
                self._close(conn)
                self._open -= 1
        self._wake()

    def _evict_idle(self, now: float) -> None:
        for key, idle in list(self._idle.items()):
            keep = [(c, since) for c, since in idle if now - since <= self.idle_s]
            for conn, since in idle:
                if now - since > self.idle_s:
                    self._close(conn)
                    self._open -= 1
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def _close_least_recent_idle(self) -> bool:
        oldest: tuple[str, int, float] | None = None
        for key, idle in self._idle.items():
            for index, (_, since) in enumerate(idle):
                if oldest is None or since < oldest[2]:
                    oldest = (key, index, since)
        if oldest is None:
            return False
        key, index, _ = oldest
        conn, _ = self._idle[key].pop(index)
        if not self._idle[key]:
            del self._idle[key]
        self._close(conn)
        self._open -= 1
        return True

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


__all__ = ["ConnectionPool", "Lease", "PoolTimeout"]
