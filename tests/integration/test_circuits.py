"""Circuits and operational events end to end (issue 12): a real worker, beat and sweeper against a local fake
webhook that fails on command.

A failing integration's circuit opens (visible in the API), its deliveries wait without using attempts, a probe
(its oldest delivery) goes out at growing intervals, the first success closes it and the backlog drains in
order; Herald tells an ops route (`herald.*`) and never the failing integration; the telling is rate limited;
an integration open too long is disabled, its work kept as `skipped` for a redrive.

Time scale 0.1 (stack env below): retries after 0.5, 1, 2 ... s; probes after 2, 4, 8 s.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text

from tests.conftest import admin_exec, sqlalchemy_url
from tests.fakes.server import FakeServer, Recorded, Reply
from tests.integration.conftest import _new_db, claimed_redis_db
from tests.integration.stack import AUTH, Stack, post_release, wait_until

pytestmark = pytest.mark.integration

CIRCUIT_ENV = {
    "HERALD_RETRY_TIME_SCALE": "0.1",
    "HERALD_CIRCUIT_FAILURE_THRESHOLD": "3",
    "HERALD_CIRCUIT_PROBE_BASE_S": "20",  # scaled by 0.1: 2 s, 4 s, 8 s
    "HERALD_OPS_EVENT_MIN_INTERVAL_S": "3600",
    "HERALD_DEADLETTERS_GROWING_THRESHOLD": "3",
    "HERALD_DEADLETTERS_GROWING_WINDOW_S": "300",
    "HERALD_DEADLETTERS_CHECK_INTERVAL_S": "0.3",
}


class Outage:
    """Per path: answer `status` to every request up to number `through` (1-based), 200 after."""

    def __init__(self) -> None:
        self.server = FakeServer(self._reply)
        self.failing: dict[str, tuple[int, int]] = {}

    def _reply(self, request: Recorded) -> Reply:
        status, through = self.failing.get(request.path, (200, 0))
        if status != 200 and len(self.server.requests(request.path)) <= through:
            return Reply(status, b'{"error":"down"}', content_type="application/json")
        return Reply(200, b'{"received":true}', content_type="application/json")

    def fail(self, path: str, status: int) -> None:
        self.failing[path] = (status, 10**9)

    def recover_after_current(self, path: str) -> None:
        """Requests so far (and any reply not computed yet for them) fail; the next one succeeds."""
        self.failing[path] = (self.failing[path][0], len(self.server.requests(path)))


@pytest.fixture(scope="module")
def outage() -> Iterator[Outage]:
    o = Outage()
    with o.server:
        yield o


def _start(s: Stack) -> None:
    s.start_worker(concurrency=4)
    s.start_beat()


@pytest.fixture(scope="module")
def cstack(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = _new_db(template_db)
    with claimed_redis_db() as redis_db:
        s = Stack(sqlalchemy_url(name), redis_db, tmp_path_factory.mktemp("circuits"), **CIRCUIT_ENV)
        try:
            _start(s)
            yield s
        finally:
            s.close()
            admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def api(cstack: Stack) -> Iterator[TestClient]:
    with cstack.client() as client:
        yield client


_engines: dict[str, Engine] = {}


def sql(stack: Stack, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    url = stack.env["HERALD_DATABASE_URL"]
    # One pooled connection per database for the whole module: the tests poll, and PostgreSQL is shared.
    engine = _engines.get(url) or _engines.setdefault(url, create_engine(url, pool_size=1, max_overflow=0))
    with engine.begin() as conn:
        result = conn.execute(text(statement), params)
        return [tuple(r) for r in result] if result.returns_rows else []


@pytest.fixture(scope="module", autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


def webhook(api: TestClient, url: str, project: str | None, **fields: Any) -> str:
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": f"hook-{uuid.uuid4().hex[:6]}",
            "provider": "webhook",
            "project": project,
            "config": {"url": url},
            **fields,
        },
    )
    assert r.status_code == 201, r.text
    integration_id: str = r.json()["data"]["id"]
    return integration_id


def route(
    api: TestClient, integration_id: str, project: str | None, event_types: list[str] | None = None
) -> None:
    r = api.post(
        "/v1/routes",
        headers=AUTH,
        json={"integration_id": integration_id, "project": project, "event_types": event_types or []},
    )
    assert r.status_code == 201, r.text


def ops_route(api: TestClient, outage: Outage) -> str:
    """An #ops destination for every operational event, bound to no project (it hears about all)."""
    path = f"/ops/{uuid.uuid4().hex}"
    ops = webhook(api, outage.server.url(path), None)
    route(api, ops, None, ["herald.*"])
    return path


def circuit(api: TestClient, integration_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/integrations/{integration_id}", headers=AUTH)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return {**data["circuit"], "enabled": data["enabled"], "disabled_reason": data["disabled_reason"]}


def circuit_becomes(
    api: TestClient, integration_id: str, state: str, timeout_s: float = 20
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.update(circuit(api, integration_id))
        return seen["state"] == state

    wait_until(check, timeout_s, f"circuit of {integration_id} never {state}: {seen}")
    return seen


def rows(stack: Stack, integration_id: str) -> list[tuple[str, int, str | None]]:
    """(state, attempt_count, dead_reason) of each delivery, oldest first."""
    return [
        (r[0], int(r[1]), r[2])
        for r in sql(
            stack,
            "SELECT d.state, d.attempt_count, d.dead_reason FROM delivery d JOIN event e ON e.id = d.event_id "
            "WHERE d.integration_id = :i ORDER BY e.created_at, d.id",
            i=uuid.UUID(integration_id),
        )
    ]


def log_text(path: Path) -> str:
    return path.read_text(errors="replace")


def bodies(server: FakeServer, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body)["data"] for r in server.requests(path)]


def ops_events(server: FakeServer, path: str, about: Callable[[dict[str, Any]], bool]) -> list[str]:
    return [b["type"] for b in bodies(server, path) if about(b)]


@pytest.mark.timeout(180)
def test_a_failing_webhook_opens_probes_recovers_and_drains_in_order(cstack: Stack, api, outage: Outage):
    """Repro (before): a webhook answering 503 was retried like a healthy one: each delivery spent its whole
    budget (6 attempts) and ended `attempts_exhausted`, and nobody was told."""
    project = f"circ-{uuid.uuid4().hex[:8]}"
    path = f"/down/{project}"
    outage.fail(path, 503)
    ops = ops_route(api, outage)
    # Paced at 1/s: the released backlog goes out one by one in order.
    failing = webhook(api, outage.server.url(path), project, pace_per_s=1.0, pace_burst=1)
    route(api, failing, project)
    first = [post_release(api, project, version=f"1.{i}.0") for i in range(5)]
    opened = circuit_becomes(api, failing, "open")
    assert opened["reason"].startswith("3 consecutive failures: provider_unavailable"), opened
    assert opened["next_probe_at"] is not None
    later = [post_release(api, project, version=f"1.{i}.0") for i in range(5, 8)]
    # Held: every delivery but the oldest (the next probe) waits; none spends an attempt while the circuit is
    # open (the first ones used one each before it opened, the later ones none at all).
    wait_until(
        lambda: [s for s, _, _ in rows(cstack, failing)][1:] == ["waiting"] * 7,
        20,
        f"not all waiting: {rows(cstack, failing)}",
    )
    [(first_attempts,)] = sql(
        cstack,
        "SELECT count(*) FROM attempt a JOIN delivery d ON d.id = a.delivery_id "
        "WHERE d.integration_id = :i AND a.attempt_no = 1",
        i=uuid.UUID(failing),
    )
    assert 3 <= first_attempts <= 5
    assert [n for _, n, _ in rows(cstack, failing)][5:] == [0, 0, 0]
    assert sum(n for _, n, _ in rows(cstack, failing)[1:]) <= first_attempts
    # The first probe fails; the second (after a longer interval) is answered.
    assert len(outage.server.wait_for(path, first_attempts + 1, timeout_s=30)) == first_attempts + 1
    outage.recover_after_current(path)
    wait_until(
        lambda: [s for s, _, _ in rows(cstack, failing)] == ["delivered"] * 8,
        60,
        f"not drained: {rows(cstack, failing)}",
    )
    assert circuit(api, failing)["state"] == "closed"
    requests = outage.server.requests(path)
    assert len(requests) == first_attempts + 1 + 8  # one failed probe, then every delivery once
    t_fail, t_probe1, t_probe2 = (r.arrived_at for r in requests[first_attempts - 1 : first_attempts + 2])
    # Probes never come early, and their intervals grow (2 s after opening, then 4 s): lower bounds only.
    assert t_probe1 - t_fail >= 1.8
    assert t_probe2 - t_probe1 >= 3.6
    # The probe is the oldest delivery; the backlog follows in the order it was accepted.
    delivered = [b["event_id"] for b in bodies(outage.server, path)[first_attempts + 1 :]]
    order = first + later
    assert delivered == order, [order.index(e) for e in delivered]
    assert all(b["type"] == "release.created" for b in bodies(outage.server, path))  # nothing about itself
    # Every request was an attempt; the probe (the oldest) used two of its own budget, the others at most one
    # before the circuit opened, then the one that delivered them.
    attempts = [n for _, n, _ in rows(cstack, failing)]
    assert sum(attempts) == len(requests), attempts
    assert attempts[0] in (2, 3) and all(n <= 2 for n in attempts[1:]), attempts
    assert not [r for r in rows(cstack, failing) if r[2] == "attempts_exhausted"]
    # Told: failing, then recovered, on the ops route.
    about = lambda b: b.get("integration_id") == failing  # noqa: E731
    wait_until(lambda: len(ops_events(outage.server, ops, about)) == 2, 20, "ops not told twice")
    assert ops_events(outage.server, ops, about) == [
        "herald.integration.failing",
        "herald.integration.recovered",
    ]


@pytest.mark.timeout(180)
def test_a_401_opens_at_once_tells_ops_not_itself_and_is_rate_limited(cstack: Stack, api, outage: Outage):
    """Repro (before): a revoked token only set the `failing` flag; every new event was still sent (and
    dead-lettered) at once, and nobody was told."""
    project = f"auth-{uuid.uuid4().hex[:8]}"
    path = f"/revoked/{project}"
    outage.fail(path, 401)
    ops = ops_route(api, outage)
    failing = webhook(api, outage.server.url(path), project)
    route(
        api, failing, project, ["release.*", "herald.*"]
    )  # even a route asking for them: never about itself
    post_release(api, project, version="2.0.0")
    opened = circuit_becomes(api, failing, "open")
    assert opened["reason"].startswith("auth_failed"), opened
    assert rows(cstack, failing) == [("dead", 1, "auth_failed")]
    # Events accepted while it is open wait for the probe (2 s away) without an attempt.
    post_release(api, project, version="2.0.1")
    wait_until(lambda: rows(cstack, failing)[1:] == [("waiting", 0, None)], 10, f"{rows(cstack, failing)}")
    assert len(outage.server.requests(path)) == 1
    about = lambda b: b.get("integration_id") == failing  # noqa: E731
    wait_until(lambda: ops_events(outage.server, ops, about), 20, "ops never told")
    [told] = [b for b in bodies(outage.server, ops) if about(b)]
    assert told["type"] == "herald.integration.failing"
    assert told["severity"] == "error"
    assert told["circuit"]["state"] == "open" and told["circuit"]["reason"].startswith("auth_failed")
    assert all(b["type"] == "release.created" for b in bodies(outage.server, path))
    # New credentials (the vendor's side fixed): saving is a "try again", the open circuit probes at once, the
    # probe's success closes it and ops hears it recovered.
    outage.recover_after_current(path)
    r = api.patch(
        f"/v1/integrations/{failing}", headers=AUTH, json={"config": {"url": outage.server.url(path)}}
    )
    assert r.status_code == 200, r.text
    saved = r.json()["data"]["circuit"]
    assert saved["state"] == "open" and saved["next_probe_at"] is not None, saved
    circuit_becomes(api, failing, "closed")
    wait_until(
        lambda: (
            ops_events(outage.server, ops, about)
            == ["herald.integration.failing", "herald.integration.recovered"]
        ),
        20,
        f"recovery not told: {ops_events(outage.server, ops, about)}",
    )
    # It fails again at once and opens again, but ops heard within the rate-limit interval
    # (HERALD_OPS_EVENT_MIN_INTERVAL_S=3600): no second failing event is stored.
    outage.fail(path, 401)
    post_release(api, project, version="2.0.2")
    circuit_becomes(api, failing, "open")
    wait_until(
        lambda: (
            f"herald.integration.failing about integration:{failing} suppressed"
            in log_text(cstack.worker_log)
        ),
        20,
        "the second opening was not rate limited",
    )
    [(stored,)] = sql(
        cstack,
        "SELECT count(*) FROM event WHERE type = 'herald.integration.failing' AND payload->>'integration_id' = :i",
        i=failing,
    )
    assert stored == 1


@pytest.mark.timeout(120)
def test_dead_letters_growing_is_told_once_per_window(cstack: Stack, api, outage: Outage):
    project = f"dlq-{uuid.uuid4().hex[:8]}"
    path = f"/bad/{project}"
    outage.fail(path, 400)  # invalid payload: dead at once, not the integration's health
    ops = ops_route(api, outage)
    bad = webhook(api, outage.server.url(path), project)
    route(api, bad, project)
    for i in range(3):
        post_release(api, project, version=f"3.{i}.0")
    about = lambda b: b.get("project") == project and b["type"] == "herald.deadletters.growing"  # noqa: E731
    wait_until(lambda: ops_events(outage.server, ops, about), 30, "dead letters growing never told")
    assert circuit(api, bad)["state"] == "closed"  # a 400 is the event's fault, not the destination's
    for i in range(3, 6):
        post_release(api, project, version=f"3.{i}.0")
    wait_until(lambda: [s for s, _, _ in rows(cstack, bad)] == ["dead"] * 6, 30, f"{rows(cstack, bad)}")
    wait_until(
        lambda: (
            f"herald.deadletters.growing about project:{project} suppressed" in log_text(cstack.sweeper_log)
        ),
        20,
        "the sweeper never looked again",
    )
    [(stored,)] = sql(
        cstack,
        "SELECT count(*) FROM event WHERE type = 'herald.deadletters.growing' AND project = :p",
        p=project,
    )
    assert stored == 1
    [told] = [b for b in bodies(outage.server, ops) if about(b)]
    assert told["dead_letters"] >= 3


@pytest.mark.timeout(180)
def test_an_integration_open_too_long_is_disabled_skipped_and_replayable(own_stack: Stack, outage: Outage):
    """Repro (before): an integration failing for days was retried like a healthy one, forever, silently."""
    own_stack.env.update(CIRCUIT_ENV)
    own_stack.env["HERALD_CIRCUIT_AUTO_DISABLE_AFTER_S"] = "3"
    _start(own_stack)
    project = f"gone-{uuid.uuid4().hex[:8]}"
    path = f"/gone/{project}"
    outage.fail(path, 503)
    with own_stack.client() as api:
        ops = ops_route(api, outage)
        failing = webhook(api, outage.server.url(path), project)
        route(api, failing, project)
        events = [post_release(api, project, version=f"4.{i}.0") for i in range(4)]
        circuit_becomes(api, failing, "open")
        wait_until(
            lambda: not circuit(api, failing)["enabled"], 30, f"never disabled: {circuit(api, failing)}"
        )
        disabled = circuit(api, failing)
        assert disabled["disabled_reason"].startswith("circuit open since"), disabled
        assert "provider_unavailable" in disabled["disabled_reason"], disabled
        assert disabled["state"] != "closed"  # shown as it was: the integration is disabled, not healed
        wait_until(
            lambda: [s for s, _, _ in rows(own_stack, failing)] == ["skipped"] * 4,
            10,
            f"not skipped: {rows(own_stack, failing)}",
        )
        about = lambda b: b.get("integration_id") == failing  # noqa: E731
        wait_until(
            lambda: "herald.integration.disabled" in ops_events(outage.server, ops, about),
            20,
            f"ops never told: {ops_events(outage.server, ops, about)}",
        )
        [told] = [
            b for b in bodies(outage.server, ops) if about(b) and b["type"] == "herald.integration.disabled"
        ]
        assert told["severity"] == "critical" and told["skipped"] >= 1
        # Replayable: fixed, enabled again (its circuit starts closed), the skipped deliveries redriven.
        outage.recover_after_current(path)
        r = api.patch(f"/v1/integrations/{failing}", headers=AUTH, json={"enabled": True})
        assert r.status_code == 200, r.text
        assert (
            r.json()["data"]["circuit"]["state"] == "closed" and r.json()["data"]["disabled_reason"] is None
        )
        r = api.post(
            "/v1/dead-letters/redrive", headers=AUTH, json={"integration_id": failing, "states": ["skipped"]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["processed"] == 4
        wait_until(
            lambda: [s for s, _, _ in rows(own_stack, failing)] == ["delivered"] * 4,
            30,
            f"not replayed: {rows(own_stack, failing)}",
        )
        delivered = {b["event_id"] for b in bodies(outage.server, path) if b["type"] == "release.created"}
        assert set(events) <= delivered


@pytest.mark.timeout(120)
def test_the_test_button_is_the_probe_of_an_open_circuit(cstack: Stack, api, outage: Outage):
    """Before: the Test button's delivery was held like any other while the circuit was open, so "does it work
    now?" got no answer until the next scheduled probe."""
    project = f"btn-{uuid.uuid4().hex[:8]}"
    path = f"/btn/{project}"
    outage.fail(path, 503)
    failing = webhook(api, outage.server.url(path), project)
    route(api, failing, project)
    held = [post_release(api, project, version=f"5.{i}.0") for i in range(3)]
    circuit_becomes(api, failing, "open")
    wait_until(
        lambda: [s for s, _, _ in rows(cstack, failing)][1:] == ["waiting"] * 2,
        20,
        f"{rows(cstack, failing)}",
    )
    sent = len(outage.server.requests(path))
    # The first scheduled probe fails; the next one is 4 s away.
    assert len(outage.server.wait_for(path, sent + 1, timeout_s=30)) == sent + 1
    outage.recover_after_current(path)
    r = api.post(f"/v1/integrations/{failing}/test", headers=AUTH)
    assert r.status_code == 202, r.text
    assert circuit(api, failing)["state"] in ("half_open", "closed")  # closed already if it was quick
    circuit_becomes(api, failing, "closed")
    first_good = bodies(outage.server, path)[sent + 1]
    assert first_good["event_id"] == r.json()["data"]["event_id"] and first_good["test"] is True
    wait_until(
        lambda: [s for s, _, _ in rows(cstack, failing)] == ["delivered"] * 4, 30, f"{rows(cstack, failing)}"
    )
    assert set(held) <= {b["event_id"] for b in bodies(outage.server, path)}
