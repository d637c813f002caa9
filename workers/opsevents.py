"""Herald's operational events: stored as events of kind `herald` and fanned out by the normal routes.

`herald.integration.failing` (a circuit opened), `herald.integration.recovered` (it closed again, said only
after a failing event was said), `herald.integration.disabled` (auto-disable) and `herald.deadletters.growing`
(the sweeper). Routing sends them only to routes that name them and never to the integration they are about
(shared/routing.py). Each is rate limited per subject (an integration, a project) across every process by the
`operational_notice` row that says when it was last emitted: at most one per `ops_event_min_interval_s`.

`emit` inserts in the caller's transaction (with the transition that caused it); the caller publishes the
returned ids with `publish` after its commit. A lost publish is the outbox's: the sweeper fans out events not
fanned out after `fanout_grace_s`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared import metrics
from shared.config import Settings
from shared.events import DEADLETTERS_GROWING, INTEGRATION_FAILING, INTEGRATION_RECOVERED, OPERATIONAL_KIND
from workers.publish import publish_fanout
from workers.runtime import ProcessRuntime

log = logging.getLogger(__name__)

# Takes the subject's slot when the last one of this type is older than the interval (or there is none), in one
# statement, so two processes never both emit.
CLAIM_NOTICE_SQL = text(
    """
    INSERT INTO operational_notice (subject, type, emitted_at) VALUES (:subject, :type, now())
    ON CONFLICT (subject, type) DO UPDATE SET emitted_at = now()
     WHERE operational_notice.emitted_at <= now() - make_interval(secs => :min_interval_s)
    RETURNING emitted_at
    """
)

# A recovery is told only when the subject's last failing notice is newer than its last recovered one.
TOLD_FAILING_SQL = text(
    """
    SELECT f.emitted_at > COALESCE(r.emitted_at, '-infinity'::timestamptz)
      FROM operational_notice f
      LEFT JOIN operational_notice r ON r.subject = f.subject AND r.type = :recovered
     WHERE f.subject = :subject AND f.type = :failing
    """
)

INSERT_EVENT_SQL = text(
    """
    INSERT INTO event (id, kind, type, project, environment, severity, payload, idempotency_key, request_hash,
                       created_at, next_fanout_at)
    VALUES (:id, :kind, :type, :project, NULL, :severity, CAST(:payload AS jsonb), :idempotency_key,
            :request_hash, now(), now() + make_interval(secs => :grace_s))
    """
)


@dataclass(frozen=True)
class Notice:
    """One operational event to emit (if its rate limit allows)."""

    type: str
    #: what it is about, for the rate limit: "integration:<id>" or "project:<name>"
    subject: str
    project: str
    severity: str
    title: str
    message: str
    #: shown as fields, in order
    facts: dict[str, Any] = field(default_factory=dict)
    #: the rest of the machine-readable payload (`integration_id` keeps it from its own integration)
    data: dict[str, Any] = field(default_factory=dict)
    #: False: not rate limited (auto-disable happens once per episode)
    limited: bool = True


def emit(session: Session, settings: Settings, notice: Notice) -> uuid.UUID | None:
    """Store the event in the caller's transaction, unless rate limited; its id, or None when suppressed."""
    if notice.type == INTEGRATION_RECOVERED and not session.scalar(
        TOLD_FAILING_SQL,
        {"subject": notice.subject, "failing": INTEGRATION_FAILING, "recovered": INTEGRATION_RECOVERED},
    ):
        _suppressed(notice)
        return None
    interval_s = settings.ops_event_min_interval_s if notice.limited else 0.0
    claimed = session.execute(
        CLAIM_NOTICE_SQL, {"subject": notice.subject, "type": notice.type, "min_interval_s": interval_s}
    ).first()
    if claimed is None:
        _suppressed(notice)
        return None
    event_id = uuid.uuid4()
    payload = {"title": notice.title, "message": notice.message, "facts": notice.facts, **notice.data}
    body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    session.execute(
        INSERT_EVENT_SQL,
        {
            "id": event_id,
            "kind": OPERATIONAL_KIND,
            "type": notice.type,
            "project": notice.project,
            "severity": notice.severity,
            "payload": body.decode(),
            "idempotency_key": f"{notice.type}/{event_id}",
            "request_hash": hashlib.sha256(body).hexdigest(),
            "grace_s": settings.fanout_grace_s,
        },
    )
    return event_id


def _suppressed(notice: Notice) -> None:
    log.info("operational event %s about %s suppressed (rate limit)", notice.type, notice.subject)
    metrics.OPERATIONAL_EVENTS.labels(notice.type, "suppressed").inc()


def publish(emitted: Sequence[tuple[str, uuid.UUID]]) -> None:
    """After the commit: count and fan out the emitted events ((type, event id) pairs)."""
    for event_type, event_id in emitted:
        metrics.OPERATIONAL_EVENTS.labels(event_type, "emitted").inc()
        log.warning("operational event %s emitted (event %s)", event_type, event_id)
    publish_fanout([event_id for _, event_id in emitted])


# --- herald.deadletters.growing (the sweeper) ---------------------------------------------------------------

# Deliveries dead-lettered within the window, per project; operational events' own dead letters are left out
# (an ops destination that fails must not feed its own alarm).
GROWING_SQL = text(
    """
    SELECT e.project, count(*)
      FROM delivery d JOIN event e ON e.id = d.event_id
     WHERE d.state = 'dead' AND d.updated_at > now() - make_interval(secs => :window_s) AND e.kind <> :kind
     GROUP BY e.project
    HAVING count(*) >= :threshold
    """
)

_checked_at = 0.0
_checked_lock = threading.Lock()


def check_deadletters(runtime: ProcessRuntime) -> int:
    """Emit `herald.deadletters.growing` for each project past the threshold (at most every
    `deadletters_check_interval_s` per process; rate limited per project); how many were emitted."""
    global _checked_at
    s = runtime.settings
    with _checked_lock:
        if time.monotonic() - _checked_at < s.deadletters_check_interval_s:
            return 0
        _checked_at = time.monotonic()
    emitted: list[tuple[str, uuid.UUID]] = []
    with runtime.sessions() as session:
        growing = session.execute(
            GROWING_SQL,
            {
                "window_s": s.deadletters_growing_window_s,
                "kind": OPERATIONAL_KIND,
                "threshold": s.deadletters_growing_threshold,
            },
        ).all()
        for project, count in growing:
            notice = Notice(
                type=DEADLETTERS_GROWING,
                subject=f"project:{project}"[:200],
                project=project,
                severity="warning",
                title=f"{count} deliveries of {project} dead-lettered in {s.deadletters_growing_window_s:.0f} s",
                message=(
                    "Deliveries are failing permanently or exhausting their retries. Look at their reasons "
                    "(herald dlq list), fix the cause, then redrive them."
                ),
                facts={
                    "Project": project,
                    "Dead letters": count,
                    "Window": f"{s.deadletters_growing_window_s:.0f} s",
                },
                data={"dead_letters": count, "window_s": s.deadletters_growing_window_s},
            )
            event_id = emit(session, s, notice)
            if event_id is not None:
                emitted.append((notice.type, event_id))
        session.commit()
    publish(emitted)
    return len(emitted)
