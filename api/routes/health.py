"""Liveness (`/healthz`: the process answers) and readiness (`/readyz`: PostgreSQL and Redis reachable)."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.errors import envelope

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    return envelope({"status": "ok"})


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["postgresql"] = "ok"
    except Exception as exc:
        checks["postgresql"] = f"unreachable: {type(exc).__name__}"
    try:
        client = redis.Redis.from_url(
            request.app.state.settings.redis_url, socket_connect_timeout=1, socket_timeout=1
        )
        client.ping()
        client.close()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    if ready:
        return JSONResponse(envelope({"ready": True, "checks": checks}))
    return JSONResponse(
        envelope({"ready": False, "checks": checks}, error="not ready", error_code="not_ready"),
        status_code=503,
    )
