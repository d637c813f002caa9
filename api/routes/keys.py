"""API keys: create (the key is shown once; only its SHA-256 is stored), list, revoke. Admin only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select

from api.deps import Admin, DbSession, Reader, key_cache
from api.errors import envelope, not_found
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
    raw = new_api_key()
    row = ApiKey(
        id=uuid.uuid4(),
        name=body.name,
        key_hash=hash_api_key(raw),
        key_prefix=raw[:10],
        scopes=sorted(set(body.scopes)),
        project=body.project,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    created = ApiKeyCreated(**_out(row).model_dump(), key=raw)
    return envelope(created.model_dump(mode="json"))


@router.get("", response_model=Envelope[list[ApiKeyOut]])
def list_keys(session: DbSession, _: Reader, include_revoked: bool = False) -> dict[str, Any]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return envelope([_out(r).model_dump(mode="json") for r in session.scalars(stmt)])


@router.delete("/{key_id}", status_code=204, responses=error_responses(404))
def revoke_key(key_id: uuid.UUID, session: DbSession, _: Admin) -> Response:
    """Revoke a key (idempotent). This process forgets it at once; other API processes within
    `KEY_CACHE_TTL_S` seconds (api/deps.py)."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise not_found("API key")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.commit()
    key_cache.forget(row.key_hash)
    return Response(status_code=204)
