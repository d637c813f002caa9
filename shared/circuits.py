"""The circuit of an integration: every decision about it, as pure functions of its state, the evidence and the
time (workers/circuits.py reads and writes the rows and calls these).

```
closed --N consecutive retryable failures, or one auth/target error--> open
open --probe due (the sweeper sends the oldest unfinished delivery)--> half_open
half_open --the probe (or any send) succeeds--> closed      (the backlog is released in order)
half_open --the probe fails, or its deadline passes--> open (the next probe further away)
open --any send claimed before it opened succeeds--> closed
open|half_open for longer than auto_disable_after_s --> the integration is disabled (its work `skipped`)
```

While it is not closed, its deliveries wait (`waiting`, no attempt used, retry budget kept) until the next
probe and a hold after it; only the probe is let through. The probe is a real delivery and uses one of its own
attempts. `since` is when the circuit stopped being closed (an open episode), or when it closed.
Probe intervals grow: base, base*factor, ... capped at max, scaled by the retry policy's time scale.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from shared.config import Settings
from shared.db.models import Integration


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: the longest reason text stored (the column's size)
REASON_MAX_CHARS = 200


@dataclass(frozen=True)
class Circuit:
    state: CircuitState
    since: datetime
    reason: str | None = None
    #: consecutive retryable failures while closed
    failures: int = 0
    #: failed probes of this open episode
    probes: int = 0
    #: open: when the next probe is due; half_open: the probe's deadline
    probe_at: datetime | None = None
    #: half_open: the delivery sent as the probe
    probe_id: uuid.UUID | None = None

    @property
    def is_clean(self) -> bool:
        """Closed with no failure counted: a success changes nothing (no write needed)."""
        return self.state == CircuitState.CLOSED and self.failures == 0


@dataclass(frozen=True)
class CircuitPolicy:
    failure_threshold: int = 5
    probe_base_s: float = 5.0
    probe_factor: float = 2.0
    probe_max_s: float = 600.0
    hold_s: float = 300.0
    time_scale: float = 1.0
    #: the least time a probe gets before it counts as lost (it must be published, claimed and sent)
    probe_timeout_s: float = 60.0
    auto_disable_after_s: float = 3 * 86400.0

    @classmethod
    def from_settings(cls, settings: Settings) -> CircuitPolicy:
        return cls(
            failure_threshold=settings.circuit_failure_threshold,
            probe_base_s=settings.circuit_probe_base_s,
            probe_factor=settings.circuit_probe_factor,
            probe_max_s=settings.circuit_probe_max_s,
            hold_s=settings.circuit_hold_s,
            time_scale=settings.retry_time_scale,
            # A probe's longest life: its send deadline plus the lease the sweeper gives a vanished send.
            probe_timeout_s=settings.send_timeout_s + settings.sending_lease_s,
            auto_disable_after_s=settings.circuit_auto_disable_after_s,
        )

    def probe_delay_s(self, failed_probes: int) -> float:
        """Seconds from opening (or from a failed probe) to the next probe."""
        unscaled = min(self.probe_base_s * self.probe_factor ** max(failed_probes, 0), self.probe_max_s)
        return unscaled * self.time_scale


@dataclass(frozen=True)
class Evidence:
    """What one recorded batch says about one integration. Attempts the vendor paced (429/503 naming its
    wait) and failures that are the event's fault (an invalid payload) are not evidence either way."""

    successes: int = 0
    #: retryable failures (unavailable, timeout, a 429 without a wait)
    failures: int = 0
    #: the last retryable failure, in words
    failure_reason: str | None = None
    #: a permanent error that says the integration itself is broken (auth, target gone, config), in words
    permanent: str | None = None
    #: the deliveries that failed (either way): while half open only the probe's own failure counts
    failed_ids: frozenset[uuid.UUID] = frozenset()


def closed(now: datetime) -> Circuit:
    return Circuit(CircuitState.CLOSED, since=now)


def _opened(circuit: Circuit, reason: str, now: datetime, policy: CircuitPolicy, probes: int) -> Circuit:
    since = now if circuit.state == CircuitState.CLOSED else circuit.since
    return Circuit(
        CircuitState.OPEN,
        since=since,
        reason=reason[:REASON_MAX_CHARS],
        failures=circuit.failures,
        probes=probes,
        probe_at=now + timedelta(seconds=policy.probe_delay_s(probes)),
    )


def after_results(circuit: Circuit, evidence: Evidence, policy: CircuitPolicy, now: datetime) -> Circuit:
    """The circuit after a batch of outcomes. A permanent integration error outweighs a success in the same
    batch (as it does for the `failing` flag); otherwise any success closes the circuit."""
    state = circuit.state
    if state == CircuitState.HALF_OPEN and circuit.probe_id not in evidence.failed_ids:
        # Failures of sends claimed before the probe went out (or of an earlier probe) say nothing new.
        evidence = replace(evidence, failures=0, permanent=None)
    if evidence.permanent is not None:
        if state == CircuitState.OPEN:
            return circuit  # already open: its probe schedule stands
        probes = circuit.probes + 1 if state == CircuitState.HALF_OPEN else 0
        return _opened(circuit, evidence.permanent, now, policy, probes)
    if evidence.successes:
        if circuit.is_clean:
            return circuit
        return replace(circuit, failures=0) if state == CircuitState.CLOSED else closed(now)
    if not evidence.failures:
        return circuit
    if state == CircuitState.HALF_OPEN:
        return _opened(circuit, f"probe failed: {evidence.failure_reason}", now, policy, circuit.probes + 1)
    if state == CircuitState.OPEN:
        return circuit  # sends claimed before it opened, failing as expected
    failures = circuit.failures + evidence.failures
    if failures < policy.failure_threshold:
        return replace(circuit, failures=failures)
    reason = f"{failures} consecutive failures: {evidence.failure_reason}"
    return _opened(replace(circuit, failures=failures), reason, now, policy, 0)


def hold_s(circuit: Circuit, delivery_id: uuid.UUID, policy: CircuitPolicy, now: datetime) -> float | None:
    """None when the delivery may be sent; otherwise how long it waits (not an attempt).

    Held deliveries wait past the next probe by `hold_s`: the probe's success releases them explicitly, so
    they need not come back (and be held again) at every probe."""
    if circuit.state == CircuitState.CLOSED:
        return None
    if circuit.state == CircuitState.HALF_OPEN and circuit.probe_id == delivery_id:
        return None
    until_probe_s = (circuit.probe_at - now).total_seconds() if circuit.probe_at is not None else 0.0
    return max(until_probe_s, 0.0) + policy.hold_s * policy.time_scale


def probe_due(circuit: Circuit, now: datetime) -> bool:
    """Open and its probe is due, or half open and its probe's deadline passed without an outcome."""
    if circuit.state == CircuitState.CLOSED:
        return False
    return circuit.probe_at is None or circuit.probe_at <= now


def probing(circuit: Circuit, probe_id: uuid.UUID | None, policy: CircuitPolicy, now: datetime) -> Circuit:
    """The circuit once its due probe is chosen (`probe_id`), or, with nothing to send, left open until the
    next interval. A half-open circuit whose probe never reported counts that as a failed probe."""
    probes = circuit.probes + 1 if circuit.state == CircuitState.HALF_OPEN else circuit.probes
    if probe_id is None:
        return replace(
            circuit,
            state=CircuitState.OPEN,
            probes=probes,
            probe_id=None,
            probe_at=now + timedelta(seconds=policy.probe_delay_s(probes)),
        )
    deadline_s = max(policy.probe_delay_s(probes), policy.probe_timeout_s)
    return replace(
        circuit,
        state=CircuitState.HALF_OPEN,
        probes=probes,
        probe_id=probe_id,
        probe_at=now + timedelta(seconds=deadline_s),
    )


def probe_now(circuit: Circuit, now: datetime) -> Circuit:
    """Someone saved the integration's config (new credentials, or "try again"): an open circuit probes at the
    next sweep with the shortest interval again, so its success closes it the usual way (the backlog released,
    `recovered` told). `since` stands: a save proves nothing until a send succeeds."""
    if circuit.state == CircuitState.CLOSED:
        return circuit
    return replace(circuit, state=CircuitState.OPEN, probes=0, probe_at=now, probe_id=None)


def should_disable(circuit: Circuit, policy: CircuitPolicy, now: datetime) -> bool:
    """Open (or half open) for longer than the auto-disable limit."""
    if circuit.state == CircuitState.CLOSED:
        return False
    return (now - circuit.since).total_seconds() >= policy.auto_disable_after_s


def next_probe_at(circuit: Circuit) -> datetime | None:
    """What the API shows: when the next probe goes (open), or the probe's deadline (half open)."""
    return None if circuit.state == CircuitState.CLOSED else circuit.probe_at


def circuit_of(row: Integration) -> Circuit:
    """The circuit as stored on its integration row."""
    return Circuit(
        CircuitState(row.circuit_state or CircuitState.CLOSED),
        since=row.circuit_since,
        reason=row.circuit_reason,
        failures=row.circuit_failures or 0,
        probes=row.circuit_probes or 0,
        probe_at=row.circuit_probe_at,
        probe_id=row.circuit_probe_id,
    )


def circuit_values(circuit: Circuit) -> dict[str, object]:
    """The integration columns that store `circuit`."""
    return {
        "circuit_state": str(circuit.state),
        "circuit_since": circuit.since,
        "circuit_reason": circuit.reason,
        "circuit_failures": min(circuit.failures, 32767),
        "circuit_probes": min(circuit.probes, 32767),
        "circuit_probe_at": circuit.probe_at,
        "circuit_probe_id": circuit.probe_id,
    }
