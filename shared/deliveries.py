"""The delivery state machine: the state names and every transition a delivery row can make.

Every transition is one guarded statement here (the state, and for a send its attempt number, in the WHERE
clause), so a late or repeated actor cannot overwrite a newer state. The workers decide (retry timing in
workers/retry.py, classification in providers) and hand decided transitions to this module; the API uses the
same module for redrive, purge and skip. It lives in `shared` because both sides need it.

    pending  -> sending -> delivered
                   |-----> retrying -> sending ...
                   |-----> dead        (permanent error, or the budget spent)
    sending  -> retrying|dead          (lost: the lease ran out, the worker is presumed gone)
    pending|retrying|waiting -> skipped (the integration is disabled; kept so it can be replayed)
    pending|retrying -> superseded     (a newer state of the same lifecycle is, or will be, shown instead;
                                        shared/delivery_lifecycles.py, which also makes an update wait:
                                        pending with a later next_attempt_at, no attempt used)
    pending|retrying -> waiting -> pending (destination paced or over its bulkhead: no attempt used)
    pending|retrying -> pending|retrying, due at its slot (paced a few seconds: held on the worker's timer)
    dead|skipped -> pending            (redrive: fresh budget, old attempts kept; shared/dead_letter_actions.py,
                                        with purge)

Statements take row locks in id order, so two batches touching the same rows cannot deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import func, text, update
from sqlalchemy.orm import Session

from shared.db.models import Delivery
from shared.dead_letter_selection import DeadLetterFilter, conditions, count, counts_by_reason

__all__ = [  # the dead-letter selection is re-exported: one import for the API's dead-letter routes
    "DeadLetterFilter",
    "conditions",
    "count",
    "counts_by_reason",
]


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"
    WAITING = "waiting"


S = DeliveryState

#: Every allowed move; each statement below implements one or more of them and nothing else.
TRANSITIONS: Mapping[DeliveryState, frozenset[DeliveryState]] = {
    S.PENDING: frozenset({S.SENDING, S.SKIPPED, S.SUPERSEDED, S.WAITING}),
    S.RETRYING: frozenset({S.SENDING, S.SKIPPED, S.SUPERSEDED, S.WAITING}),
    S.WAITING: frozenset({S.PENDING, S.SKIPPED, S.SUPERSEDED}),
    S.SENDING: frozenset({S.DELIVERED, S.RETRYING, S.DEAD}),
    S.DEAD: frozenset({S.PENDING}),
    S.SKIPPED: frozenset({S.PENDING}),
    S.DELIVERED: frozenset(),
    S.SUPERSEDED: frozenset(),
}

CLAIMABLE = (S.PENDING, S.RETRYING)
DEAD_LETTER_STATES = (S.DEAD, S.SKIPPED)

#: last_error_class of a row skipped at claim, and of a send whose worker vanished
INTEGRATION_DISABLED = "integration_disabled"
WORKER_LOST = "worker_lost"


# --- claim: pending|retrying -> sending (or skipped when the integration is disabled) -------------------------


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker now holds, as the claim returned it."""

    id: uuid.UUID
    event_id: uuid.UUID
    integration_id: uuid.UUID
    attempt_no: int
    provider_ref: str | None
    previous_ref: str | None
    progress: dict[str, str] | None
    #: attempts of this budget that were the vendor pacing us (not counted against the budget)
    paced_count: int = 0
    #: seconds since this budget's first claim, on PostgreSQL's clock, at the time of this claim
    budget_elapsed_s: float = 0.0
    #: the lifecycle group this delivery is ordered in (NULL: not edited in place)
    lifecycle_key: str | None = None

    @property
    def failures_before(self) -> int:
        """Attempts of this budget before this one that count against it."""
        return self.attempt_no - 1 - self.paced_count


CLAIM_SQL = text(
    """
    UPDATE delivery d
       SET state = CASE WHEN i.enabled THEN 'sending' ELSE 'skipped' END,
           attempt_count = d.attempt_count + CASE WHEN i.enabled THEN 1 ELSE 0 END,
           lease_expires_at = CASE WHEN i.enabled THEN now() + make_interval(secs => w.lease_s) END,
           budget_started_at = CASE WHEN i.enabled THEN COALESCE(d.budget_started_at, now())
                                    ELSE d.budget_started_at END,
           last_error_class = CASE WHEN i.enabled THEN d.last_error_class ELSE :disabled END,
           last_error_detail = CASE WHEN i.enabled THEN d.last_error_detail
                                    ELSE 'the integration was disabled before this delivery was sent' END,
           queued_at = NULL,
           updated_at = now()
      FROM unnest(CAST(:ids AS uuid[]), CAST(:lease_s AS float8[])) AS w(id, lease_s), integration i
     WHERE d.id = w.id
       AND i.id = d.integration_id
       AND d.state IN ('pending', 'retrying')
       AND d.next_attempt_at <= now() + interval '50 milliseconds'
    RETURNING d.id, d.event_id, d.integration_id, d.state, d.attempt_count, d.provider_ref, d.previous_ref,
              d.progress, d.paced_count, EXTRACT(EPOCH FROM now() - d.budget_started_at) AS budget_elapsed_s,
              d.lifecycle_key
    """
)


def claim(session: Session, lease_s: Mapping[uuid.UUID, float]) -> tuple[list[Claimed], list[uuid.UUID]]:
    """Claim the given deliveries, each with its own lease; return (claimed, skipped ids).

    Ids that are not due or not claimable belong to someone else and are simply not returned. The caller
    commits (fan-out claims the rows it inserts in its own transaction)."""
    if not lease_s:
        return [], []
    ids = sorted(lease_s)
    rows = session.execute(
        CLAIM_SQL, {"ids": ids, "lease_s": [lease_s[i] for i in ids], "disabled": INTEGRATION_DISABLED}
    )
    claimed: list[Claimed] = []
    skipped: list[uuid.UUID] = []
    for r in rows:
        if r.state == S.SKIPPED:
            skipped.append(r.id)
            continue
        claimed.append(
            Claimed(
                r.id,
                r.event_id,
                r.integration_id,
                r.attempt_count,
                r.provider_ref,
                r.previous_ref,
                r.progress,
                r.paced_count,
                float(r.budget_elapsed_s or 0.0),
                r.lifecycle_key,
            )
        )
    return claimed, skipped


# --- outcome: sending -> delivered|retrying|dead, batched ----------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A decided outcome of one claimed attempt: the delivery's next state and the attempt row."""

    claimed: Claimed
    state: DeliveryState  # delivered | retrying | dead
    started_at: datetime
    duration_ms: float
    #: retrying: seconds from now (PostgreSQL's now) to the next attempt
    delay_s: float | None = None
    error_class: str | None = None
    error_detail: str | None = None
    dead_reason: str | None = None
    status_code: int | None = None
    response_excerpt: str | None = None
    provider_ref: str | None = None
    progress: dict[str, str] | None = None
    #: this attempt was the vendor pacing us: it does not count against the budget
    paced: bool = False


# One statement for the whole batch. `live` locks the rows that still exist, in id order: a delivery whose
# integration (or event) was deleted mid-send has no row left, and neither its update nor its attempt row may
# fail the batch (the attempt's foreign key would). An outcome whose guard no longer matches (the lease ran
# out and the sweeper moved the row on) changes nothing but is kept as a `late` attempt, replacing the
# sweeper's `worker_lost` record of that same attempt number.
OUTCOME_SQL = text(
    """
    WITH o AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:attempt_nos AS int[]), CAST(:states AS text[]),
            CAST(:delay_s AS float8[]), CAST(:error_classes AS text[]), CAST(:error_details AS text[]),
            CAST(:dead_reasons AS text[]), CAST(:provider_refs AS text[]), CAST(CAST(:progress AS text[]) AS jsonb[]),
            CAST(:paced AS int[]), CAST(:started_at AS timestamptz[]), CAST(:duration_ms AS float8[]),
            CAST(:status_codes AS int[]), CAST(:excerpts AS text[]))
          AS o(id, attempt_no, state, delay_s, error_class, error_detail, dead_reason, provider_ref, progress,
               paced, started_at, duration_ms, status_code, excerpt)
    ), live AS (
        SELECT d.id FROM delivery d WHERE d.id = ANY(CAST(:ids AS uuid[])) ORDER BY d.id FOR NO KEY UPDATE
    ), moved AS (
        UPDATE delivery d
           SET state = o.state,
               next_attempt_at = CASE WHEN o.delay_s IS NULL THEN d.next_attempt_at
                                      ELSE now() + make_interval(secs => o.delay_s) END,
               last_error_class = o.error_class,
               last_error_detail = o.error_detail,
               dead_reason = o.dead_reason,
               provider_ref = o.provider_ref,
               progress = o.progress,
               paced_count = d.paced_count + o.paced,
               delivered_at = CASE WHEN o.state = 'delivered' THEN now() END,
               lease_expires_at = NULL,
               updated_at = now()
          FROM o, live
         WHERE d.id = o.id AND live.id = o.id AND d.state = 'sending' AND d.attempt_count = o.attempt_no
        RETURNING d.id, d.next_attempt_at
    ), attempts AS (
        INSERT INTO attempt (delivery_id, attempt_no, started_at, duration_ms, outcome, status_code, error_class,
                             response_excerpt)
        SELECT o.id, o.attempt_no, o.started_at, o.duration_ms,
               CASE WHEN o.id IN (SELECT id FROM moved) THEN o.state ELSE 'late' END,
               o.status_code, o.error_class, o.excerpt
          FROM o JOIN live ON live.id = o.id
        ON CONFLICT ON CONSTRAINT attempt_delivery_no_key DO UPDATE
           SET outcome = 'late', started_at = EXCLUDED.started_at, duration_ms = EXCLUDED.duration_ms,
               status_code = EXCLUDED.status_code, error_class = EXCLUDED.error_class,
               response_excerpt = EXCLUDED.response_excerpt
         WHERE attempt.error_class = 'worker_lost'
    )
    SELECT id, next_attempt_at FROM moved
    """
)


def apply_outcomes(session: Session, outcomes: Sequence[Outcome]) -> dict[uuid.UUID, datetime]:
    """Write the outcomes of a batch; return {id: next_attempt_at} of those whose transition applied.

    The caller commits."""
    if not outcomes:
        return {}
    params: dict[str, list[Any]] = {
        "ids": [o.claimed.id for o in outcomes],
        "attempt_nos": [o.claimed.attempt_no for o in outcomes],
        "states": [str(o.state) for o in outcomes],
        "delay_s": [o.delay_s for o in outcomes],
        "error_classes": [o.error_class for o in outcomes],
        "error_details": [o.error_detail[:500] if o.error_detail else None for o in outcomes],
        "dead_reasons": [o.dead_reason for o in outcomes],
        "provider_refs": [o.provider_ref for o in outcomes],
        "progress": [orjson.dumps(o.progress).decode() if o.progress is not None else None for o in outcomes],
        "paced": [1 if o.paced else 0 for o in outcomes],
        "started_at": [o.started_at for o in outcomes],
        "duration_ms": [o.duration_ms for o in outcomes],
        "status_codes": [o.status_code for o in outcomes],
        "excerpts": [o.response_excerpt for o in outcomes],
    }
    return {row.id: row.next_attempt_at for row in session.execute(OUTCOME_SQL, params)}


# --- lost: sending past its lease -> retrying|dead ------------------------------------------------------------


@dataclass(frozen=True)
class LostSend:
    id: uuid.UUID
    integration_id: uuid.UUID
    attempt_no: int
    paced_count: int
    retry_max_retries: int | None
    retry_base_delay_s: float | None


LOST_SQL = text(
    """
    SELECT d.id, d.integration_id, d.attempt_count, d.paced_count, i.retry_max_retries, i.retry_base_delay_s
      FROM delivery d JOIN integration i ON i.id = d.integration_id
     WHERE d.state = 'sending' AND d.lease_expires_at < now()
     ORDER BY d.id
     LIMIT :limit
       FOR UPDATE OF d SKIP LOCKED
    """
)


def lost_sends(session: Session, limit: int) -> list[LostSend]:
    """Lock up to `limit` sends whose lease ran out; the caller decides their fate and calls `apply_lost`."""
    return [LostSend(*row) for row in session.execute(LOST_SQL, {"limit": limit})]


APPLY_LOST_SQL = text(
    """
    WITH l AS (
        SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:attempt_nos AS int[]), CAST(:delay_s AS float8[]))
          AS l(id, attempt_no, delay_s)
    ), moved AS (
        UPDATE delivery d
           SET state = CASE WHEN l.delay_s IS NULL THEN 'dead' ELSE 'retrying' END,
               dead_reason = CASE WHEN l.delay_s IS NULL THEN :exhausted END,
               next_attempt_at = now() + make_interval(secs => COALESCE(l.delay_s, 0)),
               lease_expires_at = NULL,
               queued_at = NULL,
               last_error_class = :lost,
               last_error_detail = 'the worker sending this delivery stopped before recording an outcome',
               updated_at = now()
          FROM l
         WHERE d.id = l.id AND d.state = 'sending' AND d.attempt_count = l.attempt_no
        RETURNING d.id, d.attempt_count, d.state
    )
    INSERT INTO attempt (delivery_id, attempt_no, started_at, duration_ms, outcome, error_class)
    SELECT id, attempt_count, now(), 0, state, :lost FROM moved
    ON CONFLICT ON CONSTRAINT attempt_delivery_no_key DO NOTHING
    RETURNING delivery_id
    """
)


def apply_lost(
    session: Session, decided: Sequence[tuple[LostSend, float | None]], *, exhausted_reason: str
) -> list[uuid.UUID]:
    """Move lost sends on: (send, delay_s) -> retrying after delay_s, or dead when delay_s is None."""
    if not decided:
        return []
    params = {
        "ids": [s.id for s, _ in decided],
        "attempt_nos": [s.attempt_no for s, _ in decided],
        "delay_s": [d for _, d in decided],
        "exhausted": exhausted_reason,
        "lost": WORKER_LOST,
    }
    return list(session.scalars(APPLY_LOST_SQL, params))


# --- due work: what the sweeper publishes -------------------------------------------------------------------

OUTBOX_SQL = text(
    """
    UPDATE event SET next_fanout_at = now() + make_interval(secs => :grace_s)
     WHERE id IN (
        SELECT id FROM event
         WHERE fanned_out_at IS NULL AND next_fanout_at <= now() - make_interval(secs => :late_s)
         ORDER BY next_fanout_at
         LIMIT :limit
           FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)

DUE_SQL = text(
    """
    UPDATE delivery SET queued_at = now()
     WHERE id IN (
        SELECT id FROM delivery
         WHERE state IN ('pending', 'retrying')
           AND next_attempt_at <= now()
           AND (queued_at IS NULL OR queued_at < now() - make_interval(secs => :requeue_after_s))
         ORDER BY next_attempt_at, created_at
         LIMIT :limit
           FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)


def events_to_fan_out(session: Session, *, grace_s: float, late_s: float, limit: int) -> list[uuid.UUID]:
    """Events whose fan-out is more than `late_s` overdue, stamped so the next look is `grace_s` away."""
    return list(session.scalars(OUTBOX_SQL, {"grace_s": grace_s, "late_s": late_s, "limit": limit}))


def due_deliveries(session: Session, *, requeue_after_s: float, limit: int) -> list[uuid.UUID]:
    """Due deliveries not on the queue (or published more than `requeue_after_s` ago), stamped as published."""
    return list(session.scalars(DUE_SQL, {"requeue_after_s": requeue_after_s, "limit": limit}))


# --- waiting: pending|retrying -> waiting -> pending (pacing, bulkheads; not an attempt) --------------------------

WAIT_SQL = text(
    """
    UPDATE delivery d
       SET state = 'waiting',
           next_attempt_at = now() + make_interval(secs => w.wait_s),
           queued_at = NULL,
           updated_at = now()
      FROM unnest(CAST(:ids AS uuid[]), CAST(:wait_s AS float8[])) AS w(id, wait_s)
     WHERE d.id = w.id AND d.state IN ('pending', 'retrying')
    RETURNING d.id
    """
)

WAKE_SQL = text(
    """
    UPDATE delivery SET state = 'pending', queued_at = NULL, updated_at = now()
     WHERE id IN (
        SELECT id FROM delivery
         WHERE state = 'waiting' AND next_attempt_at <= now()
         ORDER BY next_attempt_at, created_at
         LIMIT :limit
           FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)


def wait(session: Session, wait_s: Mapping[uuid.UUID, float]) -> list[uuid.UUID]:
    """Hold claimable deliveries for their destination: `waiting` until `wait_s` from now, attempts untouched.

    Their next_attempt_at is when the destination has room; the sweeper wakes them then. The caller commits."""
    if not wait_s:
        return []
    ids = sorted(wait_s)
    return list(session.scalars(WAIT_SQL, {"ids": ids, "wait_s": [wait_s[i] for i in ids]}))


HOLD_SQL = text(
    """
    UPDATE delivery d
       SET next_attempt_at = now() + make_interval(secs => w.wait_s),
           queued_at = now() + make_interval(secs => w.wait_s),
           updated_at = now()
      FROM unnest(CAST(:ids AS uuid[]), CAST(:wait_s AS float8[])) AS w(id, wait_s)
     WHERE d.id = w.id AND d.state IN ('pending', 'retrying')
    RETURNING d.id
    """
)

UNHOLD_SQL = text(
    """
    UPDATE delivery SET queued_at = NULL
     WHERE id = ANY(CAST(:ids AS uuid[])) AND state IN ('pending', 'retrying') AND queued_at IS NOT NULL
    """
)


def hold(session: Session, wait_s: Mapping[uuid.UUID, float]) -> list[uuid.UUID]:
    """Hold claimable deliveries for a slot a few seconds away on the worker's own timer (workers/wakeups.py):
    due at their slot and marked as published until then, state and attempts untouched. Should the worker
    vanish, the sweeper republishes them `requeue_after_s` after their slot. The caller commits."""
    if not wait_s:
        return []
    ids = sorted(wait_s)
    return list(session.scalars(HOLD_SQL, {"ids": ids, "wait_s": [wait_s[i] for i in ids]}))


def unhold(session: Session, ids: list[uuid.UUID]) -> None:
    """Give held deliveries back to the sweeper at once (a worker going away); the caller commits."""
    if ids:
        session.execute(UNHOLD_SQL, {"ids": ids})


def wake_waiting(session: Session, limit: int) -> list[uuid.UUID]:
    """Move waiting deliveries whose time has come back to `pending` (due, unpublished); the caller commits."""
    return list(session.scalars(WAKE_SQL, {"limit": limit}))


# --- skip: pending|retrying -> skipped (integration disabled) --------------------------------------------------


def skip_integration(session: Session, integration_id: uuid.UUID) -> int:
    """Skip the queued work of a disabled integration at once (claim would skip each row anyway), waiting rows
    (paced, or held by an open circuit) included."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.integration_id == integration_id, Delivery.state.in_((*CLAIMABLE, S.WAITING)))
        .values(
            state=S.SKIPPED,
            last_error_class=INTEGRATION_DISABLED,
            last_error_detail="the integration was disabled before this delivery was sent",
            lease_expires_at=None,
            queued_at=None,
            updated_at=func.now(),
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
