"""Selecting dead letters: the one filter over `dead` (and `skipped`) deliveries, for listings and counts.

The API's dead-letter routes and workers/tasks/redrive.py apply exactly the same selection; the transitions
over it (redrive, purge) are shared/deliveries.py's, which re-exports these names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from shared.db.models import Delivery, Event, Integration

DEAD = "dead"
#: the states a dead-letter selection may name (shared.deliveries.DEAD_LETTER_STATES)
SELECTABLE_STATES = ("dead", "skipped")


@dataclass(frozen=True)
class DeadLetterFilter:
    """One selection of dead (and/or skipped) deliveries, shared by the API and the bulk task."""

    ids: tuple[uuid.UUID, ...] = ()
    integration_id: uuid.UUID | None = None
    provider: str | None = None  # the integration's provider (slack, webhook, ...)
    project: str | None = None
    reason: str | None = None
    since: datetime | None = None  # dead since (delivery.updated_at >= since)
    until: datetime | None = None  # dead before (delivery.updated_at < until)
    states: tuple[str, ...] = (DEAD,)

    def to_json(self) -> dict[str, Any]:
        return {
            "ids": [str(i) for i in self.ids],
            "integration_id": str(self.integration_id) if self.integration_id else None,
            "provider": self.provider,
            "project": self.project,
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "states": [str(s) for s in self.states],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeadLetterFilter:
        return cls(
            ids=tuple(uuid.UUID(i) for i in data.get("ids") or ()),
            integration_id=uuid.UUID(data["integration_id"]) if data.get("integration_id") else None,
            provider=data.get("provider"),
            project=data.get("project"),
            reason=data.get("reason"),
            since=datetime.fromisoformat(data["since"]) if data.get("since") else None,
            until=datetime.fromisoformat(data["until"]) if data.get("until") else None,
            states=tuple(data.get("states") or (DEAD,)),
        )


def conditions(f: DeadLetterFilter) -> list[ColumnElement[bool]]:
    states = [s for s in f.states if s in SELECTABLE_STATES] or [DEAD]
    where: list[ColumnElement[bool]] = [Delivery.state.in_(states)]
    if f.ids:
        where.append(Delivery.id.in_(f.ids))
    if f.integration_id is not None:
        where.append(Delivery.integration_id == f.integration_id)
    if f.provider is not None:
        where.append(
            Delivery.integration_id.in_(select(Integration.id).where(Integration.provider == f.provider))
        )
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
