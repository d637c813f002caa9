"""API errors: every failure answers `{"success": false, "data": null, "error": ..., "error_code": ...}`."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(
        self, status_code: int, error_code: str, message: str, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.message = message
        self.headers = headers


def envelope(data: Any = None, *, error: str | None = None, error_code: str | None = None) -> dict[str, Any]:
    return {"success": error is None, "data": data, "error": error, "error_code": error_code}


def unauthorized(message: str = "missing or invalid API key") -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def database_unavailable() -> ApiError:
    return ApiError(
        503,
        "database_unavailable",
        "the database is unreachable; nothing was stored, retry later",
        {"Retry-After": "5"},
    )
