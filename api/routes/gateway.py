"""The PushGo-compatible gateway routes at the API root: `/message`, `/event/{create,update,close}`,
`/thing/{create,update,archive,delete}` (seed 002, reference/pushgo-api.md).

A PushGo client works by changing only its base URL: the same bodies, the same envelope
(`{"success", "data", "error", "error_code"}`), the same status codes (200 with `data.accepted`, 400 for every
validation failure, 401, 404, 413) plus 409 for a reused op_id or a step the lifecycle cannot take.
Order of checks: gateway token (401), body size (413), JSON and every field rule (400), channel id and
password (401, the same answer for an unknown channel and a wrong password), then the dispatch transaction
(404 / 409). The answer is sent once the event row is committed; the fan-out is published after.
"""

from __future__ import annotations

import asyncio
import hmac
import uuid

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from api.errors import ApiError, envelope
from api.gateway.store import GatewayStore, request_hash
from api.gateway.validation import MAX_BODY_BYTES, GatewayInvalid, validate
from api.ingest import EventStore
from api.routes import channels, incidents
from shared.channels import VerificationCache, verify_password
from shared.config import Settings

router = APIRouter(tags=["gateway (PushGo compatible)"])

_ROUTE_DOC = {
    "/message": "A one-off notification (PushGo Message).",
    "/event/create": "Open an incident (PushGo Event); answers its generated `event_id`.",
    "/event/update": "Move an open incident on: status, message, severity, attrs patch.",
    "/event/close": "Close an incident; a second close with the same op_id answers the first close.",
    "/thing/create": "Create a thing (an object with a current state); answers its generated `thing_id`.",
    "/thing/update": "Update a thing's current state (attrs and external_ids are patches).",
    "/thing/archive": "Archive a thing: inactive, history kept; only delete remains.",
    "/thing/delete": "Delete (retire) a thing.",
}


def include(app: FastAPI) -> None:
    """Mount the gateway, channel and incident routers and their per-process state on `app`."""
    settings: Settings = app.state.settings
    app.state.channel_auth = VerificationCache(row_ttl_s=settings.gateway_channel_cache_ttl_s)
    app.include_router(router)
    app.include_router(channels.router)
    app.include_router(incidents.router)


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = envelope(error=message, error_code=code)
    if field is not None:
        body["details"] = [{"field": field, "type": code, "message": message}]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _gateway_token_ok(request: Request, settings: Settings) -> bool:
    if settings.gateway_token is None:
        return True
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    expected = settings.gateway_token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected)


async def _verify(password: str, stored: str) -> bool:
    # scrypt takes tens of milliseconds of CPU: off the event loop, so other requests are served meanwhile.
    return await asyncio.to_thread(verify_password, password, stored)


async def _handle(route: str, request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if not _gateway_token_ok(request, settings):
        return _error(401, "gateway_unauthorized", "missing or invalid gateway token (Authorization: Bearer)")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error(400, "malformed_json", "the body is not valid JSON", "body")
    try:
        fields = validate(route, body)
    except GatewayInvalid as exc:
        return _error(400, exc.error_code, exc.message, exc.field)
    events: EventStore = request.app.state.event_store
    store = GatewayStore(events, settings.fanout_grace_s)
    cache: VerificationCache = request.app.state.channel_auth
    try:
        channel = await cache.authenticate(
            fields["channel_id"], fields["password"], store.load_channel, _verify
        )
        if channel is None:
            return _error(401, "invalid_channel_credentials", "unknown channel or wrong password")
        op_id = fields.get("op_id") or uuid.uuid4().hex
        accepted = await store.dispatch(route, channel, op_id, request_hash(route, body), fields)
    except GatewayInvalid as exc:
        return _error(400, exc.error_code, exc.message, exc.field)
    except ApiError as exc:
        response = _error(exc.status_code, exc.error_code, exc.message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    if accepted.event_row_id is not None:
        request.app.state.enqueuer.fanout(str(accepted.event_row_id))
    return Response(orjson.dumps(envelope(accepted.data)), status_code=200, media_type="application/json")


def _register(path: str) -> None:
    async def endpoint(request: Request) -> Response:
        return await _handle(path, request)

    endpoint.__name__ = "gateway_" + path.strip("/").replace("/", "_")
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        summary=f"POST {path}",
        description=_ROUTE_DOC[path],
        responses={400: {}, 401: {}, 404: {}, 409: {}, 413: {}, 503: {}},
    )


for _path in _ROUTE_DOC:
    _register(_path)
