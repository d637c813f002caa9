"""Gateway channels: create (the generated password is shown once; only a scrypt hash is stored), list,
rotate the password, delete. Admin only. A rotate or delete takes effect at once in this API process and
within `HERALD_GATEWAY_CHANNEL_CACHE_TTL_S` in the others (shared/channels.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Admin, DbSession, Reader
from api.errors import ApiError, envelope, not_found
from api.gateway.schemas import ChannelCreated, ChannelIn, ChannelOut, RotateIn
from api.schemas import Envelope, error_responses
from shared.channels import VerificationCache, hash_password, new_channel_id, new_password
from shared.db.models import Channel

router = APIRouter(
    prefix="/v1/channels", tags=["gateway channels"], responses=error_responses(400, 401, 403, 413, 422, 503)
)


def _out(row: Channel) -> ChannelOut:
    return ChannelOut(
        channel_id=row.id,
        name=row.name,
        project=row.project,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _forget(request: Request, channel_id: str) -> None:
    cache: VerificationCache | None = getattr(request.app.state, "channel_auth", None)
    if cache is not None:
        cache.forget(channel_id)


def new_channel(session: Session, body: ChannelIn) -> ChannelCreated:
    """Create a channel (the API's and the console's one rule); a generated password is in the answer only."""
    channel_id = body.channel_id or new_channel_id()
    if session.get(Channel, channel_id) is not None:
        # Deleted channels keep their id reserved, so a new channel never inherits an old one's incidents.
        raise ApiError(409, "channel_exists", "a channel with this id exists or existed")
    password = body.password or new_password()
    row = Channel(
        id=channel_id, name=body.name, project=body.project, password_hash=hash_password(password), version=1
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return ChannelCreated(**_out(row).model_dump(), password=None if body.password else password)


@router.post("", status_code=201, response_model=Envelope[ChannelCreated], responses=error_responses(409))
def create_channel(body: ChannelIn, session: DbSession, _: Admin) -> dict[str, Any]:
    """Create a channel. A generated password is in this response only: store it now."""
    return envelope(new_channel(session, body).model_dump(mode="json"))


def live_channels(session: Session, project: str | None = None) -> list[ChannelOut]:
    stmt = select(Channel).where(Channel.deleted_at.is_(None)).order_by(Channel.created_at, Channel.id)
    if project is not None:
        stmt = stmt.where(Channel.project == project)
    return [_out(r) for r in session.scalars(stmt)]


@router.get("", response_model=Envelope[list[ChannelOut]])
def list_channels(session: DbSession, _: Reader, project: str | None = None) -> dict[str, Any]:
    return envelope([c.model_dump(mode="json") for c in live_channels(session, project)])


def _live(session: Session, channel_id: str) -> Channel:
    row = session.get(Channel, channel_id)
    if row is None or row.deleted_at is not None:
        raise not_found("channel")
    return row


@router.post(
    "/{channel_id}/rotate-password", response_model=Envelope[ChannelCreated], responses=error_responses(404)
)
def rotate_password(
    channel_id: str, request: Request, session: DbSession, _: Admin, body: RotateIn | None = None
) -> dict[str, Any]:
    """A new password (given, or generated and shown once); the old one stops working."""
    rotated = rotate_channel(request, session, channel_id, body.password if body else None)
    return envelope(rotated.model_dump(mode="json"))


def rotate_channel(
    request: Request, session: Session, channel_id: str, password: str | None
) -> ChannelCreated:
    row = _live(session, channel_id)
    new = password or new_password()
    row.password_hash = hash_password(new)
    row.version += 1
    row.updated_at = datetime.now(UTC)
    session.commit()
    session.refresh(row)
    _forget(request, channel_id)
    return ChannelCreated(**_out(row).model_dump(), password=None if password else new)


@router.delete("/{channel_id}", status_code=204, responses=error_responses(404))
def delete_channel(channel_id: str, request: Request, session: DbSession, _: Admin) -> Response:
    """Delete a channel: its calls are refused from now on; its incidents and things stay readable."""
    delete_live_channel(request, session, channel_id)
    return Response(status_code=204)


def delete_live_channel(request: Request, session: Session, channel_id: str) -> None:
    row = _live(session, channel_id)
    row.deleted_at = datetime.now(UTC)
    row.version += 1
    session.commit()
    _forget(request, channel_id)
