"""The one `Settings` object: every knob is a `HERALD_*` environment variable.

Built lazily by `get_settings()` so tests (and subprocesses they start) can set the environment first;
`get_settings.cache_clear()` forgets the cached copy.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.crypto import KeyRing

log = logging.getLogger(__name__)

# A development-only key so `make run` works out of the box. `Settings.check_production` refuses it when
# HERALD_ENV=production, and the API logs a warning whenever it is in use.
DEV_ENCRYPTION_KEYS = "dev:ZGV2LW9ubHktMzItYnl0ZS1rZXktZG8tbm90LXVzZSE="
# The admin key `make run` and the README's tour use; public, so production refuses it.
DEV_ADMIN_KEY = "hk_local_dev_admin_key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    env: str = Field("development", description="development | production; production refuses dev defaults")

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/herald"
    # Connections kept per process (as many again may open under bursts); at least worker_concurrency.
    database_pool_size: int = 20
    # apidata (issue 10): bounds on every statement of the API's and workers' connections, so a stalled (not
    # down) PostgreSQL or a held lock answers 503 `database_unavailable` instead of hanging requests.
    database_statement_timeout_s: float = Field(15.0, gt=0)
    database_lock_timeout_s: float = Field(5.0, gt=0)
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_name: str = "herald"

    # "kid:base64(32 bytes),kid2:..." - the first key encrypts, every key decrypts (rotation).
    encryption_keys: SecretStr = SecretStr(DEV_ENCRYPTION_KEYS)
    # Stored hashed at API start-up as an admin key named "bootstrap"; unset means no bootstrap key.
    bootstrap_admin_key: SecretStr | None = None

    max_body_bytes: int = 64 * 1024
    # POST /v1/events/batch: at most this many events, in a body of at most this size (the only larger body).
    max_batch_events: int = Field(500, ge=1)
    max_batch_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # apidata (issue 10): fan-out ids an API process holds for publishing while Redis is slow; beyond this the
    # ids are dropped (counted) and the sweeper fans those events out from PostgreSQL after fanout_grace_s.
    fanout_buffer_max_ids: int = Field(10_000, ge=1)
    # How long the API gathers accepted events into one fan-out message (api/enqueue.py): a lone event waits
    # fanout_linger_s; while events stream in, the wait grows with the batches up to fanout_linger_max_s.
    # Larger batches are fewer statements and messages per event (less CPU), a longer wait is added latency.
    fanout_linger_s: float = Field(0.010, gt=0, le=1.0)
    fanout_linger_max_s: float = Field(0.030, gt=0, le=1.0)

    # Retry schedule (workers/retry.py): first attempt, then max_retries retries after base, base*factor, ...
    retry_base_delay_s: float = 5.0
    retry_factor: float = 2.0
    retry_max_retries: int = 5
    retry_jitter_ratio: float = 0.1
    retry_after_cap_s: float = 3600.0
    # Multiplies every schedule delay (not vendor Retry-After hints): tests run the real schedule fast.
    retry_time_scale: float = 1.0

    # The sweeper (beat) - what makes a lost message, a killed worker or a flushed Redis lose nothing.
    sweep_interval_s: float = 1.0
    fanout_grace_s: float = 5.0  # an event not fanned out this long after commit is re-enqueued
    requeue_after_s: float = 30.0  # a due delivery enqueued this long ago and not claimed is enqueued again
    # A claimed delivery is presumed lost with its worker once its longest allowed attempt (deadline and guard,
    # workers/sending.py) plus this margin has passed: the lease follows the attempt, so no send outlives it.
    sending_lease_s: float = 15.0
    sweep_batch_size: int = 500

    # Each worker's main process serves its pool's aggregated metrics here (0 = any free port, logged;
    # unset = none). Pool children share PROMETHEUS_MULTIPROC_DIR, which the start-up command must set.
    worker_metrics_port: int | None = 9808
    # State gauges (queue depth/age, outbox, dead letters) are read from PostgreSQL and Redis at most this often.
    metrics_state_ttl_s: float = 5.0

    # Worker liveness (workers/health.py, broker helper): the consumer touches its heartbeat file this often.
    worker_heartbeat_interval_s: float = 10.0

    # Tasks a worker process runs at once (Celery threads pool), each a batch of concurrent sends.
    worker_concurrency: int = 32
    deliver_batch_size: int = 50
    # New deliveries a fan-out task claims and sends itself when the process has room (the rest go to Redis as
    # `deliver` batches): one event to a thousand integrations is one transaction and one claim, not twenty
    # tasks each loading the same event, integrations and configs again.
    fanout_inline_max: int = Field(1000, ge=1)
    send_timeout_s: float = 15.0
    http_max_connections: int = 512
    # Outgoing requests to private/loopback/link-local addresses are refused unless listed here.
    # Comma-separated, e.g. HERALD_EGRESS_ALLOW_CIDRS=127.0.0.1/32,10.1.0.0/16
    egress_allow_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A PEM CA bundle trusted besides the system store for TLS the HTTP client does not make (SMTP, APNs over
    # HTTP/2): a private mail relay's CA, or the tests' generated one.
    tls_ca_file: str | None = None

    # SMTP connections per worker process (transport): at most this many open to one relay at once and in
    # total; one idle longer than smtp_idle_s is closed. Waiting for a free connection counts against the send.
    smtp_connections_per_relay: int = Field(4, ge=1, le=64)
    smtp_max_connections: int = Field(64, ge=1, le=4096)
    smtp_idle_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _linger_order(self) -> Settings:
        if self.fanout_linger_max_s < self.fanout_linger_s:
            raise ValueError(
                f"HERALD_FANOUT_LINGER_MAX_S ({self.fanout_linger_max_s:g}) is below HERALD_FANOUT_LINGER_S "
                f"({self.fanout_linger_s:g}): the longest linger cannot be shorter than the shortest"
            )
        return self

    @field_validator("egress_allow_cidrs", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("egress_allow_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    # Management (issue 6). Retention: delivered deliveries (with their attempts) and events left without
    # deliveries are pruned once older than this many days, `retention_batch_size` rows per statement, every
    # `retention_interval_s` (beat). 0 days = keep everything. Dead letters are never pruned: purge them.
    retention_days: float = 30.0
    retention_interval_s: float = 3600.0
    retention_batch_size: int = 5000
    # A dead-letter redrive or purge of more rows than this runs as a background task (bulk_job).
    dlq_inline_limit: int = 1000
    dlq_batch_size: int = 1000
    # OAuth connect (seed 001). The callback URL given to the vendor is
    # `{public_base_url}/v1/oauth/{provider}/callback`; vendor URLs are settings so tests use fake servers.
    public_base_url: str = "http://127.0.0.1:8000"
    oauth_state_ttl_s: float = 600.0
    # Browser console (issue 14): a login lasts this long; the cookie is Secure when public_base_url is https.
    console_session_ttl_s: float = 8 * 3600.0
    oauth_timeout_s: float = 10.0
    slack_client_id: str | None = None
    slack_client_secret: SecretStr | None = None
    slack_authorize_url: str = "https://slack.com/oauth/v2/authorize"
    slack_token_url: str = "https://slack.com/api/oauth.v2.access"  # noqa: S105 (a URL, not a secret)
    discord_client_id: str | None = None
    discord_client_secret: SecretStr | None = None
    discord_authorize_url: str = "https://discord.com/oauth2/authorize"
    discord_token_url: str = "https://discord.com/api/oauth2/token"  # noqa: S105 (a URL, not a secret)

    # Delivery state machine (issue 10, states): pacing bounded by elapsed time, skipped-row retention, sweeper
    # republish deadlines that grow with the backlog, in-flight sends per process.
    rate_limited_max_elapsed_s: float = 3600.0  # a delivery paced (429/503 naming its wait) longer ends dead
    skipped_retention_days: float = 30.0  # skipped deliveries older than this are pruned (0 = keep them)
    republish_max_after_s: float = 600.0  # the longest a sweeper waits before republishing unclaimed work
    inflight_sends_per_process: int = 2000  # sends one worker process holds at once (backpressure beyond)

    # Pacing (issue 12, workers/pacing.py): one limiter per destination in Redis shared by every worker; off sends
    # as fast as the vendor lets us. Without Redis each process paces at this share of the destination's rate.
    pacing_enabled: bool = True
    pacing_fail_open_ratio: float = Field(0.25, gt=0, le=1)
    # A reserved slot is kept this long past its time for the delivery to come back and use it.
    pacing_slot_grace_s: float = Field(30.0, gt=0)
    # A rate wait of at most this long is held on the worker's own timer (workers/wakeups.py), its row due at the
    # slot; a longer one goes to `waiting` for the sweeper (every sweep_interval_s). 0: every wait is the sweeper's.
    pacing_hold_max_s: float = Field(10.0, ge=0)
    # Bulkhead: concurrent sends one process makes to one destination; over it a delivery waits this long.
    bulkhead_sends_per_destination: int = Field(16, ge=1)
    bulkhead_wait_s: float = Field(0.5, gt=0)
    # A destination answering within bulkhead_fast_s earns one more place per answer, up to this cap; a slower
    # answer halves what it earned (a hanging destination keeps the base cap above).
    bulkhead_max_sends_per_destination: int = Field(256, ge=1)
    bulkhead_fast_s: float = Field(1.0, gt=0)
    # Deliveries over the bulkhead held unclaimed in the process for a freed place, per destination (0: none,
    # every one over the cap waits `bulkhead_wait_s` in `waiting`).
    bulkhead_parked_per_destination: int = Field(64, ge=0)
    # Past those, deliveries of a destination draining a burst (answering fast) queued in the process for a freed
    # place, per destination, holding no in-flight room (0: none, they wait `bulkhead_wait_s` in `waiting`).
    bulkhead_backlog_per_destination: int = Field(5000, ge=0)

    # Circuits (issue 12, shared/circuits.py): a circuit per integration opens after this many consecutive
    # retryable failures (at once on an auth/target error); its deliveries then wait (no attempt used) while one
    # probe goes out after base, base*factor, ... capped at max (each scaled by retry_time_scale, as the retry
    # schedule is). Held deliveries are looked at again at least every hold_s (scaled) besides the probe. An
    # integration open longer than auto_disable_after_s (not scaled) is disabled, its work kept as `skipped`.
    circuit_failure_threshold: int = Field(5, ge=1, le=1000)
    circuit_probe_base_s: float = Field(5.0, gt=0)
    circuit_probe_factor: float = Field(2.0, ge=1)
    circuit_probe_max_s: float = Field(600.0, gt=0)
    circuit_hold_s: float = Field(300.0, gt=0)
    circuit_auto_disable_after_s: float = Field(3 * 86400.0, gt=0)
    # Operational events (herald.integration.failing|recovered|disabled, herald.deadletters.growing): the
    # project they carry when the integration they are about is not bound to one; at most one of a type per
    # subject (integration, project) per this interval. deadletters.growing: this many deliveries of a project
    # dead-lettered within the window, checked by the sweeper at most every check interval.
    ops_events_project: str = Field("herald", min_length=1, max_length=100)
    ops_event_min_interval_s: float = Field(900.0, ge=0)
    deadletters_growing_threshold: int = Field(50, ge=1)
    deadletters_growing_window_s: float = Field(600.0, gt=0)
    deadletters_check_interval_s: float = Field(30.0, gt=0)

    # Webhook payload templates (providers/render/sandbox.py): one render stops past this output or this work.
    template_max_output_bytes: int = Field(256 * 1024, ge=1024)
    template_max_render_steps: int = Field(100_000, ge=1000)

    # Logs (issue 16): "text" keeps Celery's and uvicorn's usual lines; "json" prints one JSON object per line
    # (time, level, logger, message, delivery_id/event_id/integration_id) for log pipelines (shared/logging.py).
    log_format: Literal["text", "json"] = "text"
    # Address the worker's metrics endpoint binds: every interface, as a pod needs for Prometheus to scrape it;
    # `make run` sets 127.0.0.1 so a laptop does not expose it.
    worker_metrics_host: str = "0.0.0.0"  # noqa: S104 (deliberate default for containers, see above)

    # Gateway (issue 11, PushGo-compatible routes). When set, every gateway route also needs
    # `Authorization: Bearer <gateway_token>` (PushGo's PUSHGO_TOKEN); channel rows are cached per process
    # this long, so a rotated or deleted channel stops working within it.
    gateway_token: SecretStr | None = None
    gateway_channel_cache_ttl_s: float = 2.0

    @property
    def uses_dev_encryption_key(self) -> bool:
        return self.encryption_keys.get_secret_value() == DEV_ENCRYPTION_KEYS

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def check_production(self) -> None:
        """Refuse to run in production with the development encryption key or the development admin key, and
        refuse malformed encryption keys (duplicate ids included) in any environment, at start-up."""
        KeyRing.parse(self.encryption_keys.get_secret_value())
        if self.is_production and self.uses_dev_encryption_key:
            raise RuntimeError("HERALD_ENCRYPTION_KEYS must be set in production (the dev key is public)")
        bootstrap = self.bootstrap_admin_key.get_secret_value() if self.bootstrap_admin_key else None
        if self.is_production and bootstrap == DEV_ADMIN_KEY:
            raise RuntimeError(
                "HERALD_BOOTSTRAP_ADMIN_KEY is the public development key; set a generated one in production"
            )
        if self.uses_dev_encryption_key:
            log.warning("using the built-in development encryption key; set HERALD_ENCRYPTION_KEYS")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
