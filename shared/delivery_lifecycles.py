"""One message per lifecycle: the delivery state machine's guarded statements for ordering a lifecycle.

Part of the state machine (shared/deliveries.py lists the transitions); kept apart so that module stays small.
The deliveries of one (lifecycle_key, integration) form a group; `shared/lifecycles.decide` says, for the
group's pending ones, which one is sent (as a root or as an edit of the shown message), which waits and which
are superseded. Here that decision is taken under a per-group transaction-level advisory lock, on what
PostgreSQL holds (the shown message's reference is `delivery.provider_ref`), so it survives worker restarts,
Redis flushes and redrives:

- `gate` (before a claim): supersedes (pending|retrying -> superseded, with the reason), makes an update wait
  while the group's root (or an older edit) is in flight (it stays pending with a later next_attempt_at: no
  attempt is used and no second root is posted), and sets `previous_ref` of the rows it lets through (NULL for
  a root, the shown message's reference for an edit);
- `lock_groups` + `wake` (when an outcome is recorded): the group's waiting rows are due at once, so the newest
  goes out as soon as the in-flight one has landed. A missed wake costs latency only: a waiting row is due
  again after `WAIT_S` anyway (a worker killed mid-send: its lease runs out, the sweeper moves it on, and the
  next look decides again).

Every lock is taken in one order (the groups' hashes, sorted), before any row lock of the group.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.lifecycles import Action, Known, decide

#: how long an update waits for the group's in-flight send before it looks again (a wake comes sooner)
WAIT_S = 5.0

#: last_error_class of a superseded delivery (not a failure: the reason is in last_error_detail)
SUPERSEDED = "superseded"

Group = tuple[str, uuid.UUID]  # (lifecycle_key, integration_id)


def _lock_id(group: Group) -> int:
    digest = hashlib.blake2b(f"{group[0]}\x00{group[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# One round trip for any number of groups: a function scan yields the (sorted) array in order, so the locks are
# taken in that order, as one lock per statement would.
LOCK_SQL = text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:ids AS bigint[])) AS k")


def lock_groups(session: Session, groups: Iterable[Group]) -> None:
    """Serialise decisions and outcomes of these groups until the caller's transaction ends."""
    lock_ids = sorted({_lock_id(g) for g in groups})
    if lock_ids:
        session.execute(LOCK_SQL, {"ids": lock_ids})


GROUP_OF_SQL = text(
    """
    SELECT id, lifecycle_key, integration_id, next_attempt_at <= now() + interval '50 milliseconds' AS due
      FROM delivery
     WHERE id = ANY(CAST(:ids AS uuid[])) AND lifecycle_key IS NOT NULL AND state IN ('pending', 'retrying')
    """
)

# Order within a lifecycle: the source's event_time (gateway events carry it; others are ordered by
# acceptance), then the arrival sequence.
GROUPS_SQL = text(
    """
    SELECT d.id, d.lifecycle_key, d.integration_id, d.state, d.provider_ref, d.previous_ref,
           COALESCE(CAST(e.payload->'lifecycle'->>'event_time' AS float8),
                    EXTRACT(EPOCH FROM e.created_at)) AS event_time,
           COALESCE(CAST(e.payload->'lifecycle'->>'sequence' AS bigint), 0) AS sequence
      FROM delivery d JOIN event e ON e.id = d.event_id
     WHERE (d.lifecycle_key, d.integration_id) IN (
            SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:integration_ids AS uuid[])))
    """
)

SUPERSEDE_SQL = text(
    """
    UPDATE delivery d
       SET state = 'superseded', last_error_class = :superseded, last_error_detail = w.reason,
           lease_expires_at = NULL, queued_at = NULL, updated_at = now()
      FROM unnest(CAST(:ids AS uuid[]), CAST(:reasons AS text[])) AS w(id, reason)
     WHERE d.id = w.id AND d.state IN ('pending', 'retrying', 'waiting')
    RETURNING d.id
    """
)

WAIT_SQL = text(
    """
    UPDATE delivery
       SET next_attempt_at = now() + make_interval(secs => :wait_s), queued_at = NULL, updated_at = now()
     WHERE id = ANY(CAST(:ids AS uuid[])) AND state IN ('pending', 'retrying')
    """
)

# Only rows whose reference changes are written: a new root (the common case, NULL to NULL) costs no row
# version (rewriting all 1,000 rows of a fan-out took 70 ms of PostgreSQL time).
SET_REF_SQL = text(
    """
    UPDATE delivery d SET previous_ref = w.ref
      FROM unnest(CAST(:ids AS uuid[]), CAST(:refs AS text[])) AS w(id, ref)
     WHERE d.id = w.id AND d.state IN ('pending', 'retrying')
       AND d.previous_ref IS DISTINCT FROM w.ref
    """
)

# Each group is looked up on its own, by delivery_lifecycle_idx: a LATERAL subquery that OFFSET 0 keeps from being
# flattened into a join. As a plain IN over the groups, the generic plan of the prepared statement read every row
# due later (delivery_due_idx: the planner takes "retrying" and "due later" as independent and expects 1 % of
# them) and matched the groups in a hash: one wake per outcome write cost 23 ms on a table with 10,000 retries
# scheduled, 0.05 ms this way (tests/integration/test_query_plans.py).
WAKE_SQL = text(
    """
    UPDATE delivery d SET next_attempt_at = now(), queued_at = now(), updated_at = now()
      FROM unnest(CAST(:keys AS text[]), CAST(:integration_ids AS uuid[])) AS g(lifecycle_key, integration_id)
           CROSS JOIN LATERAL (
               SELECT b.id FROM delivery b
                WHERE b.lifecycle_key = g.lifecycle_key AND b.integration_id = g.integration_id
                  AND b.state IN ('pending', 'retrying') AND b.next_attempt_at > now()
               OFFSET 0
           ) AS w
     WHERE d.id = w.id AND NOT d.id = ANY(CAST(:exclude AS uuid[]))
    RETURNING d.id
    """
)


@dataclass
class Gated:
    """What the gate did with a batch of claim candidates."""

    #: may be claimed now (not in a lifecycle, or the group's newest state, with previous_ref set)
    allowed: set[uuid.UUID] = field(default_factory=set)
    #: delivery id -> integration id of every row superseded (in the batch or not), for the metrics
    superseded: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    waiting: set[uuid.UUID] = field(default_factory=set)


def _groups_params(groups: Iterable[Group]) -> dict[str, list[object]]:
    ordered = sorted(set(groups), key=lambda g: (g[0], str(g[1])))
    return {"keys": [g[0] for g in ordered], "integration_ids": [g[1] for g in ordered]}


def gate(
    session: Session, ids: Iterable[uuid.UUID], groups_of: Mapping[uuid.UUID, Group | None] | None = None
) -> Gated:
    """Decide the lifecycle groups of these claim candidates (within the caller's transaction).

    `groups_of`: each candidate's group (None: in no lifecycle), when the caller has just read the candidates as
    due and claimable in this transaction; it spares reading them again (and the whole gate when none is in a
    lifecycle)."""
    ids = sorted(set(ids))
    gated = Gated(allowed=set(ids))
    if not ids:
        return gated
    batch: dict[uuid.UUID, bool] = {}  # id -> due now
    groups: set[Group] = set()
    if groups_of is not None:
        for delivery_id in ids:
            if (group := groups_of.get(delivery_id)) is not None:
                batch[delivery_id] = True
                groups.add(group)
    else:
        for row in session.execute(GROUP_OF_SQL, {"ids": ids}):
            batch[row.id] = bool(row.due)
            groups.add((row.lifecycle_key, row.integration_id))
    if not groups:
        return gated
    lock_groups(session, groups)
    known: dict[Group, list[Known]] = {}
    integration_of: dict[uuid.UUID, uuid.UUID] = {}
    previous_ref_of: dict[uuid.UUID, str | None] = {}
    for r in session.execute(GROUPS_SQL, _groups_params(groups)):
        integration_of[r.id] = r.integration_id
        previous_ref_of[r.id] = r.previous_ref
        known.setdefault((r.lifecycle_key, r.integration_id), []).append(
            Known(str(r.id), r.state, float(r.event_time), int(r.sequence), r.provider_ref)
        )
    supersede: dict[uuid.UUID, str] = {}
    wait: list[uuid.UUID] = []
    refs: dict[uuid.UUID, str | None] = {}
    for group_known in known.values():
        for raw_id, decision in decide(group_known).items():
            delivery_id = uuid.UUID(raw_id)
            if decision.action == Action.SUPERSEDE:
                supersede[delivery_id] = decision.reason
            elif delivery_id not in batch:
                continue  # the group's newest is not ours to send: its own task (or the sweeper) will
            elif decision.action == Action.WAIT:
                wait.append(delivery_id)
            else:
                refs[delivery_id] = decision.edit_ref if decision.action == Action.SEND_EDIT else None
    # Rows of the batch that are not due are left to the claim (it will not take them).
    gated.allowed -= {d for d in batch if d not in refs and batch[d]}
    if supersede:
        ordered = sorted(supersede)
        done = session.scalars(
            SUPERSEDE_SQL,
            {"ids": ordered, "reasons": [supersede[d] for d in ordered], "superseded": SUPERSEDED},
        )
        gated.superseded = {d: integration_of[d] for d in done}
    due_waits = sorted(d for d in wait if batch[d])
    if due_waits:
        session.execute(WAIT_SQL, {"ids": due_waits, "wait_s": WAIT_S})
        gated.waiting = set(due_waits)
    # Only the references that change (read under the group's lock): a new root keeps NULL, no statement.
    refs = {d: ref for d, ref in refs.items() if previous_ref_of.get(d) != ref}
    if refs:
        ordered = sorted(refs)
        session.execute(SET_REF_SQL, {"ids": ordered, "refs": [refs[d] for d in ordered]})
    return gated


def wake(session: Session, groups: Iterable[Group], exclude: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Make the groups' waiting rows due now (marked as published: the caller publishes them after commit)."""
    params = _groups_params(groups)
    if not params["keys"]:
        return []
    return list(session.scalars(WAKE_SQL, {**params, "exclude": sorted(set(exclude))}))
