"""Pacing and bulkheads: whether a claimable delivery may be sent now, or must wait (not an attempt) and how long.

Pacing: one GCRA limiter per destination (providers/destinations.py) in Redis, shared by every worker process
on every machine, in ONE Lua script (`LIMITER_LUA`) so check-and-reserve is atomic. A delivery that may not go
now reserves its future slot (a *ticket* keyed by its id) and is moved to `waiting` until that slot: it comes
back (the sweeper publishes it when due, ordered by next_attempt_at) and uses its ticket without taking a
second slot, so a burst drains at the destination's rate in order instead of stampeding every second.
A vendor that answers 429/503 naming its wait pauses the destination (a key with PX) for every worker; slots
reserved afterwards start after the pause.

If Redis cannot be reached the limiter fails open to a per-process GCRA at `pacing_fail_open_ratio` of the
destination's rate (a few processes together stay near the vendor's limit); nothing is lost either way, a
waiting delivery is a row in PostgreSQL.

Bulkhead: at most `bulkhead_sends_per_destination` sends in flight per destination in one process, so a
hanging destination holds at most that many of the process's sends. A destination that answers fast earns more
places, up to `bulkhead_max_sends_per_destination`, and loses them as its answers slow down (`Pacer.observe`). Up to `bulkhead_parked_per_destination`
more of its deliveries are *parked* in the process, unclaimed (still `pending` in PostgreSQL, nothing written):
each place that frees goes to a parked one at once, so a burst to one healthy destination drains at its own
speed instead of a round trip through `waiting` and the sweeper per delivery. A delivery parked longer than
`bulkhead_wait_s` (a destination that hangs), and any beyond the parking places (unless queued in the backlog,
below), waits `bulkhead_wait_s` in `waiting` (rescheduled, no thread held, no attempt used). A parked delivery
lost with its process is a pending row marked as published: the sweeper republishes it after `requeue_after_s`.

Backlog: past the parking places of a destination draining a burst rather than hanging (it answered fast within
the last `bulkhead_fast_s`, or its sends in flight began less than that ago), up to
`bulkhead_backlog_per_destination` deliveries queue in the process, unclaimed like the parked but holding no room
among the process's in-flight sends: a freed place goes to the parked first, then to the oldest of the backlog
when the process has room. Before, they went to `waiting` and came back only on the sweeper's rounds, so a burst
of thousands into one healthy destination moved its bulkhead and parking places' worth per sweep (about 580/s
against a receiver answering in 50 ms) and a burst's overflow arrived a second or more late. One queued longer
than `pacing_hold_max_s` goes to `waiting` too; one lost with its process is republished by the sweeper like a
parked one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

from providers.destinations import Rate
from shared import metrics
from shared.config import Settings

log = logging.getLogger(__name__)

# Within this much of its slot a delivery is sent rather than rescheduled (the sweeper's own granularity).
SLOT_SLACK_MS = 50

# A parked delivery this close to its `bulkhead_wait_s` is taken by the expiry look that fires now.
PARK_EXPIRY_SLACK_S = 0.02

# KEYS: [1] the destination's theoretical arrival time (ms), [2] its pause, [3] this delivery's ticket, [4] the
# times of its last `burst` sends. ARGV: [1] "take" | "pause", [2] interval ms (1000 / rate), [3] burst,
# [4] ticket grace ms | pause ms, [5] slack ms. Returns the wait in ms (0: send now). Times are Redis's own
# clock (TIME), the same for every worker.
# GCRA hands out the slots; the list of recent sends then checks what really went: a delivery that came back
# late from its slot must not go right before the next one on time (vendors count a sliding window). That check
# has no slack: a few ms early per send would add up over a window and come back as a 429.
LIMITER_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
if ARGV[1] == 'pause' then
  local ms = tonumber(ARGV[4])
  if redis.call('PTTL', KEYS[2]) < ms then redis.call('SET', KEYS[2], '1', 'PX', ms) end
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now + ms then redis.call('SET', KEYS[1], now + ms, 'PX', ms + interval) end
  return ms
end
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  redis.call('DEL', KEYS[3])
  return paused
end
local slack = tonumber(ARGV[5])
local function spacing()
  if redis.call('LLEN', KEYS[4]) < burst then return 0 end
  local oldest = tonumber(redis.call('LINDEX', KEYS[4], burst - 1))
  return math.max(oldest + burst * interval - now, 0)
end
local function go()
  redis.call('LPUSH', KEYS[4], now)
  redis.call('LTRIM', KEYS[4], 0, burst - 1)
  redis.call('PEXPIRE', KEYS[4], math.ceil(burst * interval) + 1000)
  return 0
end
local ticket = redis.call('GET', KEYS[3])
if ticket then
  local at = tonumber(ticket)
  if at - now > slack then return at - now end
  local wait = spacing()
  if wait > 0 then return wait end
  redis.call('DEL', KEYS[3])
  return go()
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now + interval))
if allow_at - now <= slack then
  local wait = spacing()
  if wait <= 0 then return go() end
  allow_at = now + wait
end
redis.call('SET', KEYS[3], allow_at, 'PX', math.ceil(allow_at - now + tonumber(ARGV[4])))
return allow_at - now
"""


@dataclass(frozen=True)
class Ask:
    """One claimable delivery asking to be sent: its destination and that destination's rate (None: unpaced)."""

    delivery_id: uuid.UUID
    provider: str
    destination: str
    rate: Rate | None


def _keys(destination: str, delivery_id: uuid.UUID | None) -> list[str]:
    base = f"herald:pace:{{{destination}}}"  # one hash slot per destination (Redis Cluster)
    return [f"{base}:tat", f"{base}:pause", f"{base}:ticket:{delivery_id or ''}", f"{base}:sent"]


class _LocalGcra:
    """The per-process fallback while Redis is unavailable: the same algorithm, no tickets, no sharing."""

    def __init__(self) -> None:
        self._tat_ms: dict[str, float] = {}
        self._pause_until_ms: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, destination: str, rate: Rate, ratio: float) -> float:
        now = time.monotonic() * 1000
        interval = 1000 / (rate.per_s * ratio)
        with self._lock:
            paused = self._pause_until_ms.get(destination, 0.0) - now
            if paused > 0:
                return paused
            tat = max(self._tat_ms.get(destination, 0.0), now)
            allow_at = tat - (rate.burst - 1) * interval
            if allow_at - now > SLOT_SLACK_MS:
                return allow_at - now  # no ticket here: the delivery asks again when it is back
            self._tat_ms[destination] = tat + interval
            return 0.0

    def pause(self, destination: str, ms: float) -> None:
        with self._lock:
            until = time.monotonic() * 1000 + ms
            self._pause_until_ms[destination] = max(self._pause_until_ms.get(destination, 0.0), until)


class Pacer:
    """One per worker process: the shared limiter (Redis), its fallback, and the process's bulkheads."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        #: seconds, monotonic: when places were taken, answers came and deliveries were parked or queued
        self._clock = clock
        self._redis = redis.Redis.from_url(
            settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        self._script = self._redis.register_script(LIMITER_LUA)
        self._local = _LocalGcra()
        self._inflight: Counter[str] = Counter()
        #: destination -> {delivery id: (monotonic time parked, its ask)}, oldest first
        self._parked: dict[str, OrderedDict[uuid.UUID, tuple[float, Ask]]] = {}
        #: destination -> its cap, where it earned more than the base (see `observe`)
        self._caps: dict[str, float] = {}
        #: destination -> monotonic time of its last fast answer, kept while it has earned places
        self._fast_at: dict[str, float] = {}
        #: destination -> monotonic time its first send now in flight took its place (kept while it has one)
        self._busy_since: dict[str, float] = {}
        #: destination -> {delivery id: (monotonic time queued, its ask)}, oldest first: past the parking places
        self._backlog: dict[str, OrderedDict[uuid.UUID, tuple[float, Ask]]] = {}
        #: unparked delivery id -> the place kept for it (counted in `_inflight`) until its claim enters
        self._reserved: dict[uuid.UUID, str] = {}
        self._lock = threading.Lock()

    # --- pacing ------------------------------------------------------------------------------------------------

    def waits(self, asks: Iterable[Ask]) -> dict[uuid.UUID, tuple[float, str]]:
        """{delivery id: (seconds to wait, reason)} for the asks that may not be sent now; one Redis round trip."""
        paced = [a for a in asks if a.rate is not None]
        if not paced or not self.settings.pacing_enabled:
            return {}
        grace_ms = int(self.settings.pacing_slot_grace_s * 1000)
        try:
            pipe = self._redis.pipeline(transaction=False)
            for a in paced:
                assert a.rate is not None
                self._script(
                    keys=_keys(a.destination, a.delivery_id),
                    args=["take", 1000 / a.rate.per_s, a.rate.burst, grace_ms, SLOT_SLACK_MS],
                    client=pipe,
                )
            waits_ms = [float(w) for w in pipe.execute()]
        except redis.RedisError:
            log.warning("pacing: Redis unavailable, pacing per process at a reduced rate", exc_info=True)
            metrics.PACING_FAIL_OPEN.inc(len(paced))
            ratio = self.settings.pacing_fail_open_ratio
            waits_ms = [self._local.take(a.destination, a.rate, ratio) for a in paced if a.rate is not None]
        out: dict[uuid.UUID, tuple[float, str]] = {}
        for a, wait_ms in zip(paced, waits_ms, strict=True):
            if wait_ms > 0:
                out[a.delivery_id] = (wait_ms / 1000, "rate")
        return out

    def pause(self, destination: str, provider: str, seconds: float, rate: Rate | None) -> None:
        """The vendor named a wait: every worker holds this destination for `seconds`."""
        ms = max(int(seconds * 1000), 1)
        interval_ms = 1000 / rate.per_s if rate is not None else 1000.0
        metrics.DESTINATION_PAUSES.labels(provider).inc()
        try:
            self._script(keys=_keys(destination, None), args=["pause", interval_ms, 1, ms, 0])
        except redis.RedisError:
            log.warning(
                "pacing: Redis unavailable, pausing %s in this process only", destination, exc_info=True
            )
            self._local.pause(destination, ms)

    # --- bulkheads ---------------------------------------------------------------------------------------------

    def enter(self, asks: Iterable[Ask]) -> tuple[list[Ask], list[Ask]]:
        """Take a bulkhead place for each ask that fits; return (entered, over the cap)."""
        entered: list[Ask] = []
        over: list[Ask] = []
        now = self._clock()
        with self._lock:
            for a in asks:
                if self._reserved.pop(a.delivery_id, None) == a.destination:
                    entered.append(a)  # the place kept for it when it was unparked
                elif self._inflight[a.destination] >= self._cap(a.destination):
                    over.append(a)
                else:
                    self._take_place(a.destination, now)
                    entered.append(a)
        return entered, over

    def _take_place(self, destination: str, now: float) -> None:
        # Under self._lock.
        if not self._inflight[destination]:
            self._busy_since[destination] = now
        self._inflight[destination] += 1

    def leave(self, destinations: Iterable[str]) -> None:
        with self._lock:
            for d in destinations:
                self._inflight[d] -= 1
                if self._inflight[d] <= 0:
                    del self._inflight[d]
                    self._busy_since.pop(d, None)

    def _cap(self, destination: str) -> int:
        # Under self._lock.
        return int(self._caps.get(destination, self.settings.bulkhead_sends_per_destination))

    def observe(self, answered: Iterable[tuple[str, float]]) -> None:
        """Adapt each destination's cap to how it answers: (destination, seconds the send took) per ended send.

        An answer within `bulkhead_fast_s` earns the destination one more place (up to
        `bulkhead_max_sends_per_destination`), so a healthy destination's burst is not held to the base cap while
        each freed place waits for a claim; a slower one (or a timeout) halves its cap back toward the base
        `bulkhead_sends_per_destination`. A destination that hangs never earns a place, so it holds at most
        the base, and one that starts hanging loses what it earned as its sends time out."""
        s = self.settings
        base, top = (
            s.bulkhead_sends_per_destination,
            max(s.bulkhead_max_sends_per_destination, s.bulkhead_sends_per_destination),
        )
        now = self._clock()
        with self._lock:
            for d, took_s in answered:
                cap = self._caps.get(d, float(base))
                fast = took_s < s.bulkhead_fast_s
                cap = min(cap + 1, top) if fast else max(cap / 2, base)
                if cap <= base:
                    self._caps.pop(d, None)
                    self._fast_at.pop(d, None)
                else:
                    self._caps[d] = cap
                    if fast:
                        self._fast_at[d] = now

    def _draining(self, destination: str, now: float) -> bool:
        """Under self._lock: a full bulkhead of this destination is a burst it is draining, not a hang. It
        answered fast (earned places) within the last `bulkhead_fast_s`, or its sends in flight began less than
        that ago (a burst's first moments, before any answer). One that hangs stops being so `bulkhead_fast_s`
        after its last fast answer, or after its first hanging send began."""
        window_s = self.settings.bulkhead_fast_s
        fast_at = self._fast_at.get(destination)
        busy_since = self._busy_since.get(destination)
        return (fast_at is not None and now - fast_at <= window_s) or (
            busy_since is not None and now - busy_since <= window_s
        )

    # --- parking: over the bulkhead, held unclaimed in this process until a place frees ------------------------

    def parkable(self, over: Iterable[Ask]) -> tuple[list[Ask], list[Ask], list[Ask]]:
        """Split asks over the bulkhead into (may be parked, may queue in the backlog, must wait in PostgreSQL):
        by the free parking places, then by the backlog room of destinations draining a burst."""
        room = self.settings.bulkhead_parked_per_destination
        # No backlog when every wait is the sweeper's (its queued deliveries would expire at once).
        backlog_room = (
            self.settings.bulkhead_backlog_per_destination if self.settings.pacing_hold_max_s else 0
        )
        taken: Counter[str] = Counter()
        queued: Counter[str] = Counter()
        park: list[Ask] = []
        backlog: list[Ask] = []
        rest: list[Ask] = []
        now = self._clock()
        with self._lock:
            for a in over:
                d = a.destination
                if len(self._parked.get(d, ())) + taken[d] < room:
                    taken[d] += 1
                    park.append(a)
                elif len(self._backlog.get(d, ())) + queued[d] < backlog_room and self._draining(d, now):
                    queued[d] += 1
                    backlog.append(a)
                else:
                    rest.append(a)
        return park, backlog, rest

    def park(self, parked: Iterable[Ask]) -> None:
        """Hold these deliveries until a place of their destination frees (see `unpark`)."""
        now = self._clock()
        with self._lock:
            for a in parked:
                self._parked.setdefault(a.destination, OrderedDict())[a.delivery_id] = (now, a)

    def unpark(self, destinations: Iterable[str], take_room: Callable[[int], bool]) -> list[uuid.UUID]:
        """Take, oldest first, as many parked deliveries of these destinations as they have free places, then
        as many of their backlog as the places left and `take_room` (the process's in-flight room, which the
        parked hold already and the backlog does not) allow; keep each its place (so a newer arrival does not
        take it first): `enter` gives it to that delivery, and the caller gives back with `unreserve` what its
        claim did not use."""
        out: list[uuid.UUID] = []
        now = self._clock()
        with self._lock:
            for d in set(destinations):
                for lots, needs_room in ((self._parked, False), (self._backlog, True)):
                    lot = lots.get(d)
                    if lot is None:
                        continue
                    n = min(len(lot), self._cap(d) - self._inflight[d])
                    if n > 0 and (not needs_room or take_room(n)):
                        for _ in range(n):
                            delivery_id = lot.popitem(last=False)[0]
                            self._take_place(d, now)
                            self._reserved[delivery_id] = d
                            out.append(delivery_id)
                        if needs_room:
                            metrics.BULKHEAD_QUEUED.dec(n)
                    if not lot:
                        del lots[d]
                if self._inflight[d] <= 0:
                    del self._inflight[d]
        return out

    def queue(self, queued: Iterable[Ask]) -> None:
        """Queue these deliveries in their destinations' backlogs (see `unpark`)."""
        now = self._clock()
        n = 0
        with self._lock:
            for a in queued:
                lot = self._backlog.setdefault(a.destination, OrderedDict())
                # One queued again (republished and claimed meanwhile) keeps its place in line and its count.
                if a.delivery_id not in lot:
                    lot[a.delivery_id] = (now, a)
                    n += 1
        metrics.BULKHEAD_QUEUED.inc(n)

    def unreserve(self, delivery_ids: Iterable[uuid.UUID]) -> None:
        """Give back the places kept for unparked deliveries that did not enter (claimed elsewhere, gone)."""
        with self._lock:
            left = [d for i in delivery_ids if (d := self._reserved.pop(i, None)) is not None]
        self.leave(left)

    def expire(self, max_age_s: float, *, backlog: bool = False) -> list[Ask]:
        """Take the deliveries parked (or, with `backlog`, queued) longer than `max_age_s` (their destination is
        not freeing places).

        A little early rather than late: each park's timer is its one look (a loop timer may fire early)."""
        cutoff = self._clock() - max_age_s + PARK_EXPIRY_SLACK_S
        lots = self._backlog if backlog else self._parked
        out: list[Ask] = []
        with self._lock:
            for d in list(lots):
                lot = lots[d]
                while lot and next(iter(lot.values()))[0] <= cutoff:
                    out.append(lot.popitem(last=False)[1][1])
                if not lot:
                    del lots[d]
        if backlog:
            metrics.BULKHEAD_QUEUED.dec(len(out))
        return out

    def drain_backlog(self) -> list[uuid.UUID]:
        """Every queued delivery, taken out (a worker going away gives them back to the sweeper)."""
        with self._lock:
            ids = [delivery_id for lot in self._backlog.values() for delivery_id in lot]
            self._backlog.clear()
        metrics.BULKHEAD_QUEUED.dec(len(ids))
        return ids

    @property
    def backlog_count(self) -> int:
        with self._lock:
            return sum(len(lot) for lot in self._backlog.values())

    @property
    def parked_count(self) -> int:
        with self._lock:
            return sum(len(lot) for lot in self._parked.values())


_pacer_lock = threading.Lock()
_pacer: tuple[int, Pacer] | None = None


def get_pacer(settings: Settings) -> Pacer:
    """This process's pacer (never inherited across fork: its sockets and counts are the process's own)."""
    global _pacer
    with _pacer_lock:
        if _pacer is None or _pacer[0] != os.getpid():
            _pacer = (os.getpid(), Pacer(settings))
        return _pacer[1]
