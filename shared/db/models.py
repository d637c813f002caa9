"""The tables. PostgreSQL is the source of truth; Redis only carries work between processes.

Delivery states and every transition between them: shared/deliveries.py (the one module that moves a delivery).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db.rows import event_facts, route_rule
from shared.events import EventFacts
from shared.routing import IntegrationTarget, RouteRule


class Base(DeclarativeBase):
    pass


# The values of shared.deliveries.DeliveryState (which imports this module, hence spelled out here; a unit test
# checks that both agree).
DELIVERY_STATES = ("pending", "sending", "retrying", "delivered", "dead", "skipped", "superseded", "waiting")
SEVERITIES = ("info", "warning", "error", "critical")


# Sized from the API's schemas (api/schemas.py uses these): an op id / Idempotency-Key is at most 128 printable
# characters; the longest lifecycle key is a pipeline's, "pipeline:" + project(100) + ":" + app(100) + ":" +
# pipeline(100) + ":" + image_tag(200) (shared/events.py).
IDEMPOTENCY_KEY_MAX_CHARS = 128
LIFECYCLE_KEY_MAX_CHARS = 512
#: delivery.provider_ref / previous_ref (an email thread's References chain is capped at 995)
PROVIDER_REF_MAX_CHARS = 1024


def _now() -> Any:
    return func.now()


class StringArray(ARRAY[str]):
    """A varchar[] column read as psycopg returns it, a list of str: SQLAlchemy's ARRAY would copy every list of
    every row again, item by item, with nothing to convert (a fan-out's 1,000 routes, five arrays each: 5.4 ms,
    bench/dumpers.py)."""

    cache_ok = True

    # None is TypeEngine's own "nothing to convert"; ARRAY's annotation leaves it out.
    def result_processor(self, dialect: Any, coltype: object) -> None:  # type: ignore[override]
        return None


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, shown in listings so a key can be recognised without revealing it.
    key_prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(StringArray(String(16)))
    project: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Integration(Base):
    __tablename__ = "integration"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(32))
    # NULL = all projects; restricts which routes may point here
    project: Mapped[str | None] = mapped_column(String(100))
    # AES-256-GCM, see shared/crypto.py; the key id is inside the blob and copied here for rotation queries
    config_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    config_key_id: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    failing: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    failing_reason: Mapped[str | None] = mapped_column(String(200))
    # Per-integration retry schedule overrides (NULL = settings default)
    retry_max_retries: Mapped[int | None] = mapped_column(SmallInteger)
    retry_base_delay_s: Mapped[float | None] = mapped_column(Float)
    # Pacing overrides of the destination's default rate (NULL = providers/destinations.py's default)
    pace_per_s: Mapped[float | None] = mapped_column(Float)
    pace_burst: Mapped[int | None] = mapped_column(SmallInteger)
    # The circuit (shared/circuits.py decides, workers/circuits.py applies; migration 0008_circuits). Read with
    # the row every claim loads anyway, so a healthy integration costs no extra query.
    circuit_state: Mapped[str] = mapped_column(String(16), server_default="closed")
    circuit_reason: Mapped[str | None] = mapped_column(String(200))
    # since when the circuit is closed, or (open/half_open) since when it stopped being closed
    circuit_since: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    # consecutive retryable failures while closed
    circuit_failures: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    # failed probes of this open episode: each one lengthens the interval to the next
    circuit_probes: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    # open: when the next probe is due; half_open: the probe's deadline
    circuit_probe_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    circuit_probe_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # why it was disabled automatically (the circuit stayed open too long); NULL when enabled or disabled by hand
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        CheckConstraint("pace_per_s > 0", name="integration_pace_per_s_positive"),
        CheckConstraint("pace_burst >= 1", name="integration_pace_burst_positive"),
        CheckConstraint(
            "circuit_state IN ('closed', 'open', 'half_open')", name="integration_circuit_state_valid"
        ),
        Index(
            "integration_circuit_idx", "circuit_probe_at", postgresql_where=text("circuit_state <> 'closed'")
        ),
    )

    def target(self) -> IntegrationTarget:
        return IntegrationTarget(self.id, self.provider, self.project, self.enabled)


class Route(Base):
    __tablename__ = "route"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    integration_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("integration.id", ondelete="CASCADE"), index=True
    )
    project: Mapped[str | None] = mapped_column(String(100))  # NULL = catch-all
    environments: Mapped[list[str]] = mapped_column(StringArray(String(100)), server_default="{}")
    event_types: Mapped[list[str]] = mapped_column(StringArray(String(64)), server_default="{}")
    min_severity: Mapped[str] = mapped_column(String(16), server_default="info")
    # Pipeline events only (seed 003): empty = all current and future apps, clusters, pipelines.
    apps: Mapped[list[str]] = mapped_column(StringArray(String(100)), server_default="{}")
    clusters: Mapped[list[str]] = mapped_column(StringArray(String(100)), server_default="{}")
    pipelines: Mapped[list[str]] = mapped_column(StringArray(String(100)), server_default="{}")
    # One message per lifecycle, edited in place (issue 11); off = every state is a new message.
    edit_in_place: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (CheckConstraint(f"min_severity IN {SEVERITIES!r}", name="route_min_severity_valid"),)

    def rule(self) -> RouteRule:
        """The route as the pure routing code sees it."""
        return route_rule(self)


class Event(Base):
    __tablename__ = "event"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16))  # release | pipeline | incident
    type: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(100))
    environment: Mapped[str | None] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # As the client sent it; unique per project (event_project_idempotency_key), so tenants never collide.
    idempotency_key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_MAX_CHARS))
    # sha256 of the canonical payload: a reused key with another body is a conflict, not a replay
    request_hash: Mapped[str] = mapped_column(String(64))
    lifecycle_key: Mapped[str | None] = mapped_column(String(LIFECYCLE_KEY_MAX_CHARS))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    fanned_out_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The outbox relay: the sweeper enqueues `fanout` again when this passes and fanned_out_at is still NULL.
    next_fanout_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def facts(self) -> EventFacts:
        """The event as routing and rendering see it."""
        return event_facts(self)

    __table_args__ = (
        Index("event_outbox_idx", "next_fanout_at", postgresql_where=text("fanned_out_at IS NULL")),
        Index("event_project_created_idx", "project", "created_at"),
        # The event listing across projects, newest first (api/queries/events.py; 0008_console_indexes).
        Index("event_created_idx", "created_at", "id"),
        UniqueConstraint("project", "idempotency_key", name="event_project_idempotency_key"),
        # Fan-out looks up the previous delivered message of each lifecycle (workers/tasks/fanout.py).
        Index("event_lifecycle_key_idx", "lifecycle_key"),
    )


class OAuthState(Base):
    """The server-side half of an OAuth connect (api/routes/oauth.py): consumed once by the callback, and only
    by the browser that started it (its cookie's hash is `browser_hash`)."""

    __tablename__ = "oauth_state"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_hash: Mapped[str] = mapped_column(String(64))
    vendor: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(100))
    project: Mapped[str | None] = mapped_column(String(100))
    api_key_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("oauth_state_expires_idx", "expires_at"),)


class Delivery(Base):
    __tablename__ = "delivery"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("event.id", ondelete="CASCADE")
    )
    integration_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("integration.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16))
    attempt_count: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    # When the next attempt is due (pending/retrying), per workers/retry.py.
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    # When a `deliver` message carrying this delivery was last published; NULL = not in flight on Redis.
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # While `sending`: past this, the worker that claimed it is presumed dead.
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error_class: Mapped[str | None] = mapped_column(String(64))
    last_error_detail: Mapped[str | None] = mapped_column(String(500))
    dead_reason: Mapped[str | None] = mapped_column(String(64))
    # The vendor's message reference (Slack `channel:ts`, a Discord message id; for email the thread's
    # References chain, providers/templates/email_thread.py): 1024 since migration 0008_email_thread.
    provider_ref: Mapped[str | None] = mapped_column(String(PROVIDER_REF_MAX_CHARS))
    # The vendor message this delivery should edit in place (the shown message of its lifecycle at the same
    # integration), set when the delivery is claimed (shared/delivery_lifecycles.py).
    previous_ref: Mapped[str | None] = mapped_column(String(PROVIDER_REF_MAX_CHARS))
    # The event's lifecycle key when its route edits in place (migration 0006_lifecycle): the deliveries of one
    # (lifecycle_key, integration) are ordered against each other (shared/delivery_lifecycles.py).
    lifecycle_key: Mapped[str | None] = mapped_column(String(LIFECYCLE_KEY_MAX_CHARS))
    # Multi-target providers (device tokens, recipients): target -> outcome, so a retry skips delivered ones.
    progress: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    # Attempts that were the vendor pacing us (a 429/503 naming its wait): not counted against the budget.
    paced_count: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    # When the current budget's first attempt was claimed (a redrive resets it): pacing is bounded by elapsed time.
    budget_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("event_id", "integration_id", name="delivery_event_integration_key"),
        CheckConstraint(f"state IN {DELIVERY_STATES!r}", name="delivery_state_valid"),
        Index(
            "delivery_due_idx",
            "next_attempt_at",
            postgresql_where=text("state IN ('pending', 'retrying')"),
        ),
        Index("delivery_lease_idx", "lease_expires_at", postgresql_where=text("state = 'sending'")),
        # the sweeper wakes waiting deliveries (pacing) by next_attempt_at
        Index("delivery_waiting_idx", "next_attempt_at", postgresql_where=text("state = 'waiting'")),
        Index("delivery_dead_idx", "integration_id", "updated_at", postgresql_where=text("state = 'dead'")),
        # Dead-letter listings across integrations (newest first) and retention's scan of old delivered rows.
        Index(
            "delivery_dlq_updated_idx", "updated_at", postgresql_where=text("state IN ('dead', 'skipped')")
        ),
        Index("delivery_delivered_at_idx", "delivered_at", postgresql_where=text("state = 'delivered'")),
        # An integration's recent deliveries, newest first (GET /v1/integrations/{id}/deliveries).
        Index("delivery_integration_created_idx", "integration_id", "created_at"),
        # The delivery listing (api/queries/deliveries.py): all of them, or one state, newest first.
        Index("delivery_created_idx", "created_at", "id"),
        Index("delivery_state_created_idx", "state", "created_at", "id"),
        # An integration's unfinished deliveries, oldest first: the circuit's probe and its ordered release.
        Index(
            "delivery_backlog_idx",
            "integration_id",
            "created_at",
            postgresql_where=text("state IN ('pending', 'retrying', 'waiting')"),
        ),
        Index(
            "delivery_lifecycle_idx",
            "lifecycle_key",
            "integration_id",
            postgresql_where=text("lifecycle_key IS NOT NULL"),
        ),
    )


class Attempt(Base):
    __tablename__ = "attempt"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("delivery.id", ondelete="CASCADE")
    )
    attempt_no: Mapped[int] = mapped_column(SmallInteger)
    # A redrive gives the delivery a fresh attempt budget (attempt_count back to 0); its earlier attempts are
    # kept with this bumped, so 0 = the current budget and n = from before the n-th most recent redrive.
    redrives_ago: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column(Float)
    # delivered | retrying | dead, or late: the real outcome of a send the sweeper had recorded as worker_lost,
    # arriving after its lease (kept as history; the delivery had moved on)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(64))
    # Redacted and capped; see providers/_http.py
    response_excerpt: Mapped[str | None] = mapped_column(Text)

    # The workers insert attempts ON CONFLICT ON CONSTRAINT attempt_delivery_no_key: the name is the contract.
    __table_args__ = (
        UniqueConstraint("delivery_id", "redrives_ago", "attempt_no", name="attempt_delivery_no_key"),
    )


class OperationalNotice(Base):
    """When an operational event (shared/events.py OPERATIONAL_TYPES) was last emitted about a subject (an
    integration, a project): what rate limits them across every process (workers/opsevents.py)."""

    __tablename__ = "operational_notice"

    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    emitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BulkJob(Base):
    """A dead-letter redrive or purge too large for one request, run by `workers/tasks/redrive.py`."""

    __tablename__ = "bulk_job"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    action: Mapped[str] = mapped_column(String(16))  # redrive | purge
    # The dead-letter filter (shared/deliveries.py), with `until` fixed at creation so the set is a snapshot.
    filters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(16), server_default="queued")  # queued|running|done|failed
    matched: Mapped[int] = mapped_column(Integer, server_default="0")
    processed: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("action IN ('redrive', 'purge')", name="bulk_job_action_valid"),
        CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name="bulk_job_state_valid"),
    )


# --- Gateway (issue 11): channels, incident/thing lifecycles, dispatches (migration 0005_gateway) ---


class Channel(Base):
    """A PushGo-compatible ingest credential bound to one project; the password only as a scrypt hash."""

    __tablename__ = "channel"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    project: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    # Bumped by every rotate and delete: the per-process verification cache is keyed by it.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    # Soft delete: the id stays reserved so a new channel cannot take over an old one's incidents.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("channel_project_idx", "project"),)


class GatewayLifecycle(Base):
    """The current state of an incident (PushGo Event) or a Thing, merged from its dispatches."""

    __tablename__ = "gateway_lifecycle"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16))  # incident | thing
    object_id: Mapped[str] = mapped_column(String(64))  # the event_id or thing_id
    channel_id: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(100))
    title: Mapped[str | None] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(String(4096))
    status: Mapped[str | None] = mapped_column(String(24))
    message: Mapped[str | None] = mapped_column(String(512))
    severity: Mapped[str | None] = mapped_column(String(16))  # PushGo vocabulary: critical|high|normal|low
    state: Mapped[str] = mapped_column(String(16))  # open|closed (incident), active|archived|deleted (thing)
    is_open: Mapped[bool] = mapped_column(Boolean)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    # tags, images, metadata, external_ids, primary_image, location: the rest of the current state
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_sequence: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        UniqueConstraint("kind", "object_id", name="gateway_lifecycle_kind_object_key"),
        CheckConstraint("kind IN ('incident', 'thing')", name="gateway_lifecycle_kind_valid"),
        Index("gateway_lifecycle_list_idx", "kind", "created_at", "id"),
        Index("gateway_lifecycle_channel_idx", "kind", "channel_id", "created_at", "id"),
        Index("gateway_lifecycle_project_idx", "kind", "project", "created_at", "id"),
    )


class GatewayDispatch(Base):
    """One accepted gateway call: its op_id (idempotency per channel), answer, lifecycle sequence and event."""

    __tablename__ = "gateway_dispatch"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    channel_id: Mapped[str] = mapped_column(String(64))
    op_id: Mapped[str] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(32))
    # sha256 of the route and the canonical body without the password: same op_id + other body = 409
    request_hash: Mapped[str] = mapped_column(String(64))
    lifecycle_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    sequence: Mapped[int | None] = mapped_column(Integer)
    event_row_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    event_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        UniqueConstraint("channel_id", "op_id", name="gateway_dispatch_op_key"),
        Index("gateway_dispatch_lifecycle_idx", "lifecycle_id", "sequence"),
    )


class ConsoleSession(Base):
    """A browser console login (api/console/session.py): the cookie holds a random token, this row only its
    hash, the API key it was exchanged for (re-checked on every request, so revoking the key ends the session)
    and when it expires."""

    __tablename__ = "console_session"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_key.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("console_session_expires_idx", "expires_at"),
        Index("console_session_api_key_idx", "api_key_id"),
    )


# --- the hot path's reads without ORM objects ---------------------------------------------------------------
# Fan-out and claims read events and routes only to route and render them: Core rows of these columns cost a
# fraction of loading mapped instances (identity map, attribute instrumentation), and become the same
# EventFacts / RouteRule as Event.facts() / Route.rule() (shared/db/rows.py).

_event = Event.__table__.c
EVENT_FACT_COLUMNS = (
    _event.id,
    _event.kind,
    _event.type,
    _event.project,
    _event.environment,
    _event.severity,
    _event.payload,
    _event.created_at,
    _event.lifecycle_key,
)


_route = Route.__table__.c
ROUTE_RULE_COLUMNS = (
    _route.id,
    _route.integration_id,
    _route.project,
    _route.environments,
    _route.event_types,
    _route.min_severity,
    _route.apps,
    _route.clusters,
    _route.pipelines,
    _route.edit_in_place,
)
