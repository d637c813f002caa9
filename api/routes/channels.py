"""Gateway channels: create (the generated password is shown once; only a scrypt hash is stored), list,
rotate the password, delete. Admin only. A rotate or delete takes effect at once in this API process and
within `HERALD_GATEWAY_CHANNEL_CACHE_TTL_S` in the others (shared/channels.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

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


@router.post("", status_code=201, response_model=Envelope[ChannelCreated], responses=error_responses(409))
def create_channel(body: ChannelIn, session: DbSession, _: Admin) -> dict[str, Any]:
    """Create a channel. A generated password is in this response only: store it now."""
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
    created = ChannelCreated(**_out(row).model_dump(), password=None if body.password else password)
    return envelope(created.model_dump(mode="json"))


@router.get("", response_model=Envelope[list[ChannelOut]])
def list_channels(session: DbSession, _: Reader, project: str | None = None) -> dict[str, Any]:
    stmt = select(Channel).where(Channel.deleted_at.is_(None)).order_by(Channel.created_at, Channel.id)
    if project is not None:
        stmt = stmt.where(Channel.project == project)
    return envelope([_out(r).model_dump(mode="json") for r in session.scalars(stmt)])


def _live(session: DbSession, channel_id: str) -> Channel:
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
    row = _live(session, channel_id)
    password = (body.password if body else None) or new_password()
    row.password_hash = hash_password(password)
    row.version += 1
    row.updated_at = datetime.now(UTC)
    session.commit()
    session.refresh(row)
    _forget(request, channel_id)
    generated = body is None or body.password is None
    created = ChannelCreated(**_out(row).model_dump(), password=password if generated else None)
    return envelope(created.model_dump(mode="json"))


@router.delete("/{channel_id}", status_code=204, responses=error_responses(404))
def delete_channel(channel_id: str, request: Request, session: DbSession, _: Admin) -> Response:
    """Delete a channel: its calls are refused from now on; its incidents and things stay readable."""
    row = _live(session, channel_id)
    row.deleted_at = datetime.now(UTC)
    row.version += 1
    session.commit()
    _forget(request, channel_id)
    return Response(status_code=204)
