"""One contract for every registered provider, through the real worker: classification and final state.

Each (provider, case) gets its own integration, route and project on the shared stack, and its own slot on a fake
started once for the module (tests/fakes/catalog.py). Everything is set up and posted first and then awaited
together, so the whole matrix costs about as long as its slowest case (the timeout), not the sum of them.
Then a few end-to-end checks of lifecycle features: edit in place (Slack bot, Discord) and PagerDuty's
trigger -> resolve meeting on one alert.
"""

from __future__ import annotations

import json
import socket
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from providers import registry
from tests.fakes.apns import ApnsContract
from tests.fakes.catalog import CASES, CATALOG, Case, ContractFake, entries
from tests.fakes.discord import DiscordFake
from tests.fakes.pagerduty import PagerDutyFake
from tests.fakes.slack import CHANNEL_ID, SlackFake
from tests.integration.stack import AUTH, Stack, post_release, wait_for_deliveries

pytestmark = pytest.mark.integration

#: every contract config's timeout; the `timeout` case's fake answers after catalog.SLOW_ANSWER_S (8 s, past
#: SMTP's whole-attempt bound of timeout_s + 3 s). 2 s was too tight on a loaded 2-core machine: the suite's
#: SMTP cases all start at once, and in one fresh-clone run every first SMTP attempt overran 5 s.
TIMEOUT_S = 4.0

#: case -> (final state, dead_reason, error class of each attempt in order (None = success), marks failing)
EXPECTED: dict[Case, tuple[str, str | None, list[str | None], bool]] = {
    "success": ("delivered", None, [None], False),
    "rate_limited": ("delivered", None, ["rate_limited", None], False),
    "unavailable": ("delivered", None, ["provider_unavailable", None], False),
    "invalid": ("dead", "invalid_payload", ["invalid_payload"], False),
    "auth": ("dead", "auth_failed", ["auth_failed"], True),
    "gone": ("dead", "target_gone", ["target_gone"], True),
    "timeout": ("delivered", None, ["timeout", None], False),
    "refused": ("dead", "attempts_exhausted", ["provider_unavailable", "provider_unavailable"], False),
}


@dataclass
class Outcome:
    delivery: dict[str, Any] | None = None
    integration: dict[str, Any] | None = None
    arrivals: list[float] = field(default_factory=list)
    error: str | None = None  # set-up or waiting failed: the test reports it


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, ContractFake]]:
    started: dict[str, ContractFake] = {}
    try:
        for entry in CATALOG:
            started[entry.provider] = entry.start()
        yield started
    finally:
        for fake in started.values():
            fake.stop()


def _integrate(
    api: TestClient, provider: str, project: str, config: dict[str, Any], retries: int | None
) -> str:
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": f"contract-{project}"[:100],
            "provider": provider,
            "project": project,
            "config": config,
            "retry_max_retries": retries,
        },
    )
    assert r.status_code == 201, r.text
    integration_id: str = r.json()["data"]["id"]
    r = api.post("/v1/routes", headers=AUTH, json={"integration_id": integration_id, "project": project})
    assert r.status_code == 201, r.text
    return integration_id


@pytest.fixture(scope="module")
def outcomes(stack: Stack, fakes: dict[str, ContractFake]) -> dict[tuple[str, Case], Outcome]:
    results: dict[tuple[str, Case], Outcome] = {}
    started: dict[tuple[str, Case], tuple[str, str, str]] = {}  # -> (slot, integration id, event id)
    dead_port = closed_port()
    with stack.client() as api:
        for provider, fake in fakes.items():
            for case in CASES:
                slot = f"{provider.replace('_', '')}{case.replace('_', '')}{uuid.uuid4().hex[:8]}"
                try:
                    config = fake.config(
                        slot, timeout_s=TIMEOUT_S, port=dead_port if case == "refused" else None
                    )
                    # The refused case would otherwise walk the whole schedule; one retry proves the point.
                    integration_id = _integrate(
                        api, provider, f"ct-{slot}", config, retries=1 if case == "refused" else None
                    )
                    fake.script(slot, case)
                    event_id = post_release(api, f"ct-{slot}")
                    started[(provider, case)] = (slot, integration_id, event_id)
                except Exception:
                    results[(provider, case)] = Outcome(error=traceback.format_exc(limit=3))
        for (provider, case), (slot, integration_id, event_id) in started.items():
            outcome = results[(provider, case)] = Outcome()
            try:
                [outcome.delivery] = wait_for_deliveries(api, event_id, timeout_s=40)
                r = api.get(f"/v1/integrations/{integration_id}", headers=AUTH)
                outcome.integration = r.json()["data"]
                outcome.arrivals = fakes[provider].received(slot)
            except Exception:
                outcome.error = traceback.format_exc(limit=3)
    return results


def test_every_registered_provider_has_a_catalog_entry():
    missing = set(registry.names()) - set(entries())
    assert not missing, f"add a tests/fakes/catalog.py entry for: {sorted(missing)}"


@pytest.mark.parametrize(
    ("provider", "case"),
    [(entry.provider, case) for entry in CATALOG for case in CASES],
    ids=lambda value: str(value),
)
def test_contract(outcomes: dict[tuple[str, Case], Outcome], fakes: dict[str, ContractFake], provider, case):
    outcome = outcomes[(provider, case)]
    assert outcome.error is None, outcome.error
    assert outcome.delivery is not None and outcome.integration is not None
    state, dead_reason, classes, marks_failing = EXPECTED[case]
    delivery = outcome.delivery
    attempts = delivery["attempts"]
    assert (delivery["state"], delivery["dead_reason"]) == (state, dead_reason), delivery
    assert [a["error_class"] for a in attempts] == classes, attempts
    assert outcome.integration["failing"] is marks_failing

    if case == "refused":
        assert outcome.arrivals == []
        return
    assert len(outcome.arrivals) == len(classes), "each attempt is exactly one request to the vendor"
    if case == "rate_limited" and (hint := fakes[provider].retry_after_s) is not None:
        # The scaled schedule alone would retry after ~0.1 s: the wait proves the vendor's hint was used.
        assert outcome.arrivals[1] - outcome.arrivals[0] >= hint * 0.9
    if case in ("invalid", "auth", "gone"):
        assert attempts[0]["status_code"] is not None


# Lifecycle features, end to end ------------------------------------------------------------------


def _pipeline(api: TestClient, project: str, stage: str) -> str:
    r = api.post(
        "/v1/events/pipeline",
        headers=AUTH,
        json={
            "app": "checkout",
            "project": project,
            "environment": "prod",
            "pipeline": "deploy-prod",
            "pipeline_type": "cd",
            "stage": stage,
            "triggered_by": "ana@example.com",
            "image_repo": "registry.example/checkout",
            "image_tag": "9f2c1e",
            "url": "https://ci.example/p/77",
        },
    )
    assert r.status_code == 202, r.text
    event_id: str = r.json()["data"]["event_id"]
    return event_id


def _trigger_then_success(api: TestClient, provider: str, project: str, config: dict[str, Any]) -> None:
    _integrate(api, provider, project, config, retries=None)
    [first] = wait_for_deliveries(api, _pipeline(api, project, "trigger"))
    assert first["state"] == "delivered", first
    # The success is fanned out after the trigger was delivered, so it carries the trigger's message ref.
    [second] = wait_for_deliveries(api, _pipeline(api, project, "success"))
    assert second["state"] == "delivered", second


def test_slack_bot_edits_the_pipeline_message_in_place(api: TestClient):
    slot = f"edit{uuid.uuid4().hex[:8]}"
    with SlackFake() as fake:
        config = {"token": fake.token, "channel": CHANNEL_ID, "api_base_url": fake.api_base(slot)}
        _trigger_then_success(api, "slack_bot", f"ct-{slot}", config)
        [posted] = fake.requests(f"/{slot}/api/chat.postMessage")
        [updated] = fake.requests(f"/{slot}/api/chat.update")
    [(channel, ts)] = fake.messages
    update = json.loads(updated.body)
    assert (update["channel"], update["ts"]) == (channel, ts)
    assert "triggered" in json.loads(posted.body)["text"]
    assert "succeeded" in update["text"]
    assert "succeeded" in fake.messages[(channel, ts)]["text"]


def test_discord_edits_the_pipeline_message_in_place(api: TestClient):
    slot = f"edit{uuid.uuid4().hex[:8]}"
    with DiscordFake() as fake:
        path = fake.webhook_path(slot)
        _trigger_then_success(api, "discord", f"ct-{slot}", {"webhook_url": fake.url(path)})
        [posted] = fake.requests(path)
        [message_id] = fake.messages
        [edited] = fake.requests(f"{path}/messages/{message_id}")
    assert posted.method == "POST" and posted.query == "wait=true"
    assert edited.method == "PATCH"
    assert "succeeded" in json.loads(edited.body)["embeds"][0]["title"]


def test_pagerduty_failure_then_success_is_one_alert_triggered_and_resolved(api: TestClient):
    slot = f"pd{uuid.uuid4().hex[:8]}"
    project = f"ct-{slot}"
    with PagerDutyFake() as fake:
        key = "R0UT1NGKEY0000000000000000000002"
        _integrate(api, "pagerduty", project, {"routing_key": key, "events_url": fake.events_url(slot)}, None)
        [failed] = wait_for_deliveries(api, _pipeline(api, project, "failure"))
        [fixed] = wait_for_deliveries(api, _pipeline(api, project, "success"))
        requests = [json.loads(r.body) for r in fake.requests(fake.enqueue_path(slot))]
    assert failed["state"] == fixed["state"] == "delivered"
    assert [r["event_action"] for r in requests] == ["trigger", "resolve"]
    assert (
        requests[0]["dedup_key"]
        == requests[1]["dedup_key"]
        == f"pipeline:{project}:checkout:deploy-prod:9f2c1e"
    )
    assert requests[0]["payload"]["severity"] == "error"
    [alert] = fake.alerts_for(requests[0]["dedup_key"])
    assert (alert.status, alert.history) == ("resolved", ["trigger", "resolve"])


def test_slack_bot_answer_in_two_writes_is_posted_once_and_edited_in_place(api: TestClient):
    """Through the worker, with every Slack answer sent in two writes.

    Repro before the fix: the provider kept only the first chunk of `{"ok":true,"channel":..,"ts":..}`, called the
    success "answer is not a JSON object" (provider_unavailable), and the retry posted the message a second
    time; the success then had no ref to edit and posted a third message."""
    slot = f"split{uuid.uuid4().hex[:8]}"
    with SlackFake() as fake:
        fake.split_writes = 2
        config = {"token": fake.token, "channel": CHANNEL_ID, "api_base_url": fake.api_base(slot)}
        _trigger_then_success(api, "slack_bot", f"ct-{slot}", config)
        posted = fake.requests(f"/{slot}/api/chat.postMessage")
        updated = fake.requests(f"/{slot}/api/chat.update")
    assert (len(posted), len(updated)) == (1, 1)
    assert len(fake.messages) == 1


def test_apns_bad_device_token_keeps_tokens_and_flags_the_integration(
    api: TestClient, fakes: dict[str, ContractFake]
):
    """BadDeviceToken is also what a sandbox token gets from production: the token stays in the config and the
    integration is marked failing with a reason that names the environment.

    Repro before the fix: the token was deleted from the integration's config and the delivery counted as
    delivered; a wrongly configured environment silently emptied the integration of every token."""
    apns = fakes["apns"]
    assert isinstance(apns, ApnsContract)
    slot = f"apnsbad{uuid.uuid4().hex[:8]}"
    bad = apns.token(slot)
    apns.server.bad_tokens.add(bad)
    project = f"ct-{slot}"
    integration_id = _integrate(api, "apns", project, apns.config(slot, timeout_s=TIMEOUT_S), retries=None)
    [delivery] = wait_for_deliveries(api, post_release(api, project))
    assert (delivery["state"], delivery["dead_reason"]) == ("dead", "target_gone"), delivery
    integration = api.get(f"/v1/integrations/{integration_id}", headers=AUTH).json()["data"]
    assert integration["failing"] is True
    assert "check the APNs environment (sandbox vs production)" in integration["failing_reason"]
    assert integration["config"]["device_tokens"] == [bad]
