"""Response models of the listings added with the console (events); the older ones live in api/schemas.py."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel


class EventSummaryOut(BaseModel):
    id: uuid.UUID
    kind: str
    type: str
    project: str
    environment: str | None
    severity: str
    lifecycle_key: str | None
    #: the op id / Idempotency-Key it was posted with
    op_id: str
    created_at: datetime
    fanned_out_at: datetime | None
    #: its deliveries by state (empty: none planned yet, or no route matched)
    deliveries_by_state: dict[str, int]


class EventPage(BaseModel):
    items: list[EventSummaryOut]
    #: pass as `cursor` for the next (older) page; null at the end
    next_cursor: str | None
