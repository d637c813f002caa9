"""API keys: create (the key is shown once; only its SHA-256 is stored), list, rotate, revoke. Admin only.

The functions under the handlers are the service code the console calls too."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Admin, DbSession, Reader, key_cache
from api.errors import ApiError, envelope, not_found
from api.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut, Envelope, error_responses
from shared.crypto import hash_api_key, new_api_key
from shared.db.models import ApiKey

router = APIRouter(
    prefix="/v1/keys", tags=["api keys"], responses=error_responses(400, 401, 403, 413, 415, 422, 503)
)


def _out(row: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=row.id,
        name=row.name,
        prefix=row.key_prefix,
        scopes=list(row.scopes),
        project=row.project,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@router.post("", status_code=201, response_model=Envelope[ApiKeyCreated])
def create_key(body: ApiKeyIn, session: DbSession, _: Admin) -> dict[str, Any]:
    """Create a key. The response is the only time the key itself is shown: store it now."""
    return envelope(new_key(session, body.name, body.scopes, body.project).model_dump(mode="json"))


def new_key(session: Session, name: str, scopes: Sequence[str], project: str | None) -> ApiKeyCreated:
    """The one way a key is made (API and console): only its SHA-256 and first characters are stored."""
    raw = new_api_key()
    row = ApiKey(
        id=uuid.uuid4(),
        name=name,
        key_hash=hash_api_key(raw),
        key_prefix=raw[:10],
        scopes=sorted(set(scopes)),
        project=project,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return ApiKeyCreated(**_out(row).model_dump(), key=raw)


@router.get("", response_model=Envelope[list[ApiKeyOut]])
def list_keys(session: DbSession, _: Reader, include_revoked: bool = False) -> dict[str, Any]:
    return envelope([k.model_dump(mode="json") for k in key_list(session, include_revoked=include_revoked)])


def key_list(session: Session, *, include_revoked: bool) -> list[ApiKeyOut]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return [_out(r) for r in session.scalars(stmt)]


@router.delete("/{key_id}", status_code=204, responses=error_responses(404))
def revoke_key(key_id: uuid.UUID, session: DbSession, _: Admin) -> Response:
    """Revoke a key (idempotent). This process forgets it at once; other API processes within
    `KEY_CACHE_TTL_S` seconds (api/deps.py)."""
    revoke(session, key_id)
    return Response(status_code=204)


def revoke(session: Session, key_id: uuid.UUID) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise not_found("API key")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.commit()
    key_cache.forget(row.key_hash)
    return row


@router.post(
    "/{key_id}/rotate",
    status_code=201,
    response_model=Envelope[ApiKeyCreated],
    responses=error_responses(404, 409),
)
def rotate_key(key_id: uuid.UUID, session: DbSession, _: Admin) -> dict[str, Any]:
    """Replace a key: a new key with the same name, scopes and project (shown once), and the old one revoked
    in the same transaction. A revoked key cannot be rotated (409 `key_revoked`): create a new one."""
    return envelope(rotate(session, key_id).model_dump(mode="json"))


def rotate(session: Session, key_id: uuid.UUID) -> ApiKeyCreated:
    row = session.scalar(select(ApiKey).where(ApiKey.id == key_id).with_for_update())
    if row is None:
        raise not_found("API key")
    if row.revoked_at is not None:
        raise ApiError(409, "key_revoked", "this key is revoked; create a new key instead")
    raw = new_api_key()
    new = ApiKey(
        id=uuid.uuid4(),
        name=row.name,
        key_hash=hash_api_key(raw),
        key_prefix=raw[:10],
        scopes=list(row.scopes),
        project=row.project,
    )
    row.revoked_at = datetime.now(UTC)
    session.add(new)
    session.commit()
    session.refresh(new)
    key_cache.forget(row.key_hash)
    return ApiKeyCreated(**_out(new).model_dump(), key=raw)
