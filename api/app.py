"""The FastAPI application factory: `create_app(settings)`; `api.app:app` for uvicorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import console, docs, openapi
from api import metrics as metrics_routes
from api.enqueue import Enqueuer
from api.errors import ApiError, database_unavailable, envelope
from api.ingest import EventStore
from api.metrics import MetricsMiddleware, StateGauges
from api.routes import admin, alertmanager, events, events_batch, gateway, health
from api.validation import validation_response
from shared.config import DEV_ADMIN_KEY, Settings, get_settings
from shared.crypto import KeyRing, hash_api_key
from shared.db.models import ApiKey
from shared.db.session import session_factory
from shared.logging import configure_logging

log = logging.getLogger(__name__)


class BodyLimitMiddleware:
    """Refuse bodies over `max_body_bytes` (or a path's own limit): by Content-Length up front, and by counting
    a chunked stream."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_max_body_bytes = max_body_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_body_bytes = self.path_limits.get(scope.get("path", ""), self.default_max_body_bytes)
        await _LimitedRequest(self.app, max_body_bytes)(scope, receive, send)


class _LimitedRequest:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length: int | None = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = self.max_body_bytes + 1
        if length is not None:
            if length > self.max_body_bytes:
                await self._reject(send)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read the stream up to the limit before the app sees any of it, so an
        # oversized body is a 413 and not an error half-way through parsing.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(
            envelope(error=f"request body exceeds {self.max_body_bytes} bytes", error_code="body_too_large"),
            status_code=413,
        )
        await response({"type": "http"}, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _bootstrap_admin_key(app: FastAPI, settings: Settings) -> None:
    if settings.is_production:
        _revoke_dev_admin_key(app)
    if settings.bootstrap_admin_key is None:
        return
    raw = settings.bootstrap_admin_key.get_secret_value()
    try:
        with app.state.sessions() as session:
            session.execute(
                insert(ApiKey)
                .values(name="bootstrap", key_hash=hash_api_key(raw), key_prefix=raw[:8], scopes=["admin"])
                .on_conflict_do_nothing(index_elements=["key_hash"])
            )
            session.commit()
    except OperationalError:
        log.error("database unreachable at start-up; bootstrap admin key not stored yet")


def _revoke_dev_admin_key(app: FastAPI) -> None:
    """A database that once ran in development may still hold the public development admin key: in production
    it is revoked, not merely no longer bootstrapped."""
    try:
        with app.state.sessions() as session:
            revoked = session.execute(
                update(ApiKey)
                .where(ApiKey.key_hash == hash_api_key(DEV_ADMIN_KEY), ApiKey.revoked_at.is_(None))
                .values(revoked_at=func.now())
            ).rowcount
            session.commit()
        if revoked:
            log.warning("revoked the public development admin key found in the database (production)")
    except OperationalError:
        log.error("database unreachable at start-up; the development admin key was not checked")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_production()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Over uvicorn's own logging config, which is installed by now: HERALD_LOG_FORMAT, URLs redacted.
        configure_logging(settings)
        await app.state.event_store.open()
        _bootstrap_admin_key(app, settings)
        yield
        app.state.enqueuer.close()
        await app.state.event_store.close()

    app = FastAPI(
        title="Herald",
        version="0.1.0",
        description="Queue-backed delivery of release, CI/CD and incident notifications.",
        lifespan=lifespan,
        # served from the installed package by api/docs.py, not from a CDN
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.sessions = session_factory(settings)
    app.state.keyring = KeyRing.parse(settings.encryption_keys.get_secret_value())
    app.state.enqueuer = Enqueuer(settings)
    app.state.event_store = EventStore(settings)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            envelope(error=exc.message, error_code=exc.error_code),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(envelope(error=str(exc.detail), error_code=code), status_code=exc.status_code)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        err = database_unavailable()
        return JSONResponse(
            envelope(error=err.message, error_code=err.error_code), status_code=503, headers=err.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse(envelope(error="internal error", error_code="internal_error"), status_code=500)

    openapi.install(app)
    docs.install(app)
    app.state.state_gauges = StateGauges(settings)
    app.include_router(health.router)
    app.include_router(metrics_routes.router)
    app.include_router(alertmanager.router)  # before events: its `/v1/events/{kind}` catch-all answers 404
    app.include_router(events_batch.router)  # before events: its `/v1/events/{kind}` catch-all answers 404
    app.include_router(events.router)
    app.include_router(admin.router)
    gateway.include(app)
    console.install(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        path_limits={"/v1/events/batch": settings.max_batch_body_bytes},
    )
    app.add_middleware(MetricsMiddleware)
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn api.app:app` builds the app on first access, after the environment is read.
    if name == "app":
        return create_app()
    raise AttributeError(name)
