"""Console form input: the API's request models validate it, so a bad field gets the API's own 422 message.

Browsers send empty strings for empty fields and no zone with `datetime-local`; these helpers turn form
values into what the API's models and query functions take (None, UTC times, UUIDs), raising the same
`ApiError` (422, `error_code`, "field: message") the JSON API answers, for `pages.field_errors` to place.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from api.errors import ApiError
from api.validation import field_error

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """`data` (empty fields left out) validated by the API's model, or the API's 422 as an ApiError."""
    try:
        return model.model_validate({k: v for k, v in data.items() if v not in ("", None)})
    except ValidationError as exc:
        code, message = field_error(exc.errors())
        raise ApiError(422, code, message) from None


def text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def uuid_field(name: str, value: str | None) -> uuid.UUID | None:
    value = text(value)
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(422, "invalid_field", f"{name}: Input should be a valid UUID") from None


def utc_field(name: str, value: str | None) -> datetime | None:
    """A `datetime-local` value (no zone: the console's times are UTC) or an ISO time with a zone."""
    value = text(value)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(422, "invalid_field", f"{name}: give a time as YYYY-MM-DDTHH:MM (UTC)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def local_value(value: datetime | None) -> str:
    """A time as a `datetime-local` input shows it (UTC, to the minute)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if value else ""
