"""The delivery statements of circuits (shared/circuits.py decides, workers/circuits.py applies): choosing the
probe and releasing an integration's backlog once its circuit closes.

"Oldest" is the order the API accepted the events in (event.created_at): delivery rows of one fan-out share
their transaction's timestamp.

Neither changes an attempt count. The probe moves `waiting -> pending` (shared/deliveries.py's allowed move)
or, pending or retrying, is just made due now; the release only re-times unfinished rows. Both read the
partial index `delivery_backlog_idx` (an integration's unfinished deliveries, oldest first).
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session

# The oldest unfinished delivery not locked by someone else (a claim, the sweeper's wake) becomes due now and is
# marked as published: the caller publishes it after the commit. A retry not due yet is not taken: the probe never
# shortens a delivery's own schedule (it is held when it comes due, and can be the next probe). A row held for its
# rate slot on a worker's timer (shared/deliveries.py `hold`: queued_at stamped at its slot) is waiting for its
# destination like a `waiting` row, so it can be the probe: skipping it made a younger delivery the probe.
PROBE_SQL = text(
    """
    UPDATE delivery d
       SET state = CASE WHEN d.state = 'waiting' THEN 'pending' ELSE d.state END,
           next_attempt_at = now(),
           queued_at = now(),
           updated_at = now()
     WHERE d.id = (
        SELECT b.id FROM delivery b JOIN event e ON e.id = b.event_id
         WHERE b.integration_id = :integration_id
           AND (b.state = 'waiting'
                OR (b.state IN ('pending', 'retrying')
                    AND (b.next_attempt_at <= now() OR b.queued_at >= b.next_attempt_at)))
         ORDER BY e.created_at, b.id
         LIMIT 1
           FOR UPDATE OF b SKIP LOCKED)
       AND d.state IN ('pending', 'retrying', 'waiting')
    RETURNING d.id
    """
)

# Oldest first, one `step_s` apart (the destination's pace): the sweeper wakes and publishes them in that order,
# so the backlog reaches the destination in the order it was accepted. `queued_at` is cleared: a `deliver`
# message already on Redis finds its row not due and drops it, and the sweeper publishes it when due.
RELEASE_SQL = text(
    """
    UPDATE delivery d
       SET next_attempt_at = now() + make_interval(secs => (r.rank - 1) * :step_s),
           queued_at = NULL,
           updated_at = now()
      FROM (SELECT b.id, row_number() OVER (ORDER BY e.created_at, b.id) AS rank
              FROM delivery b JOIN event e ON e.id = b.event_id
             WHERE b.integration_id = :integration_id AND b.state IN ('pending', 'retrying', 'waiting')) r
     WHERE d.id = r.id AND d.state IN ('pending', 'retrying', 'waiting')
    """
)


def send_probe(session: Session, integration_id: uuid.UUID) -> uuid.UUID | None:
    """Make the integration's oldest held (or due) delivery due now; its id, or None when it has none."""
    probe_id: uuid.UUID | None = session.scalar(PROBE_SQL, {"integration_id": integration_id})
    return probe_id


def release_backlog(session: Session, integration_id: uuid.UUID, step_s: float) -> int:
    """Re-time the integration's unfinished deliveries oldest first, `step_s` apart; how many. The caller
    commits."""
    result = session.execute(RELEASE_SQL, {"integration_id": integration_id, "step_s": max(step_s, 0.0)})
    return int(getattr(result, "rowcount", 0) or 0)
