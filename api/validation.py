"""Turning request-parsing failures into answers a client can act on.

FastAPI reports every body problem as a 422 validation error. Three of them are not about the fields at all,
and a client fixes them differently, so they get their own status and code:
- the body is not JSON at all (a syntax error): 400 `malformed_json`, naming line, column and character;
- the body is not declared as JSON (`Content-Type` missing, or curl's default form encoding): 415
  `unsupported_media_type`, saying which header to send;
- everything else is a 422 naming the field.
"""

from __future__ import annotations

import email.message
import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.errors import envelope

VALIDATION_CODES = {
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
    "json_invalid": "malformed_json",
    "model_attributes_type": "invalid_body",
    "dict_type": "invalid_body",
}


def is_json_content_type(value: str | None) -> bool:
    """`application/json` or any `application/*+json`, parameters (charset) allowed."""
    if not value:
        return False
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _json_position(exc: RequestValidationError, first: dict[str, Any]) -> str:
    """`line L, column C (char N)` of a JSON syntax error; FastAPI keeps the document in `exc.body`."""
    loc = first.get("loc", ())
    pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    reason = str((first.get("ctx") or {}).get("error") or "invalid JSON")
    doc = exc.body if isinstance(exc.body, str) else None
    if pos is None or doc is None:
        return reason
    located = json.JSONDecodeError(reason, doc, pos)  # computes lineno/colno from the document
    return f"{reason} at line {located.lineno}, column {located.colno} (char {pos})"


def _has_body_error(errors: list[Any]) -> bool:
    return any(tuple(e.get("loc", ()))[:1] == ("body",) for e in errors)


def validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    first = errors[0] if errors else {"type": "invalid", "loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        message = f"the body is not valid JSON: {_json_position(exc, first)}"
        return JSONResponse(envelope(error=message, error_code="malformed_json"), status_code=400)
    content_type = request.headers.get("content-type")
    if _has_body_error(errors) and not is_json_content_type(content_type):
        # FastAPI only parses JSON it was told is JSON; anything else reaches the model as raw bytes and reads
        # as "Input should be a valid dictionary", which hides the real problem: the header.
        if content_type:
            what = f"Content-Type {content_type.split(';')[0].strip()[:100]!r} is not supported"
        else:
            what = "Content-Type is missing"
        message = f"{what}: send a JSON body with 'Content-Type: application/json' (curl: --json or -H)"
        return JSONResponse(envelope(error=message, error_code="unsupported_media_type"), status_code=415)
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    code = VALIDATION_CODES.get(str(first.get("type", "")), "invalid_field")
    message = f"{where}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    details = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
            "type": e.get("type"),
            "message": e.get("msg"),
        }
        for e in errors[:20]
    ]
    body = envelope(error=message, error_code=code) | {"details": details}
    return JSONResponse(body, status_code=422)
