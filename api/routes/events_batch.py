"""`POST /v1/events/batch`: up to `max_batch_events` release and pipeline events in one request, for backfills
and bursts.

Each item is `{"kind": "release" | "pipeline", ...the fields of that kind's single-event route}` and is
validated, authorised and made idempotent exactly as it would be alone (its `op_id` is its idempotency key).
Every valid item is stored in ONE transaction before the answer (all or none: a database failure is a 503 and
nothing is stored); an invalid one is refused on its own. The answer is 202 with one result per item, in order,
each in the seed-002 envelope of the single-event answer: `{"success", "data", "error", "error_code"}`.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.deps import Principal
from api.errors import ApiError, envelope
from api.ingest import EventStore, NewEvent
from api.routes.events import IngestPrincipal, _op_id
from api.schemas import PipelineEventIn, ReleaseEventIn, error_responses
from api.validation import field_error, is_json_content_type
from shared.events import (
    pipeline_lifecycle_key,
    pipeline_severity,
    release_lifecycle_key,
    release_severity,
)

router = APIRouter(prefix="/v1/events", tags=["events"])

BATCH_KINDS = ("release", "pipeline")


def _item(raw: object, principal: Principal) -> NewEvent:
    """One item as its single-event route would take it, or the ApiError it would answer."""
    if not isinstance(raw, dict):
        raise ApiError(422, "invalid_body", "each event must be a JSON object")
    kind = raw.get("kind")
    fields = {k: v for k, v in raw.items() if k != "kind"}
    if kind == "release":
        release = ReleaseEventIn.model_validate(fields)
        principal.require_project(release.project)
        payload = release.model_dump(mode="json", exclude={"op_id"}, exclude_none=True)
        item = NewEvent(
            "release",
            release.type,
            payload,
            release_severity(release.type, payload),
            release_lifecycle_key(payload),
            _op_id(None, release.op_id),
        )
    elif kind == "pipeline":
        pipeline = PipelineEventIn.model_validate(fields)
        principal.require_project(pipeline.project)
        payload = pipeline.model_dump(mode="json", exclude={"op_id"}, exclude_none=True)
        item = NewEvent(
            "pipeline",
            f"pipeline.{pipeline.stage}",
            payload,
            pipeline_severity(pipeline.stage),
            pipeline_lifecycle_key(payload),
            _op_id(None, pipeline.op_id),
        )
    else:
        raise ApiError(422, "unknown_event_kind", f"kind must be one of {', '.join(BATCH_KINDS)}")
    # PostgreSQL cannot store a NUL in text or JSONB: refused here, so it fails its own item, not the batch.
    if b"\\u0000" in orjson.dumps(item.payload):
        raise ApiError(422, "invalid_field", "a text field contains a character that cannot be stored")
    return item


def _refused(exc: ApiError | ValidationError) -> dict[str, Any]:
    if isinstance(exc, ApiError):
        return envelope(error=exc.message, error_code=exc.error_code)
    # The same code and wording as a single event's 422 (one rule, api/validation.py); the location is
    # relative to the item, `event` when pydantic names none.
    code, message = field_error(exc.errors())
    if message.startswith("body:"):
        message = "event:" + message.removeprefix("body:")
    return envelope(error=message, error_code=code)


def _parse(raw_body: bytes, content_type: str | None, max_events: int) -> list[Any]:
    if not is_json_content_type(content_type):
        raise ApiError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    try:
        body = orjson.loads(raw_body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise ApiError(422, "invalid_body", 'the body must be {"events": [...]}')
    if set(body) != {"events"}:
        extra = sorted(set(body) - {"events"})
        raise ApiError(422, "unknown_field", f"unknown field(s): {', '.join(map(str, extra))[:200]}")
    events: list[Any] = body["events"]
    if not events:
        raise ApiError(422, "empty_batch", "events must hold at least one event")
    if len(events) > max_events:
        raise ApiError(413, "batch_too_large", f"at most {max_events} events per batch, got {len(events)}")
    return events


@router.post("/batch", status_code=202, responses=error_responses(400, 401, 403, 413, 415, 422, 503))
async def post_event_batch(request: Request, principal: IngestPrincipal) -> Response:
    """Several release/pipeline events at once; one result per item, in order."""
    principal.require("ingest")
    settings = request.app.state.settings
    events = _parse(await request.body(), request.headers.get("content-type"), settings.max_batch_events)
    results: list[dict[str, Any] | None] = [None] * len(events)
    valid: list[tuple[int, NewEvent]] = []
    for index, raw in enumerate(events):
        try:
            valid.append((index, _item(raw, principal)))
        except (ApiError, ValidationError) as exc:
            results[index] = _refused(exc)
    store: EventStore = request.app.state.event_store
    stored = await store.accept_many([item for _, item in valid])
    new_ids: list[uuid.UUID] = []
    for (index, item), outcome in zip(valid, stored, strict=True):
        if isinstance(outcome, ApiError):
            results[index] = _refused(outcome)
            continue
        event_id, duplicate = outcome
        if not duplicate:
            new_ids.append(event_id)
        results[index] = envelope(
            {"event_id": str(event_id), "op_id": item.op_id, "accepted": True, "duplicate": duplicate}
        )
    for event_id in new_ids:
        request.app.state.enqueuer.fanout(str(event_id))
    accepted = sum(1 for r in results if r is not None and r["success"])
    body = envelope({"accepted": accepted, "refused": len(events) - accepted, "results": results})
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")
