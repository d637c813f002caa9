"""The circuit's decisions (shared/circuits.py) and the routing of operational events (shared/routing.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.circuits import (
    Circuit,
    CircuitPolicy,
    CircuitState,
    Evidence,
    after_results,
    closed,
    hold_s,
    probe_due,
    probing,
    should_disable,
)
from shared.events import INTEGRATION_FAILING, OPERATIONAL_KIND, EventFacts
from shared.routing import IntegrationTarget, RouteRule, plan

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = CircuitPolicy(failure_threshold=3, probe_base_s=5, probe_factor=2, probe_max_s=30, hold_s=300)


def failures(n: int) -> Evidence:
    return Evidence(failures=n, failure_reason="provider_unavailable: HTTP 503")


def test_opens_after_the_threshold_of_consecutive_retryable_failures() -> None:
    c = after_results(closed(T0), failures(2), POLICY, T0)
    assert c.state == CircuitState.CLOSED and c.failures == 2
    c = after_results(c, failures(1), POLICY, T0 + timedelta(seconds=1))
    assert c.state == CircuitState.OPEN
    assert c.since == T0 + timedelta(seconds=1)
    assert c.reason is not None and c.reason.startswith("3 consecutive failures: provider_unavailable")
    assert c.probe_at == T0 + timedelta(seconds=6)  # opened + 5 s


def test_a_success_clears_the_run_of_failures() -> None:
    c = after_results(closed(T0), failures(2), POLICY, T0)
    c = after_results(c, Evidence(successes=1), POLICY, T0)
    assert c.state == CircuitState.CLOSED and c.failures == 0
    c = after_results(c, failures(2), POLICY, T0)
    assert c.state == CircuitState.CLOSED  # 2 + 2 with a success between is not 4 in a row


def test_a_clean_circuit_is_unchanged_by_success() -> None:
    c = closed(T0)
    assert after_results(c, Evidence(successes=5), POLICY, T0) is c
    assert c.is_clean


def test_an_auth_or_target_error_opens_at_once_and_outweighs_a_success() -> None:
    c = after_results(closed(T0), Evidence(successes=3, permanent="auth_failed: HTTP 401"), POLICY, T0)
    assert c.state == CircuitState.OPEN and c.reason == "auth_failed: HTTP 401"


def test_pacing_and_payload_errors_are_not_evidence() -> None:
    c = closed(T0)
    assert after_results(c, Evidence(), POLICY, T0) is c


def test_probe_intervals_grow_and_are_capped_and_scaled() -> None:
    assert [POLICY.probe_delay_s(n) for n in range(5)] == [5, 10, 20, 30, 30]
    scaled = CircuitPolicy(probe_base_s=5, probe_factor=2, probe_max_s=600, time_scale=0.1)
    assert scaled.probe_delay_s(0) == 0.5 and scaled.probe_delay_s(2) == 2.0


def test_open_holds_every_delivery_until_the_probe_and_past_it() -> None:
    c = after_results(closed(T0), Evidence(permanent="auth_failed: 401"), POLICY, T0)
    wait_s = hold_s(c, uuid.uuid4(), POLICY, T0 + timedelta(seconds=1))
    assert wait_s == 4 + 300  # until the probe (5 s after opening), then the hold
    assert hold_s(closed(T0), uuid.uuid4(), POLICY, T0) is None


def test_half_open_lets_only_the_probe_through() -> None:
    opened = after_results(closed(T0), Evidence(permanent="auth_failed: 401"), POLICY, T0)
    probe = uuid.uuid4()
    assert not probe_due(opened, T0 + timedelta(seconds=4))
    assert probe_due(opened, T0 + timedelta(seconds=5))
    half = probing(opened, probe, POLICY, T0 + timedelta(seconds=5))
    assert half.state == CircuitState.HALF_OPEN and half.probe_id == probe
    assert hold_s(half, probe, POLICY, T0 + timedelta(seconds=5)) is None
    assert hold_s(half, uuid.uuid4(), POLICY, T0 + timedelta(seconds=5)) is not None


def probe_failed(probe_id: uuid.UUID) -> Evidence:
    return Evidence(failures=1, failure_reason="timeout", failed_ids=frozenset({probe_id}))


def test_a_failed_probe_reopens_with_a_longer_interval_and_keeps_since() -> None:
    opened = after_results(closed(T0), failures(3), POLICY, T0)
    t1 = T0 + timedelta(seconds=5)
    probe = uuid.uuid4()
    half = probing(opened, probe, POLICY, t1)
    again = after_results(half, probe_failed(probe), POLICY, t1 + timedelta(seconds=1))
    assert again.state == CircuitState.OPEN and again.probes == 1
    assert again.probe_at == t1 + timedelta(seconds=1 + 10)
    assert again.since == T0
    t2 = again.probe_at
    assert t2 is not None
    probe = uuid.uuid4()
    third = after_results(probing(again, probe, POLICY, t2), probe_failed(probe), POLICY, t2)
    assert third.probe_at == t2 + timedelta(seconds=20)


def test_the_probes_success_closes_the_circuit() -> None:
    opened = after_results(closed(T0), failures(3), POLICY, T0)
    half = probing(opened, uuid.uuid4(), POLICY, T0 + timedelta(seconds=5))
    c = after_results(half, Evidence(successes=1), POLICY, T0 + timedelta(seconds=6))
    assert c == closed(T0 + timedelta(seconds=6))


def test_nothing_to_probe_leaves_it_open_until_the_next_interval() -> None:
    opened = after_results(closed(T0), failures(3), POLICY, T0)
    later = T0 + timedelta(seconds=5)
    c = probing(opened, None, POLICY, later)
    assert c.state == CircuitState.OPEN and c.probe_at == later + timedelta(seconds=5)


def test_a_probe_that_never_reports_counts_as_failed_and_is_sent_again() -> None:
    policy = CircuitPolicy(probe_base_s=5, probe_timeout_s=60)
    opened = after_results(closed(T0), Evidence(permanent="target_gone: 404"), policy, T0)
    half = probing(opened, uuid.uuid4(), policy, T0 + timedelta(seconds=5))
    assert half.probe_at == T0 + timedelta(seconds=65)  # the probe's deadline is at least its timeout
    assert not probe_due(half, T0 + timedelta(seconds=64))
    assert probe_due(half, T0 + timedelta(seconds=65))
    assert probing(half, uuid.uuid4(), policy, T0 + timedelta(seconds=65)).probes == 1


def test_auto_disable_after_staying_open() -> None:
    policy = CircuitPolicy(auto_disable_after_s=3600)
    opened = after_results(closed(T0), Evidence(permanent="auth_failed: 401"), policy, T0)
    assert not should_disable(opened, policy, T0 + timedelta(seconds=3599))
    assert should_disable(opened, policy, T0 + timedelta(seconds=3600))
    assert not should_disable(closed(T0), policy, T0 + timedelta(days=9))


def _event(integration_id: uuid.UUID) -> EventFacts:
    return EventFacts(
        id=uuid.uuid4(),
        kind=OPERATIONAL_KIND,
        type=INTEGRATION_FAILING,
        project="herald",
        environment=None,
        severity="error",
        payload={"integration_id": str(integration_id)},
        created_at=T0,
    )


def _route(integration_id: uuid.UUID, *types: str) -> RouteRule:
    return RouteRule(uuid.uuid4(), integration_id, None, [], list(types), "info")


def test_operational_events_go_only_to_routes_that_name_them_and_never_to_their_integration() -> None:
    failing, ops, everything = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    targets = {i: IntegrationTarget(i, "webhook", None, True) for i in (failing, ops, everything)}
    routes = [
        _route(failing, "herald.*"),  # the failing integration is itself an ops destination
        _route(ops, "herald.integration.failing|recovered"),
        _route(everything),  # all events: not Herald's own
    ]
    planned = plan(_event(failing), routes, targets)
    assert [p.integration_id for p in planned] == [ops]


def test_a_circuit_value_round_trips_its_columns() -> None:
    from shared.circuits import circuit_of, circuit_values
    from shared.db.models import Integration

    c = Circuit(CircuitState.HALF_OPEN, T0, "x", 3, 2, T0, uuid.uuid4())
    row = Integration(**circuit_values(c))
    assert circuit_of(row) == c


def test_a_saved_config_probes_an_open_circuit_at_once_and_keeps_since() -> None:
    from shared.circuits import probe_now

    opened = after_results(closed(T0), failures(3), POLICY, T0)
    again = after_results(probing(opened, uuid.uuid4(), POLICY, T0), failures(1), POLICY, T0)
    later = T0 + timedelta(seconds=7)
    saved = probe_now(again, later)
    assert saved.state == CircuitState.OPEN and saved.probes == 0 and saved.probe_at == later
    assert saved.since == T0 and probe_due(saved, later)
    assert probe_now(closed(T0), later) == closed(T0)


def test_half_open_ignores_failures_of_sends_other_than_its_probe() -> None:
    """Repro: a failure recorded late (a send claimed before the probe, or an earlier probe) re-opened a
    circuit whose new probe (the Test button's) was in flight, and that probe was then held."""
    opened = after_results(closed(T0), failures(3), POLICY, T0)
    probe = uuid.uuid4()
    half = probing(opened, probe, POLICY, T0)
    late = Evidence(failures=1, failure_reason="timeout", failed_ids=frozenset({uuid.uuid4()}))
    assert after_results(half, late, POLICY, T0) == half
    assert after_results(half, probe_failed(probe), POLICY, T0).state == CircuitState.OPEN
