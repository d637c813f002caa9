"""Claim -> send -> decide -> apply, with the sends handed to the process's event loop (the claim itself, within
a transaction, is workers/claiming.py).

Why hand off: a Celery thread that waited for its batch sat in a hanging destination's timeout, and with every
thread doing that, fan-out stopped for everyone. Here a task loads and claims its rows, hands the claimed sends
to the loop and returns at once. On the loop each send is recorded as soon as it ends, together with the others
that ended at the same moment or while the previous write was under way, in this batch or any other (group
commit, workers/recording.py: one batched write, in a thread, never on the loop), so a fast destination is
never held back by a slow one in the same batch. PostgreSQL's lease (from the longest allowed attempt) covers
a crash: the sweeper moves a send whose worker vanished on.

Backpressure: a process holds at most `inflight_sends_per_process` sends. A `deliver` task waits for room before
it claims (its message stays in Redis meanwhile, for other workers); fan-out never waits: without room it
publishes its new deliveries as `deliver` batches instead of sending them itself.

Warm shutdown (SIGTERM): the process waits for its in-flight sends, bounded by their deadlines, before Celery
tears the runtime down (`worker_shutting_down` is the first signal Celery sends, before `worker_shutdown`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from celery.signals import worker_shutting_down

from shared import deliveries, metrics
from shared.db.rows import event_facts
from shared.errors import RateLimited
from workers.claiming import (
    DELIVER_CANDIDATES_SQL,
    DELIVER_EVENTS_SQL,
    INTEGRATIONS_SQL,
    Claim,
    claim_jobs,
    count_unsent,
)
from workers.inflight import Inflight
from workers.outcomes import record
from workers.pacing import Ask, get_pacer
from workers.publish import publish_deliver_batches
from workers.recording import Recorder
from workers.runtime import ProcessRuntime
from workers.sending import SEND_GUARD_S, Job, SendResult, send_one
from workers.wakeups import Wakeups

log = logging.getLogger(__name__)

# Threads that write outcomes, and that claim unparked deliveries (each holds one database connection while
# it works; workers/runtime.py THREADS_BESIDE_POOL counts them).
RECORD_THREADS = 4
CLAIM_THREADS = 2


@dataclass
class _Process:
    """This process's gate, writer threads, claimer threads and outcome recorder (never inherited across fork)."""

    pid: int
    runtime: ProcessRuntime
    inflight: Inflight
    #: outcome writes (workers/recording.py) and holding parked deliveries back
    writer: ThreadPoolExecutor
    #: claims of unparked deliveries: a freed place is refilled without queueing behind outcome writes
    claimer: ThreadPoolExecutor
    recorder: Recorder
    #: deliveries held for their rate slot on the loop's timer
    wakeups: Wakeups
    #: unparked (and unqueued) deliveries waiting for the claimer, and whether a claimer is on them: one claim
    #: takes all that gathered while the one before ran (a claim per freed place cost a transaction per send)
    unparked: list[uuid.UUID] = field(default_factory=list)
    unparked_claiming: bool = False
    unparked_lock: threading.Lock = field(default_factory=threading.Lock)


_state_lock = threading.Lock()
_state: _Process | None = None


def _process_state(runtime: ProcessRuntime) -> tuple[Inflight, ThreadPoolExecutor]:
    """This process's gate and writer threads (never inherited across fork)."""
    state = _full_state(runtime)
    return state.inflight, state.writer


def _full_state(runtime: ProcessRuntime) -> _Process:
    global _state
    with _state_lock:
        if _state is None or _state.pid != os.getpid():
            writer = ThreadPoolExecutor(RECORD_THREADS, thread_name_prefix="herald-record")
            _state = _Process(
                os.getpid(),
                runtime,
                Inflight(runtime.settings.inflight_sends_per_process),
                writer,
                ThreadPoolExecutor(CLAIM_THREADS, thread_name_prefix="herald-unpark"),
                Recorder(writer, functools.partial(_pause_and_record, runtime)),
                Wakeups(runtime.loop, functools.partial(_wake_held, runtime)),
            )
        return _state


def deliver(runtime: ProcessRuntime, delivery_ids: list[uuid.UUID]) -> int:
    """The `deliver` task: load, claim and hand off a batch of deliveries; return how many were claimed."""
    inflight, _ = _process_state(runtime)
    inflight.acquire(len(delivery_ids), block=True)
    return _claim_and_start(runtime, inflight, delivery_ids)


def _claim_and_start(runtime: ProcessRuntime, inflight: Inflight, delivery_ids: list[uuid.UUID]) -> int:
    """Load, claim and hand off deliveries whose room in `inflight` is held; return how many were claimed."""
    done = Claim()
    try:
        with runtime.sessions() as session:
            rows = session.execute(DELIVER_CANDIDATES_SQL, {"ids": delivery_ids}).all()
            if not rows:
                return 0
            events = {
                row.id: event_facts(row)
                for row in session.execute(DELIVER_EVENTS_SQL, {"ids": list({r.event_id for r in rows})})
            }
            integrations = {
                i.id: i
                for i in session.scalars(INTEGRATIONS_SQL, {"ids": list({r.integration_id for r in rows})})
            }
            # In the order the events were accepted: the limiter hands out slots in the order it is asked.
            rows = sorted(rows, key=lambda r: (events[r.event_id].created_at, r.id))
            claim = claim_jobs(
                session,
                runtime,
                [(r.id, r.integration_id) for r in rows],
                events,
                integrations,
                {r.id: r.lifecycle_key for r in rows},
            )
            session.commit()
            done = claim
    finally:
        inflight.release(len(delivery_ids) - len(done.jobs) - len(done.parked))
    count_unsent(done.skipped_providers, done.superseded_providers)
    park(runtime, done.parked)
    queue(runtime, done.queued)
    hold(runtime, done.held)
    _start(runtime, inflight, done.jobs)
    return len(done.jobs)


def try_reserve(runtime: ProcessRuntime, n: int) -> bool:
    """Room for n sends of fan-out's own, without waiting (fan-out never waits)."""
    inflight, _ = _process_state(runtime)
    return inflight.acquire(n, block=False)


def release_reserved(runtime: ProcessRuntime, n: int) -> None:
    if n:
        _process_state(runtime)[0].release(n)


def hand_off(runtime: ProcessRuntime, jobs: list[Job]) -> None:
    """Send jobs whose room was reserved (try_reserve) on the loop."""
    _start(runtime, _process_state(runtime)[0], jobs)


# --- parked: over the bulkhead, unclaimed, each holding its room in `Inflight` until a place frees -------------


def park(runtime: ProcessRuntime, parked: list[Ask]) -> None:
    """Hold deliveries over their destination's bulkhead (their room is held) after the claim's commit: each
    place that frees goes to one of them; those still parked after `bulkhead_wait_s` go to `waiting`."""
    if not parked:
        return
    inflight, _ = _process_state(runtime)
    wait_s = runtime.settings.bulkhead_wait_s
    inflight.extend(time.monotonic() + wait_s + SEND_GUARD_S)
    get_pacer(runtime.settings).park(parked)
    runtime.loop.call_soon_threadsafe(runtime.loop.call_later, wait_s, _expire_parked, runtime)
    unpark(runtime, {a.destination for a in parked})  # a place may have freed since the claim


def unpark(runtime: ProcessRuntime, destinations: Iterable[str]) -> None:
    """Claim and send parked deliveries, then queued ones, for the free places of these destinations (in a
    claimer thread). A queued delivery takes its room among the process's sends here (a parked one holds it)."""
    state = _full_state(runtime)
    ids = get_pacer(runtime.settings).unpark(destinations, lambda n: state.inflight.acquire(n, block=False))
    if not ids:
        return
    with state.unparked_lock:
        state.unparked.extend(ids)
        if state.unparked_claiming:
            return  # the claimer on them takes these with its next claim
        state.unparked_claiming = True
    try:
        state.claimer.submit(_claim_all_unparked, runtime, state)
    except BaseException:  # the pool is shutting down: the next unpark tries again
        with state.unparked_lock:
            state.unparked_claiming = False
        raise


def _claim_all_unparked(runtime: ProcessRuntime, state: _Process) -> None:
    """Claim what has gathered, then what gathered meanwhile, until nothing is left (group claim)."""
    try:
        while True:
            with state.unparked_lock:
                ids, state.unparked = state.unparked, []
                if not ids:
                    state.unparked_claiming = False
                    return
            _claim_unparked(runtime, state.inflight, ids)
    except BaseException:
        with state.unparked_lock:
            state.unparked_claiming = False  # the next unpark starts a claimer for what is left
        raise


def _claim_unparked(runtime: ProcessRuntime, inflight: Inflight, ids: list[uuid.UUID]) -> None:
    try:
        _claim_and_start(runtime, inflight, ids)
    except Exception:
        # Their rows stay pending (marked as published): the sweeper republishes them after requeue_after_s.
        log.exception("could not claim %d parked or queued deliveries", len(ids))
    finally:
        get_pacer(runtime.settings).unreserve(ids)  # the places kept for those that did not enter


def _expire_parked(runtime: ProcessRuntime) -> None:
    """On the loop: deliveries parked too long (their destination frees no place) go to `waiting`."""
    expired = get_pacer(runtime.settings).expire(runtime.settings.bulkhead_wait_s)
    if expired:
        _process_state(runtime)[1].submit(_hold_parked, runtime, expired)


def _hold_parked(runtime: ProcessRuntime, expired: list[Ask]) -> None:
    inflight, _ = _process_state(runtime)
    try:
        _wait_expired(runtime, expired, "parked")
    finally:
        inflight.release(len(expired))


def _wait_expired(runtime: ProcessRuntime, expired: list[Ask], what: str) -> None:
    """Parked or queued deliveries whose destination freed no place in time go to `waiting` (the sweeper's)."""
    try:
        with runtime.sessions() as session:
            held = deliveries.wait(
                session, {a.delivery_id: runtime.settings.bulkhead_wait_s for a in expired}
            )
            session.commit()
        held_ids = set(held)
        for a in expired:
            if a.delivery_id in held_ids:
                metrics.PACED_WAITS.labels(a.provider, "bulkhead").inc()
    except Exception:
        log.exception("could not hold %d %s deliveries; the sweeper will republish them", len(expired), what)


# --- queued: past the parking places of a destination draining a burst, unclaimed, holding no room --------------


def queue(runtime: ProcessRuntime, queued: list[Ask]) -> None:
    """Queue deliveries in their destinations' backlogs after the claim's commit: each freed place goes to the
    oldest (after the parked); those still queued after `pacing_hold_max_s` go to `waiting`."""
    if not queued:
        return
    get_pacer(runtime.settings).queue(queued)
    wait_s = runtime.settings.pacing_hold_max_s
    runtime.loop.call_soon_threadsafe(runtime.loop.call_later, wait_s, _expire_queued, runtime)
    unpark(runtime, {a.destination for a in queued})  # a place may have freed since the claim


def _expire_queued(runtime: ProcessRuntime) -> None:
    """On the loop: deliveries queued too long (their destination stopped freeing places) go to `waiting`."""
    expired = get_pacer(runtime.settings).expire(runtime.settings.pacing_hold_max_s, backlog=True)
    if expired:
        _process_state(runtime)[1].submit(_wait_expired, runtime, expired, "queued")


# --- held: a rate slot a few seconds away, the row due then, woken by the loop's timer ---------------------------


def hold(runtime: ProcessRuntime, held: Mapping[uuid.UUID, float]) -> None:
    """After the commit that made them due at their slots: claim each of these deliveries at its slot."""
    if held:
        _full_state(runtime).wakeups.hold(held)


def _wake_held(runtime: ProcessRuntime, ids: list[uuid.UUID]) -> None:
    """On the loop: their slots have come; claim them in a claimer thread (never on the loop)."""
    state = _full_state(runtime)
    state.claimer.submit(_claim_held, runtime, state.inflight, ids)


def _claim_held(runtime: ProcessRuntime, inflight: Inflight, ids: list[uuid.UUID]) -> None:
    batch = runtime.settings.deliver_batch_size
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        try:
            if inflight.acquire(len(chunk), block=False):
                _claim_and_start(runtime, inflight, chunk)
            else:  # this process is full: whichever worker has room takes them from Redis
                publish_deliver_batches(chunk)
        except Exception:
            # Their rows stay due and marked as published: the sweeper republishes them after requeue_after_s.
            log.exception("could not claim %d deliveries held for their slot", len(chunk))


def _give_back_held(state: _Process) -> None:
    """A worker going away hands its held and queued deliveries to the sweeper at once (not requeue_after_s
    later)."""
    ids = state.wakeups.drain() + get_pacer(state.runtime.settings).drain_backlog()
    if not ids:
        return
    try:
        with state.runtime.sessions() as session:
            deliveries.unhold(session, ids)
            session.commit()
    except Exception:
        log.exception("could not give back %d held deliveries; the sweeper republishes them later", len(ids))


# --- on the loop: send, then record each result as soon as it is in -------------------------------------------


def _start(runtime: ProcessRuntime, inflight: Inflight, jobs: list[Job]) -> None:
    if not jobs:
        return
    inflight.extend(time.monotonic() + max(j.attempt_s for j in jobs) + SEND_GUARD_S + 5.0)
    metrics.WORKER_INFLIGHT.inc(len(jobs))
    future = asyncio.run_coroutine_threadsafe(_send_and_record(runtime, inflight, jobs), runtime.loop)
    future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a batch of sends failed outside its sends", exc_info=future.exception())


async def _send_and_record(runtime: ProcessRuntime, inflight: Inflight, jobs: list[Job]) -> None:
    recorder = _full_state(runtime).recorder
    loop = asyncio.get_running_loop()
    # Each send reports itself as it ends: the waves are gathered in O(sends), where asyncio.wait over the
    # rest at every wave cost O(sends^2) callback updates (a thousand-integration fan-out is one batch here).
    ended: list[asyncio.Task[SendResult]] = []
    woken = asyncio.Event()

    def _ended(task: asyncio.Task[SendResult]) -> None:
        ended.append(task)
        woken.set()

    job_of: dict[asyncio.Task[SendResult], Job] = {}
    for job in jobs:
        task = loop.create_task(send_one(job))
        task.add_done_callback(_ended)
        job_of[task] = job
    unrecorded = len(job_of)
    try:
        while unrecorded:
            await woken.wait()
            woken.clear()
            done, ended[:] = list(ended), []
            results = [t.result() for t in done]
            unrecorded -= len(done)
            for t in done:
                del job_of[t]
            freed = [d for r in results if (d := r.job.destination) is not None]
            pacer = get_pacer(runtime.settings)
            pacer.observe((d, r.duration_ms / 1000) for r in results if (d := r.job.destination) is not None)
            pacer.leave(freed)
            unpark(runtime, freed)
            try:
                # With the waves of every other batch that ended meanwhile (workers/recording.py).
                await asyncio.wrap_future(recorder.record(results))
            except Exception:
                # The rows stay `sending`; their lease runs out and the sweeper moves them on.
                log.exception("could not record %d outcome(s); the sweeper will recover them", len(results))
            finally:
                inflight.release(len(done))
                metrics.WORKER_INFLIGHT.dec(len(done))
    finally:
        if unrecorded:  # cancelled (the loop is going away): the lease covers these
            inflight.release(unrecorded)
            metrics.WORKER_INFLIGHT.dec(unrecorded)
            get_pacer(runtime.settings).leave(
                d for job in job_of.values() if (d := job.destination) is not None
            )


def _pause_and_record(runtime: ProcessRuntime, results: list[SendResult]) -> None:
    """A vendor that named its wait pauses that destination for every worker, then the outcomes are written."""
    pacer = get_pacer(runtime.settings)
    for r in results:
        err = r.error
        if isinstance(err, RateLimited) and err.retry_after_s is not None and r.job.destination is not None:
            try:
                pacer.pause(r.job.destination, r.job.provider, err.retry_after_s, None)
            except Exception:
                log.exception("pacing: could not pause %s", r.job.destination)
    record(runtime, results)


@worker_shutting_down.connect
def _finish_in_flight(how: str = "Warm", **_: Any) -> None:
    # A warm shutdown finishes what was claimed (bounded by the sends' own deadlines); a cold one does not.
    with _state_lock:
        state = _state
    if state is None or state.pid != os.getpid():
        return
    _give_back_held(state)
    if how != "Warm":
        return
    state.inflight.wait_idle()
