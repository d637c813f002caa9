"""The sweeper (Celery beat, every `sweep_interval_s`): PostgreSQL is the truth, Redis only the transport.

Each run, in this order:
1. lost sends: deliveries still `sending` past their lease (the worker died mid-send) go back to `retrying`
   after the delay workers/retry.py gives a failed attempt, with a `lost` attempt row, or to `dead` when that
   spent their budget;
2. the outbox: events not fanned out by `next_fanout_at` get `fanout` published again, one message per batch;
3. circuits (workers/circuits.py): due probes are sent, circuits open past the auto-disable limit disable their
   integration; projects whose dead letters grow past the threshold are told (herald.deadletters.growing);
4. waiting deliveries (paced, over a bulkhead, or held by a circuit) whose time has come go back to `pending`;
5. due work: `pending`/`retrying` deliveries whose `next_attempt_at` has come and that are not already on Redis
   (or were published long ago and never claimed) are published in `deliver` batches.
"Long ago" grows with the broker's backlog (workers/retry.py: republish_after_s): while the queue holds
messages the work is most likely among them, and republishing it would only multiply an overloaded system's
load. With the queue empty (a flushed or restarted Redis) the base deadlines apply.

Every selection uses FOR UPDATE SKIP LOCKED and stamps the rows it takes, so two sweepers never double-publish
and a busy one does not block the other. The transitions themselves are shared/deliveries.py's.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, cast

from celery import current_app, shared_task
from sqlalchemy.orm import Session

from shared import deliveries
from shared.errors import ATTEMPTS_EXHAUSTED
from shared.tasknames import TASK_SWEEP
from workers import circuits, opsevents, retry
from workers.publish import publish_deliver_batches, publish_fanout
from workers.runtime import ProcessRuntime, get_runtime

log = logging.getLogger(__name__)

# A sweep takes at most this many rounds of `sweep_batch_size` rows per step, so one run stays short and the
# next run carries on.
MAX_ROUNDS = 20

# kombu's Redis transport splits a queue into priority sub-lists named queue + "\x06\x16" + step.
_PRIORITY_SUFFIXES = ("", *(f"\x06\x16{step}" for step in (3, 6, 9)))


def _rounds(runtime: ProcessRuntime, step: Callable[[Session, int], list[uuid.UUID]]) -> list[uuid.UUID]:
    taken: list[uuid.UUID] = []
    limit = runtime.settings.sweep_batch_size
    for _ in range(MAX_ROUNDS):
        with runtime.sessions() as session:
            ids = step(session, limit)
            session.commit()
        taken.extend(ids)
        if len(ids) < limit:
            break
    return taken


def recover_lost(runtime: ProcessRuntime) -> list[uuid.UUID]:
    def step(session: Session, limit: int) -> list[uuid.UUID]:
        lost = deliveries.lost_sends(session, limit)
        decided = [
            (
                send,
                retry.after_lost(
                    retry.RetryPolicy.from_settings(
                        runtime.settings,
                        max_retries=send.retry_max_retries,
                        base_delay_s=send.retry_base_delay_s,
                    ),
                    send,
                ),
            )
            for send in lost
        ]
        deliveries.apply_lost(session, decided, exhausted_reason=ATTEMPTS_EXHAUSTED)
        # Rounds continue while a whole batch was locked, moved or not (a guard miss is someone else's win).
        return [send.id for send in lost]

    return _rounds(runtime, step)


def queue_backlog(runtime: ProcessRuntime) -> int:
    """Messages waiting in the delivery queue (0 when the broker cannot be read: assume it lost them)."""
    queue = runtime.settings.queue_name
    try:
        # A pooled connection: a fresh one per sweep (connection_for_read) cost a new channel and client each
        # second, about 4 % of the worker's GIL time under load.
        with cast(Any, current_app.pool).acquire(block=True, timeout=5) as conn:
            client = conn.default_channel.client  # the Redis transport's redis-py client
            pipe = client.pipeline()
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
            return int(sum(pipe.execute()))
    except Exception:
        log.warning(
            "sweep: could not read the queue length; republishing on the base deadlines", exc_info=True
        )
        return 0


def sweep_once(runtime: ProcessRuntime) -> dict[str, int]:
    s = runtime.settings
    lost = recover_lost(runtime)
    if lost:
        log.warning(
            "sweep: %d deliveries were lost mid-send and are due again after their retry delay", len(lost)
        )
    backlog = queue_backlog(runtime)
    grace_s = retry.republish_after_s(s.fanout_grace_s, backlog, s.republish_max_after_s)
    requeue_after_s = retry.republish_after_s(s.requeue_after_s, backlog, s.republish_max_after_s)
    late_s = grace_s - s.fanout_grace_s  # the API's own deadline was the base grace

    def outbox(session: Session, limit: int) -> list[uuid.UUID]:
        return deliveries.events_to_fan_out(session, grace_s=grace_s, late_s=late_s, limit=limit)

    events = _rounds(runtime, outbox)
    publish_fanout(events)
    # Circuits: due probes go out, circuits open too long are disabled; then dead letters growing are told.
    circuit_sweep: dict[str, int] = {}
    try:
        circuit_sweep = circuits.sweep(runtime)
        opsevents.check_deadletters(runtime)
    except Exception:
        # Never at the cost of the rest of the sweep (lost sends, the outbox and due work come first).
        log.exception("sweep: circuits or operational events failed; the next sweep tries again")
    # Waiting deliveries whose destination has room again become due, and go out with the rest below.
    woken = _rounds(runtime, deliveries.wake_waiting)
    due = _rounds(
        runtime,
        lambda session, limit: deliveries.due_deliveries(
            session, requeue_after_s=requeue_after_s, limit=limit
        ),
    )
    publish_deliver_batches(due)
    return {
        "lost": len(lost),
        "fanout": len(events),
        "woken": len(woken),
        "due": len(due),
        "backlog": backlog,
        **circuit_sweep,
    }


@shared_task(name=TASK_SWEEP, ignore_result=True)
def sweep() -> dict[str, int]:
    return sweep_once(get_runtime())
