"""Route bodies and the explain (dry-run) bodies: what a route is made of, the checks on its event-type
patterns, and what `/v1/routes/explain` answers. Kept apart from api/schemas.py so neither module grows past
its size; the shared building blocks (Strict, Input, Name) stay there."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from api.schemas import Input, Name, Strict
from shared.events import OPERATIONAL_KIND, OPERATIONAL_TYPES, PIPELINE_TYPES, RELEASE_TYPES, route_severity
from shared.routing import EVENT_KINDS, expand_type_pattern

Severity = Literal["info", "warning", "error", "critical"]
#: A route's minimum severity in either vocabulary: Herald's scale, or the gateway's (PushGo) low/normal/high,
#: stored on Herald's scale (shared.events.route_severity: low -> info, normal -> warning, high -> error).
RouteSeverity = Literal["info", "warning", "error", "critical", "low", "normal", "high"]
EventTypePattern = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z_.*|]+$")]
FilterValue = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
KNOWN_TYPES = (*RELEASE_TYPES, *PIPELINE_TYPES, *OPERATIONAL_TYPES)


def check_type_pattern(pattern: str) -> str:
    """Refuse patterns that can never match (a typo would silently route nothing)."""
    alternatives = expand_type_pattern(pattern)
    if not alternatives:
        raise ValueError(f"event type pattern {pattern!r} is empty")
    for alt in alternatives:
        kind = alt.split(".", 1)[0]
        if kind not in EVENT_KINDS and kind != "*":
            raise ValueError(f"event type {alt!r}: kind must be one of {', '.join(EVENT_KINDS)}")
        if (
            kind in ("release", "pipeline", OPERATIONAL_KIND)
            and "*" not in alt
            and "." in alt
            and alt not in KNOWN_TYPES
        ):
            known = ", ".join(t for t in KNOWN_TYPES if t.startswith(kind + "."))
            raise ValueError(f"unknown event type {alt!r}; known: {known}")
    return pattern


class RouteIn(Strict):
    integration_id: uuid.UUID = Field(json_schema_extra={"format": "uuid"})
    project: Name | None = None
    environments: Annotated[list[Name], Field(max_length=50)] = []
    #: `release.*`, `pipeline.success|failure`, `release.created`, or a bare kind (`incident`); empty = all
    event_types: Annotated[list[EventTypePattern], Field(max_length=50)] = []
    min_severity: RouteSeverity = "info"
    #: pipeline events only; empty = all current and future (seed 003)
    apps: Annotated[list[FilterValue], Field(max_length=100)] = []
    clusters: Annotated[list[FilterValue], Field(max_length=100)] = []
    pipelines: Annotated[list[FilterValue], Field(max_length=100)] = []
    #: one message per lifecycle (incident, thing, release, pipeline run), edited where the vendor allows;
    #: false = every state is a new message
    edit_in_place: bool = True

    @model_validator(mode="before")
    @classmethod
    def _uuid_from_json(cls, data: Any) -> Any:
        # strict mode would refuse a UUID given as a JSON string; accept the string form explicitly
        if isinstance(data, dict) and isinstance(data.get("integration_id"), str):
            with contextlib.suppress(ValueError):
                data = {**data, "integration_id": uuid.UUID(data["integration_id"])}
        return data

    @field_validator("event_types")
    @classmethod
    def _types_known(cls, value: list[str]) -> list[str]:
        return [check_type_pattern(p) for p in value]

    @field_validator("min_severity")
    @classmethod
    def _on_route_scale(cls, value: str) -> str:
        return route_severity(value)


class RouteOut(BaseModel):
    id: uuid.UUID
    integration_id: uuid.UUID
    project: str | None
    environments: list[str]
    event_types: list[str]
    min_severity: str
    apps: list[str]
    clusters: list[str]
    pipelines: list[str]
    edit_in_place: bool
    created_at: datetime


class ExplainIn(Input):
    """A sample event, exactly as it would be posted to `/v1/events/{kind}`."""

    kind: Literal["release", "pipeline"]
    event: dict[str, Any]


class ExplainRoute(BaseModel):
    route_id: uuid.UUID
    integration_id: uuid.UUID
    integration_name: str
    provider: str
    matched: bool
    #: why the route does not match (null when it does)
    reason: str | None
    #: what the delivery would be: `pending` (sent), `skipped` (integration disabled), or null (no match, or an
    #: earlier route already leads to this integration)
    would_deliver: Literal["pending", "skipped"] | None
    #: the body the provider would send (secrets never included); null when not matched
    preview: dict[str, Any] | None
    preview_error: str | None = None


class ExplainOut(BaseModel):
    event_type: str
    severity: str
    project: str
    routes: list[ExplainRoute]
    #: integrations that would get a delivery, each once
    integrations: list[uuid.UUID]
