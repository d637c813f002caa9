"""The dead-letter set: selecting, redriving and purging `dead` (and `skipped`) deliveries by one filter.

Used by the API (small sets, in the request) and by `workers/tasks/redrive.py` (large sets, in batches), so
both apply exactly the same selection. Every statement takes a bounded batch with FOR UPDATE SKIP LOCKED and
re-checks the state, so concurrent or repeated redrives of the same set move each row once (idempotent).

A redrive gives a fresh attempt budget: attempt_count back to 0, due now. The earlier attempts stay, with
`redrives_ago` bumped, so the history survives and the new attempt numbers do not collide with the old ones.
Deliveries of a disabled integration are left alone (they would only be skipped again).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session

from shared.db.models import Attempt, Delivery, Event, Integration

DEAD_LETTER_STATES = ("dead", "skipped")


@dataclass(frozen=True)
class DeadLetterFilter:
    ids: tuple[uuid.UUID, ...] = ()
    integration_id: uuid.UUID | None = None
    project: str | None = None
    reason: str | None = None
    since: datetime | None = None  # dead since (delivery.updated_at >= since)
    until: datetime | None = None  # dead before (delivery.updated_at < until)
    states: tuple[str, ...] = ("dead",)

    def to_json(self) -> dict[str, Any]:
        return {
            "ids": [str(i) for i in self.ids],
            "integration_id": str(self.integration_id) if self.integration_id else None,
            "project": self.project,
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "states": list(self.states),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeadLetterFilter:
        return cls(
            ids=tuple(uuid.UUID(i) for i in data.get("ids") or ()),
            integration_id=uuid.UUID(data["integration_id"]) if data.get("integration_id") else None,
            project=data.get("project"),
            reason=data.get("reason"),
            since=datetime.fromisoformat(data["since"]) if data.get("since") else None,
            until=datetime.fromisoformat(data["until"]) if data.get("until") else None,
            states=tuple(data.get("states") or ("dead",)),
        )


def conditions(f: DeadLetterFilter) -> list[ColumnElement[bool]]:
    states = [s for s in f.states if s in DEAD_LETTER_STATES] or ["dead"]
    where: list[ColumnElement[bool]] = [Delivery.state.in_(states)]
    if f.ids:
        where.append(Delivery.id.in_(f.ids))
    if f.integration_id is not None:
        where.append(Delivery.integration_id == f.integration_id)
    if f.reason is not None:
        where.append(Delivery.dead_reason == f.reason)
    if f.since is not None:
        where.append(Delivery.updated_at >= f.since)
    if f.until is not None:
        where.append(Delivery.updated_at < f.until)
    if f.project is not None:
        where.append(Delivery.event_id.in_(select(Event.id).where(Event.project == f.project)))
    return where


def count(session: Session, f: DeadLetterFilter) -> int:
    return int(session.scalar(select(func.count()).select_from(Delivery).where(*conditions(f))) or 0)


def counts_by_reason(session: Session, f: DeadLetterFilter) -> dict[str, int]:
    rows = session.execute(
        select(func.coalesce(Delivery.dead_reason, Delivery.state), func.count())
        .where(*conditions(f))
        .group_by(func.coalesce(Delivery.dead_reason, Delivery.state))
    )
    return {str(reason): int(n) for reason, n in rows}


def redrive_batch(session: Session, f: DeadLetterFilter, limit: int, *, queued: bool) -> list[uuid.UUID]:
    """Move up to `limit` matching deliveries back to `pending` with a fresh budget; return their ids.

    `queued=True` marks them as published (the caller publishes them now); otherwise the sweeper publishes
    them within a sweep interval. The caller commits."""
    picked = (
        select(Delivery.id)
        .join(Integration, Integration.id == Delivery.integration_id)
        .where(*conditions(f), Integration.enabled.is_(True))
        .limit(limit)
        .with_for_update(of=Delivery, skip_locked=True)
        .scalar_subquery()
    )
    ids = list(
        session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(picked), Delivery.state.in_(DEAD_LETTER_STATES))
            .values(
                state="pending",
                attempt_count=0,
                next_attempt_at=func.now(),
                queued_at=func.now() if queued else None,
                lease_expires_at=None,
                dead_reason=None,
                updated_at=func.now(),
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )
    if ids:
        session.execute(
            update(Attempt)
            .where(Attempt.delivery_id.in_(ids))
            .values(redrives_ago=Attempt.redrives_ago + 1)
            .execution_options(synchronize_session=False)
        )
    return ids


def purge_batch(session: Session, f: DeadLetterFilter, limit: int) -> int:
    """Delete up to `limit` matching deliveries (their attempts go with them); the caller commits."""
    picked = (
        select(Delivery.id)
        .where(*conditions(f))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = session.execute(
        delete(Delivery)
        .where(Delivery.id.in_(picked), Delivery.state.in_(DEAD_LETTER_STATES))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
