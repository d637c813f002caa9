"""Every Prometheus metric Herald exports, defined once.

Labels are bounded: event type, provider, outcome, error class, HTTP status code, route template, queue name.
Never a URL, a tenant secret, a project, an event id or a delivery id.

Where they come from:
- the API process: `herald_api_*`, `herald_events_accepted_total`, and the state gauges (`herald_queue_*`,
  `herald_outbox_*`, `herald_dead_letters`), read from Redis and PostgreSQL at scrape time;
- worker processes (prefork children, aggregated through PROMETHEUS_MULTIPROC_DIR by the worker's metrics
  port): `herald_deliveries_total`, `herald_attempt_*`, `herald_delivery_latency_seconds`, `herald_retries_total`,
  `herald_worker_inflight`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets in seconds: provider calls sit between 50 ms and a few seconds; accept->delivered adds queueing.
_CALL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_E2E_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0)
_API_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# --- API ---------------------------------------------------------------------------------------------------
EVENTS_ACCEPTED = Counter(
    "herald_events_accepted_total",
    "Event submissions by event type and the HTTP status answered (202 accepted, 4xx refused, 503 not stored).",
    ["event_type", "status_code"],
)
API_REQUEST_DURATION = Histogram(
    "herald_api_request_duration_seconds",
    "API request latency by route template, method and status code.",
    ["route", "method", "status_code"],
    buckets=_API_BUCKETS_S,
)

# --- Workers -----------------------------------------------------------------------------------------------
DELIVERIES = Counter(
    "herald_deliveries_total",
    "Delivery outcomes: delivered, retried, dead per attempt; skipped and superseded (a newer state of the "
    "same lifecycle is shown instead; not a failure) without one. error_class is empty unless it failed.",
    ["provider", "outcome", "error_class"],
)
ATTEMPT_DURATION = Histogram(
    "herald_attempt_duration_seconds",
    "Duration of one provider call (one attempt).",
    ["provider"],
    buckets=_CALL_BUCKETS_S,
)
DELIVERY_LATENCY = Histogram(
    "herald_delivery_latency_seconds",
    "Time from the API accepting an event to the provider confirming delivery.",
    ["provider"],
    buckets=_E2E_BUCKETS_S,
)
RETRIES = Counter(
    "herald_retries_total",
    "Retries scheduled, by provider and the number of the attempt that failed.",
    ["provider", "attempt"],
)
WORKER_INFLIGHT = Gauge(
    "herald_worker_inflight",
    "Provider calls in flight on this worker.",
    multiprocess_mode="livesum",
)
FANOUT_DELIVERIES = Counter(
    "herald_fanout_deliveries_total",
    "Delivery rows created by fan-out, by initial state (pending or skipped).",
    ["state"],
)

# --- System state, computed at scrape time from PostgreSQL and Redis ---------------------------------------
# Only the API sets these. Worker processes (multiprocess mode) still export them at 0, so the mode is "max"
# (no pid label) and dashboards read them with max().
QUEUE_DEPTH = Gauge(
    "herald_queue_depth",
    "Messages waiting on a Redis queue (priority sub-lists summed).",
    ["queue"],
    multiprocess_mode="max",
)
QUEUE_OLDEST_AGE = Gauge(
    "herald_queue_oldest_age_seconds",
    "Age of the oldest delivery published to Redis and not yet claimed by a worker.",
    multiprocess_mode="max",
)
OUTBOX_BACKLOG = Gauge(
    "herald_outbox_backlog", "Accepted events not fanned out yet.", multiprocess_mode="max"
)
OUTBOX_OLDEST_AGE = Gauge(
    "herald_outbox_oldest_age_seconds", "Age of the oldest event not fanned out yet.", multiprocess_mode="max"
)
DEAD_LETTERS = Gauge(
    "herald_dead_letters",
    "Deliveries in the dead-letter set, by provider.",
    ["provider"],
    multiprocess_mode="max",
)
INTEGRATIONS_FAILING = Gauge(
    "herald_integrations_failing",
    "Integrations marked failing (the vendor refused the credentials or the target is gone).",
    multiprocess_mode="max",
)
DELIVERIES_BY_STATE = Gauge(
    "herald_deliveries_in_state",
    "Deliveries currently in each non-final state.",
    ["state"],
    multiprocess_mode="max",
)

# apidata (issue 10): fan-out ids the API did not publish because its buffer was full (Redis slow); the
# events are in PostgreSQL and the sweeper fans them out after HERALD_FANOUT_GRACE_S.
FANOUT_PUBLISH_DROPPED = Counter(
    "herald_api_fanout_publish_dropped_total",
    "Fan-out ids left to the sweeper because the API's publish buffer was full (Redis slow or down).",
)

# pacing (issue 12): deliveries that waited for their destination (not attempts), vendor pauses shared by every
# worker, and limiter checks that fell back to the per-process limit because Redis could not be reached.
PACED_HELD = Gauge(
    "herald_paced_held",
    "Deliveries a worker holds on its own timer for a rate slot a few seconds away (workers/wakeups.py).",
    multiprocess_mode="livesum",
)

BULKHEAD_QUEUED = Gauge(
    "herald_bulkhead_queued",
    "Deliveries a worker queues past a bulkhead's parking places for a destination draining a burst "
    "(workers/pacing.py): unclaimed, each takes the next freed place.",
    multiprocess_mode="livesum",
)

PACED_WAITS = Counter(
    "herald_paced_waits_total",
    "Deliveries that waited for room at their destination instead of sending (no attempt used).",
    ["provider", "reason"],  # reason: rate | paused | bulkhead | circuit (its circuit is open)
)
DESTINATION_PAUSES = Counter(
    "herald_destination_pauses_total",
    "Destinations paused for every worker after the vendor named a wait (429/503 with Retry-After).",
    ["provider"],
)
PACING_FAIL_OPEN = Counter(
    "herald_pacing_fail_open_total",
    "Limiter checks made against the per-process fallback limit because Redis was unavailable.",
)

# circuits (issue 12, shared/circuits.py): integrations by circuit state (API, read from PostgreSQL at scrape
# time), the transitions the workers made, and Herald's own operational events (emitted or rate limited).
CIRCUITS = Gauge(
    "herald_circuits",
    "Enabled integrations by circuit state (closed, open, half_open).",
    ["state"],
    multiprocess_mode="max",
)
CIRCUIT_TRANSITIONS = Counter(
    "herald_circuit_transitions_total",
    "Circuit transitions by the state entered (open, half_open, closed), and auto-disables (disabled).",
    ["to"],
)
OPERATIONAL_EVENTS = Counter(
    "herald_operational_events_total",
    "Herald's operational events (herald.*), emitted or suppressed by the rate limit.",
    ["type", "outcome"],
)
# Every label value exists from the start, at 0: a dashboard or an alert over these has a series before the
# first transition (and increase() sees the first one).
for _to in ("open", "half_open", "closed", "disabled"):
    CIRCUIT_TRANSITIONS.labels(_to)
