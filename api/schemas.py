"""Request and response bodies. Strict: unknown fields are rejected, strings are bounded."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Url = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://\S+$")]
OpId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ReleaseEventIn(Strict):
    """NitroPush's release events (seed 001)."""

    type: Literal["release.created", "release.promoted", "release.rollout_changed"]
    project: Name
    environment: Name
    version: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    mandatory: bool = False
    description: Annotated[str, StringConstraints(max_length=4000)] = ""
    url: Url | None = None
    from_environment: Name | None = None
    rollout_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    previous_rollout_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    op_id: OpId | None = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> ReleaseEventIn:
        if self.type == "release.promoted" and not self.from_environment:
            raise ValueError("release.promoted needs from_environment")
        if self.type == "release.rollout_changed" and self.rollout_percent is None:
            raise ValueError("release.rollout_changed needs rollout_percent")
        if self.type != "release.promoted" and self.from_environment is not None:
            raise ValueError("from_environment is only for release.promoted")
        if self.type != "release.rollout_changed" and (
            self.rollout_percent is not None or self.previous_rollout_percent is not None
        ):
            raise ValueError("rollout_percent is only for release.rollout_changed")
        return self


class PipelineEventIn(Strict):
    """Devtron-style CI/CD pipeline events (seed 003)."""

    app: Name
    project: Name
    environment: Name | None = None
    cluster: Name | None = None
    pipeline: Name
    pipeline_type: Literal["ci", "cd"]
    stage: Literal["trigger", "success", "failure"]
    triggered_by: ShortText | None = None
    image_repo: Annotated[str, StringConstraints(max_length=500)] | None = None
    image_tag: Annotated[str, StringConstraints(max_length=200)] | None = None
    url: Url | None = None
    op_id: OpId | None = None


class EventAccepted(BaseModel):
    event_id: uuid.UUID
    op_id: str
    accepted: bool = True
    duplicate: bool = False


class AttemptOut(BaseModel):
    attempt_no: int
    started_at: datetime
    duration_ms: float
    outcome: str
    status_code: int | None
    error_class: str | None
    response_excerpt: str | None


class DeliveryOut(BaseModel):
    id: uuid.UUID
    integration_id: uuid.UUID
    state: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_error_class: str | None
    last_error_detail: str | None
    dead_reason: str | None
    delivered_at: datetime | None
    attempts: list[AttemptOut]


class EventOut(BaseModel):
    id: uuid.UUID
    kind: str
    type: str
    project: str
    environment: str | None
    severity: str
    payload: dict[str, Any]
    created_at: datetime
    fanned_out_at: datetime | None
    deliveries: list[DeliveryOut]


class IntegrationIn(Strict):
    name: Name
    provider: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    project: Name | None = None
    enabled: bool = True
    config: dict[str, Any]
    retry_max_retries: Annotated[int, Field(ge=0, le=20)] | None = None
    retry_base_delay_s: Annotated[float, Field(gt=0, le=3600)] | None = None


class IntegrationOut(BaseModel):
    id: uuid.UUID
    name: str
    provider: str
    project: str | None
    enabled: bool
    failing: bool
    failing_reason: str | None
    config: dict[str, Any]
    retry_max_retries: int | None
    retry_base_delay_s: float | None
    created_at: datetime
    updated_at: datetime


Severity = Literal["info", "warning", "error", "critical"]
EventTypePattern = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z_.*]+$")]


class RouteIn(Strict):
    integration_id: uuid.UUID = Field(json_schema_extra={"format": "uuid"})
    project: Name | None = None
    environments: Annotated[list[Name], Field(max_length=50)] = []
    event_types: Annotated[list[EventTypePattern], Field(max_length=50)] = []
    min_severity: Severity = "info"

    @model_validator(mode="before")
    @classmethod
    def _uuid_from_json(cls, data: Any) -> Any:
        # strict mode would refuse a UUID given as a JSON string; accept the string form explicitly
        if isinstance(data, dict) and isinstance(data.get("integration_id"), str):
            with contextlib.suppress(ValueError):
                data = {**data, "integration_id": uuid.UUID(data["integration_id"])}
        return data


class RouteOut(BaseModel):
    id: uuid.UUID
    integration_id: uuid.UUID
    project: str | None
    environments: list[str]
    event_types: list[str]
    min_severity: str
    created_at: datetime
