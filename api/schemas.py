"""Request and response bodies. Strict: unknown fields are rejected, strings are bounded."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from shared.db.models import IDEMPOTENCY_KEY_MAX_CHARS

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Url = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://\S+$")]
OpId = Annotated[
    str, StringConstraints(min_length=1, max_length=IDEMPOTENCY_KEY_MAX_CHARS, pattern=r"^[\x21-\x7e]+$")
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Input(BaseModel):
    """A management request body: unknown fields rejected; UUIDs and times parsed from their JSON strings,
    booleans and integers strict (no "yes" for true)."""

    model_config = ConfigDict(extra="forbid")


T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """Every JSON answer: `data` on success, `error` and a machine-readable `error_code` on failure."""

    success: bool
    data: T | None
    error: str | None
    error_code: str | None


class ErrorDetail(BaseModel):
    field: str
    type: str | None
    message: str | None


class ErrorOut(BaseModel):
    success: Literal[False]
    data: None
    error: str
    error_code: str
    details: list[ErrorDetail] | None = None


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "the body is not valid JSON (`malformed_json`; the message names line and column)",
        401: "missing or invalid API key (`unauthorized`)",
        403: "the key lacks the scope (`forbidden`)",
        404: "no such resource (`not_found`)",
        409: "conflicts with the current state",
        413: "request body too large (`body_too_large`)",
        415: "the body is not declared as JSON (`unsupported_media_type`): send Content-Type: application/json",
        422: "invalid input; `error` names the field",
        502: "the vendor refused or failed the exchange",
        503: "database or queue unavailable; retry later",
    }
    return {code: {"model": ErrorOut, "description": what.get(code, "error")} for code in codes}


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
    #: 0 = the current attempt budget; n = from before the n-th most recent redrive
    redrives_ago: int = 0
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


class DeliveryDetailOut(DeliveryOut):
    """A delivery with what it carried: for an integration's Recent deliveries panel."""

    event_id: uuid.UUID
    event_type: str
    project: str
    environment: str | None
    created_at: datetime
    updated_at: datetime


class DeliveryPage(BaseModel):
    items: list[DeliveryDetailOut]
    #: pass as `cursor` for the next (older) page; null at the end
    next_cursor: str | None


class RouteVerdictOut(BaseModel):
    route_id: uuid.UUID
    integration_id: uuid.UUID
    integration_name: str
    #: why this route does not lead the event to its integration (routes as they are now); null if it does
    reason: str | None


class NoDeliveriesOut(BaseModel):
    """Why an event has no deliveries (shown only then)."""

    #: `not_fanned_out` (the workers have not planned it yet), `no_routes`, `no_route_matches`,
    #: `integration_disabled`, or `routes_changed` (a route matches now that did not at fan-out)
    code: Literal["not_fanned_out", "no_routes", "no_route_matches", "integration_disabled", "routes_changed"]
    message: str
    routes: list[RouteVerdictOut]


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
    #: set only when `deliveries` is empty: why (the same rules as POST /v1/routes/explain)
    no_deliveries: NoDeliveriesOut | None = None


class IntegrationIn(Strict):
    name: Name
    provider: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    project: Name | None = None
    enabled: bool = True
    config: dict[str, Any]
    retry_max_retries: Annotated[int, Field(ge=0, le=20)] | None = None
    retry_base_delay_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    # Pacing: this destination's sends per second and burst (null: the provider's documented default)
    pace_per_s: Annotated[float, Field(gt=0, le=10000)] | None = None
    pace_burst: Annotated[int, Field(ge=1, le=1000)] | None = None


class IntegrationPatch(Input):
    """Only the fields given change. In `config`, secret fields left out, or sent back masked as the API shows
    them, keep their stored value; other config fields left out keep theirs too."""

    name: Name | None = None
    project: Name | None = None
    enabled: StrictBool | None = None
    config: dict[str, Any] | None = None
    retry_max_retries: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    retry_base_delay_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    pace_per_s: Annotated[float, Field(gt=0, le=10000)] | None = None
    pace_burst: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None


#: the window `recent_outcomes` counts over
RECENT_OUTCOMES_WINDOW_S = 86400


class RecentOutcomes(BaseModel):
    """What became of the deliveries created in the last `window_s` seconds, by their state now: an
    integration whose every delivery dies shows it here, even while its `failing` flag is clear."""

    window_s: int = RECENT_OUTCOMES_WINDOW_S
    delivered: int = 0
    retrying: int = 0
    dead: int = 0


class CircuitOut(BaseModel):
    """The integration's circuit (docs/operations.md, Circuits): `open` holds its deliveries (no attempts used)
    while a probe goes out at `next_probe_at`; `half_open` while the probe is in flight (`next_probe_at` is
    then its deadline). `since`: when it stopped being closed, or when it closed."""

    state: Literal["closed", "open", "half_open"]
    reason: str | None
    since: datetime
    next_probe_at: datetime | None


class IntegrationOut(BaseModel):
    id: uuid.UUID
    name: str
    provider: str
    project: str | None
    enabled: bool
    #: why Herald disabled it (its circuit stayed open too long); null when enabled or disabled by hand
    disabled_reason: str | None = None
    failing: bool
    failing_reason: str | None
    circuit: CircuitOut
    config: dict[str, Any]
    retry_max_retries: int | None
    retry_base_delay_s: float | None
    pace_per_s: float | None = None
    pace_burst: int | None = None
    created_at: datetime
    updated_at: datetime
    recent_outcomes: RecentOutcomes


class IntegrationSaved(IntegrationOut):
    #: dead letters re-queued because the config was saved (seed 001), or queued as a background job
    redriven: int = 0
    redrive_job_id: uuid.UUID | None = None


class TestSent(BaseModel):
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    #: false if Redis did not take the task; the sweeper then sends it within a sweep interval
    published: bool


DeadLetterState = Literal["dead", "skipped"]


class DeadLetterOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    integration_id: uuid.UUID
    integration_name: str
    provider: str
    project: str
    event_type: str
    state: str
    reason: str | None
    last_error_class: str | None
    last_error_detail: str | None
    #: null: a dead or skipped delivery has no next attempt until it is redriven
    next_attempt_at: datetime | None = None
    attempt_count: int
    created_at: datetime
    updated_at: datetime


class DeadLetterList(BaseModel):
    items: list[DeadLetterOut]
    #: every match of the filter (not just this page), by reason (`skipped` rows count under "skipped")
    counts_by_reason: dict[str, int]
    total: int
    next_cursor: str | None


class DeadLetterSelect(Input):
    """Which dead letters: by `ids`, or by filters (all given filters must hold). An empty selection is refused
    unless `all` is true, so a forgotten filter cannot redrive or purge everything by accident."""

    ids: Annotated[list[uuid.UUID], Field(max_length=1000)] = []
    integration_id: uuid.UUID | None = None
    provider: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    project: Name | None = None
    reason: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    since: datetime | None = None
    until: datetime | None = None
    states: Annotated[list[DeadLetterState], Field(min_length=1, max_length=2)] = ["dead"]
    all: StrictBool = False


class BulkResult(BaseModel):
    action: Literal["redrive", "purge"]
    #: rows matching the selection when the request was made
    matched: int
    #: rows re-queued (redrive) or deleted (purge) so far; equals the total when `state` is `done`
    processed: int
    state: Literal["queued", "running", "done", "failed"]
    #: set when the set was large and runs in the background: poll GET /v1/dead-letters/jobs/{job_id}
    job_id: uuid.UUID | None = None


class BulkJobOut(BaseModel):
    id: uuid.UUID
    action: str
    state: str
    matched: int
    processed: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


Scope = Literal["admin", "ingest", "read"]


class ApiKeyIn(Input):
    name: Name
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=3)]
    #: ingest keys only: the one project this key may post events for
    project: Name | None = None

    @model_validator(mode="after")
    def _project_for_ingest_only(self) -> ApiKeyIn:
        if self.project is not None and set(self.scopes) != {"ingest"}:
            raise ValueError("project binding is for ingest-only keys")
        return self


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    #: the first characters of the key, to recognise it; the key itself is never shown again
    prefix: str
    scopes: list[str]
    project: str | None
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    #: shown once, here; only its hash is stored
    key: str
