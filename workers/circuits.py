"""Circuits applied: holding a failing integration's deliveries, recording what outcomes say about it, and the
sweeper's probes and auto-disable. Every decision is shared/circuits.py's; this module reads and writes rows.

Three hooks, each small:
- `holds` (workers/admission.py, at claim): which candidates wait because their circuit is not closed, read from
  the integration rows the claim has loaded anyway (no query of its own);
- `apply_results` (workers/outcomes.py, in the outcome transaction): the circuit after a batch; a success of an
  integration whose circuit was clean when this process loaded it writes nothing (the healthy path);
- `sweep` (workers/tasks/sweep.py): due probes, lost probes, and auto-disable past
  `circuit_auto_disable_after_s`.
Transitions emit operational events (workers/opsevents.py) in the same transaction; metrics, logs and publishes
follow the commit (`Changes.report`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared import deliveries, delivery_circuits, metrics
from shared.circuits import (
    Circuit,
    CircuitPolicy,
    CircuitState,
    Evidence,
    after_results,
    circuit_of,
    circuit_values,
    hold_s,
    next_probe_at,
    probe_due,
    probing,
    should_disable,
)
from shared.config import Settings
from shared.db.models import Integration
from shared.errors import DeliveryError, RateLimited
from shared.events import INTEGRATION_DISABLED, INTEGRATION_FAILING, INTEGRATION_RECOVERED
from workers import opsevents
from workers.opsevents import Notice
from workers.publish import publish_deliver_batches
from workers.runtime import ProcessRuntime
from workers.sending import SendResult

log = logging.getLogger(__name__)

# Integrations whose circuit was clean (closed, no failure counted) when this process last loaded them: their
# successes need no write. Bounded; a miss only costs the write.
CLEAN_CACHE_ENTRIES = 10_000
_clean: dict[uuid.UUID, bool] = {}
_clean_lock = threading.Lock()


def _remember(integrations: Iterable[Integration]) -> None:
    with _clean_lock:
        if len(_clean) > CLEAN_CACHE_ENTRIES:
            _clean.clear()
        for integration in integrations:
            _clean[integration.id] = circuit_of(integration).is_clean


def holds(
    settings: Settings,
    integrations: Mapping[uuid.UUID, Integration],
    integration_of: Mapping[uuid.UUID, uuid.UUID],
    delivery_ids: Iterable[uuid.UUID],
) -> dict[uuid.UUID, float]:
    """delivery id -> seconds it waits because its integration's circuit is open (or half open and it is not
    the probe). A disabled integration's rows are left to the claim, which skips them."""
    _remember(integrations.values())
    policy = CircuitPolicy.from_settings(settings)
    now = datetime.now(UTC)
    circuits: dict[uuid.UUID, Circuit] = {}
    held: dict[uuid.UUID, float] = {}
    for delivery_id in delivery_ids:
        integration = integrations.get(integration_of[delivery_id])
        if integration is None or not integration.enabled or integration.circuit_state == CircuitState.CLOSED:
            continue
        circuit = circuits.get(integration.id) or circuits.setdefault(integration.id, circuit_of(integration))
        wait_s = hold_s(circuit, delivery_id, policy, now)
        if wait_s is not None:
            held[delivery_id] = wait_s
    return held


# --- outcomes -----------------------------------------------------------------------------------------------


def evidence(results: Iterable[SendResult]) -> dict[uuid.UUID, Evidence]:
    """What a batch of results says about each integration (see shared.circuits.Evidence)."""
    found: dict[uuid.UUID, Evidence] = {}
    for r in results:
        if r.job.setup_error is not None:
            continue  # never attempted: says nothing about the destination
        integration_id = r.job.claimed.integration_id
        e = found.get(integration_id, Evidence())
        err = r.error
        failed = e.failed_ids | {r.job.claimed.id}
        if r.receipt is not None:
            e = replace(e, successes=e.successes + 1)
        elif isinstance(err, DeliveryError):
            if err.marks_failing and not err.removed_targets:
                e = replace(e, permanent=f"{err.code}: {err.detail}", failed_ids=failed)
            elif err.retryable and not isinstance(err, RateLimited):
                # A 429 is the destination's pace, not its health (pacing handles it).
                e = replace(
                    e, failures=e.failures + 1, failure_reason=f"{err.code}: {err.detail}", failed_ids=failed
                )
        found[integration_id] = e
    return found


@dataclass
class Changes:
    """What a transaction did to circuits, reported once it has committed."""

    transitions: list[tuple[Circuit, Circuit]] = field(default_factory=list)
    emitted: list[tuple[str, uuid.UUID]] = field(default_factory=list)
    probes: list[uuid.UUID] = field(default_factory=list)
    disabled: int = 0

    def report(self) -> None:
        for _, after in self.transitions:
            metrics.CIRCUIT_TRANSITIONS.labels(str(after.state)).inc()
        for _ in range(self.disabled):
            metrics.CIRCUIT_TRANSITIONS.labels("disabled").inc()
        if self.probes:
            publish_deliver_batches(self.probes)
        if self.emitted:
            opsevents.publish(self.emitted)


def apply_results(runtime: ProcessRuntime, session: Session, results: list[SendResult]) -> Changes:
    """Update the circuits a batch of outcomes speaks about, in the caller's transaction (rows locked in id
    order); the caller commits, then calls `report` on the answer."""
    changes = Changes()
    found = evidence(results)
    with _clean_lock:
        ids = sorted(
            i
            for i, e in found.items()
            if e.permanent is not None or e.failures or (e.successes and not _clean.get(i, False))
        )
    if not ids:
        return changes
    policy = CircuitPolicy.from_settings(runtime.settings)
    now = session.scalar(select(func.now()))
    assert now is not None
    rows = session.scalars(
        select(Integration).where(Integration.id.in_(ids)).order_by(Integration.id).with_for_update()
    ).all()
    for row in rows:
        before = circuit_of(row)
        after = after_results(before, found[row.id], policy, now)
        if after == before:
            continue
        session.execute(
            update(Integration)
            .where(Integration.id == row.id)
            .values(**circuit_values(after))
            .execution_options(synchronize_session=False)
        )
        with _clean_lock:
            _clean[row.id] = after.is_clean
        if after.state == before.state:
            continue  # a failure counted, or the count cleared: not a transition
        changes.transitions.append((before, after))
        _log_transition(row, before, after)
        if before.state == CircuitState.CLOSED:
            _notify(session, runtime.settings, changes, _failing_notice(runtime.settings, row, after))
        elif after.state == CircuitState.CLOSED:
            released = delivery_circuits.release_backlog(session, row.id, _release_step_s(row))
            log.info("integration %s: circuit closed, %d deliveries released in order", row.id, released)
            _notify(session, runtime.settings, changes, _recovered_notice(runtime.settings, row, before))
    return changes


# The released backlog is spaced a little wider than the destination's pace. At exactly its pace every row would
# come back just as the limiter's last slot ends, so each one waits again by a sweep's granularity, and a row that
# waits twice can be overtaken by the next one: the margin absorbs that jitter and keeps them in order.
RELEASE_PACE_MARGIN = 1.25


def _release_step_s(row: Integration) -> float:
    """The backlog goes out just under the destination's pace, oldest first (unpaced: all at once)."""
    # Imported here: workers.admission imports this module (its claim hook).
    from workers.admission import integration_rate

    rate = integration_rate(row)
    return RELEASE_PACE_MARGIN / rate.per_s if rate is not None and rate.per_s > 0 else 0.0


def _log_transition(row: Integration, before: Circuit, after: Circuit) -> None:
    log.log(
        logging.INFO if after.state == CircuitState.CLOSED else logging.WARNING,
        "integration %s (%s): circuit %s -> %s: %s; next probe %s",
        row.id,
        row.provider,
        before.state,
        after.state,
        after.reason or "recovered",
        after.probe_at.isoformat() if after.probe_at and after.state == CircuitState.OPEN else "none",
    )


# --- the sweeper: probes, lost probes, auto-disable --------------------------------------------------------


def sweep(runtime: ProcessRuntime) -> dict[str, int]:
    """One sweeper pass over the circuits that are not closed and have something due."""
    settings = runtime.settings
    policy = CircuitPolicy.from_settings(settings)
    changes = Changes()
    with runtime.sessions() as session:
        now = session.scalar(select(func.now()))
        assert now is not None
        disable_before = now - timedelta(seconds=policy.auto_disable_after_s)
        rows = session.scalars(
            select(Integration)
            .where(
                Integration.circuit_state != CircuitState.CLOSED,
                Integration.enabled.is_(True),
                Integration.circuit_probe_at.is_(None)
                | (Integration.circuit_probe_at <= now)
                | (Integration.circuit_since <= disable_before),
            )
            .order_by(Integration.id)
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            before = circuit_of(row)
            if should_disable(before, policy, now):
                _disable(session, settings, changes, row, before)
                continue
            if not probe_due(before, now):
                continue
            probe_id = delivery_circuits.send_probe(session, row.id)
            after = probing(before, probe_id, policy, now)
            session.execute(
                update(Integration)
                .where(Integration.id == row.id)
                .values(**circuit_values(after))
                .execution_options(synchronize_session=False)
            )
            if probe_id is not None:
                changes.probes.append(probe_id)
                log.info("integration %s: circuit half open, probe %s", row.id, probe_id)
            if probe_id is not None or after.state != before.state:
                changes.transitions.append((before, after))
        session.commit()
    changes.report()
    return {"probes": len(changes.probes), "disabled": changes.disabled}


def _disable(
    session: Session, settings: Settings, changes: Changes, row: Integration, circuit: Circuit
) -> None:
    reason = f"circuit open since {circuit.since.isoformat(timespec='seconds')}: {circuit.reason or '?'}"[
        :200
    ]
    session.execute(
        update(Integration)
        .where(Integration.id == row.id)
        .values(enabled=False, disabled_reason=reason, updated_at=func.now())
        .execution_options(synchronize_session=False)
    )
    skipped = deliveries.skip_integration(session, row.id)
    changes.disabled += 1
    log.warning(
        "integration %s (%s) disabled: %s; %d deliveries skipped", row.id, row.provider, reason, skipped
    )
    notice = Notice(
        type=INTEGRATION_DISABLED,
        subject=f"integration:{row.id}",
        project=row.project or settings.ops_events_project,
        severity="critical",
        title=f"Integration {row.name!r} ({row.provider}) was disabled",
        message=(
            f"Its circuit stayed open longer than {settings.circuit_auto_disable_after_s:.0f} s. Its {skipped} "
            "queued deliveries are kept as skipped: fix the destination, enable the integration, then redrive them."
        ),
        facts={**_facts(row, circuit), "Skipped deliveries": skipped},
        data={**_data(row, circuit), "skipped": skipped, "disabled_reason": reason},
        limited=False,
    )
    _notify(session, settings, changes, notice)


# --- operational events -------------------------------------------------------------------------------------


def _notify(session: Session, settings: Settings, changes: Changes, notice: Notice) -> None:
    event_id = opsevents.emit(session, settings, notice)
    if event_id is not None:
        changes.emitted.append((notice.type, event_id))


def _facts(row: Integration, circuit: Circuit) -> dict[str, Any]:
    return {
        "Integration": row.name,
        "Provider": row.provider,
        "Project": row.project or "(all)",
        "Circuit": str(circuit.state),
        "Reason": circuit.reason or "",
        "Since": circuit.since.isoformat(timespec="seconds"),
    }


def _data(row: Integration, circuit: Circuit) -> dict[str, Any]:
    probe_at = next_probe_at(circuit)
    return {
        # routing keeps the event from this integration (shared/routing.py)
        "integration_id": str(row.id),
        "integration": {
            "id": str(row.id),
            "name": row.name,
            "provider": row.provider,
            "project": row.project,
        },
        "circuit": {
            "state": str(circuit.state),
            "reason": circuit.reason,
            "since": circuit.since.isoformat(),
            "next_probe_at": probe_at.isoformat() if probe_at else None,
        },
    }


def _failing_notice(settings: Settings, row: Integration, circuit: Circuit) -> Notice:
    return Notice(
        type=INTEGRATION_FAILING,
        subject=f"integration:{row.id}",
        project=row.project or settings.ops_events_project,
        severity="error",
        title=f"Integration {row.name!r} ({row.provider}) is failing",
        message=(
            f"{circuit.reason}. Its deliveries wait (no attempts used) while Herald probes it; they are sent "
            "in order once it answers again."
        ),
        facts=_facts(row, circuit),
        data=_data(row, circuit),
    )


def _recovered_notice(settings: Settings, row: Integration, was: Circuit) -> Notice:
    return Notice(
        type=INTEGRATION_RECOVERED,
        subject=f"integration:{row.id}",
        project=row.project or settings.ops_events_project,
        severity="info",
        title=f"Integration {row.name!r} ({row.provider}) recovered",
        message=f"It answers again after failing since {was.since.isoformat(timespec='seconds')} ({was.reason}).",
        facts={**_facts(row, was), "Circuit": "closed"},
        data=_data(row, was)
        | {"circuit": {"state": "closed", "reason": None, "since": None, "next_probe_at": None}},
    )
