"""Request and response bodies of the channel and incident management routes (the /v1 admin side)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, StringConstraints

from api.schemas import DeliveryOut, Name, Strict
from shared.channels import PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS

ChannelId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_:\-]{1,64}$")]
Password = Annotated[str, StringConstraints(min_length=PASSWORD_MIN_CHARS, max_length=PASSWORD_MAX_CHARS)]


class ChannelIn(Strict):
    name: Name
    project: Name
    #: omitted = Herald generates one and shows it once
    password: Password | None = None
    #: omitted = 32 lowercase hex; given = 1-64 of letters, digits, `_`, `:`, `-` (a channel moved from PushGo)
    channel_id: ChannelId | None = None


class RotateIn(Strict):
    password: Password | None = None


class ChannelOut(BaseModel):
    channel_id: str
    name: str
    project: str
    version: int
    created_at: datetime
    updated_at: datetime


class ChannelCreated(ChannelOut):
    #: only when Herald generated it: the one time it is shown
    password: str | None = None


class DispatchOut(BaseModel):
    sequence: int | None
    route: str
    op_id: str
    event_time: datetime | None
    created_at: datetime
    herald_event_id: uuid.UUID | None
    type: str | None
    #: this dispatch's fields as accepted (no password; `ciphertext` is never echoed)
    fields: dict[str, Any]
    deliveries: list[DeliveryOut]


class LifecycleOut(BaseModel):
    kind: str
    #: `event_id` of an incident, `thing_id` of a thing
    id: str
    channel_id: str
    project: str
    title: str | None
    description: str | None
    status: str | None
    message: str | None
    severity: str | None
    state: str
    open: bool
    attrs: dict[str, Any]
    tags: list[str]
    started_at: datetime | None
    ended_at: datetime | None
    last_event_time: datetime
    dispatch_count: int
    created_at: datetime
    updated_at: datetime
    details: dict[str, Any]


class LifecycleDetailOut(LifecycleOut):
    dispatches: list[DispatchOut]


class LifecyclePage(BaseModel):
    items: list[LifecycleOut]
    next_cursor: str | None
