"""PagerDuty Events API v2 provider against the PagerDuty fake (tests/fakes/pagerduty.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from providers._http import HttpClient
from providers.base import Receipt
from providers.pagerduty import PagerDutyConfig, PagerDutyProvider
from shared.errors import AuthFailed, DeliveryError, InvalidPayload, ProviderUnavailable, RateLimited
from shared.rendering import RenderedMessage
from tests.fakes.pagerduty import PagerDutyFake, invalid, rate_limited
from tests.fakes.server import Reply
from tests.golden.samples import SAMPLES, oversized

KEY = "R0UT1NGKEY0000000000000000000042"


@pytest.fixture(scope="module")
def pd() -> Iterator[PagerDutyFake]:
    with PagerDutyFake() as fake:
        yield fake


@pytest.fixture
def slot() -> str:
    return uuid.uuid4().hex[:10]


def send(config: PagerDutyConfig, message: RenderedMessage) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await PagerDutyProvider(http).send(
                message, config, idempotency_key="d-1", previous_ref=None
            )
        finally:
            await http.close()

    return asyncio.run(run())


def config(pd: PagerDutyFake, slot: str, **overrides: Any) -> PagerDutyConfig:
    return PagerDutyConfig.model_validate(
        {"routing_key": KEY, "events_url": pd.events_url(slot), **overrides}
    )


def bodies(pd: PagerDutyFake, slot: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in pd.requests(pd.enqueue_path(slot))]


def test_failure_triggers_and_success_resolves_the_same_alert(pd: PagerDutyFake, slot: str):
    failed = send(config(pd, slot), SAMPLES["pipeline_failure"])
    fixed = send(config(pd, slot), SAMPLES["pipeline_success"])
    trigger, resolve = bodies(pd, slot)
    assert failed.provider_ref == fixed.provider_ref == "pipeline:shop:checkout:deploy-prod:9f2c1e"
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert set(resolve) == {"routing_key", "event_action", "dedup_key"}
    payload = trigger["payload"]
    assert payload["severity"] == "error"
    assert payload["summary"] == "CD pipeline deploy-prod for checkout FAILED"
    assert (
        payload["source"] == "herald/shop"
        and payload["component"] == "checkout"
        and payload["group"] == "prod"
    )
    assert payload["custom_details"]["Image"] == "registry.example/checkout:9f2c1e"
    assert trigger["links"] == [{"href": "https://ci.example/shop/checkout/77", "text": "View details"}]
    [alert] = pd.alerts_for(trigger["dedup_key"])
    assert alert.status == "resolved"


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("info", "info"),
        ("warning", "warning"),
        ("error", "error"),
        ("critical", "critical"),
        ("fatal", "error"),
    ],
)
def test_severity_is_mapped(pd: PagerDutyFake, slot: str, ours: str, theirs: str):
    send(
        config(pd, slot),
        replace(SAMPLES["incident_triggered"], severity=ours, lifecycle_key=f"k-{ours}-{slot}"),
    )
    assert bodies(pd, slot)[-1]["payload"]["severity"] == theirs


def test_acknowledge_and_resolve_patterns_are_configurable(pd: PagerDutyFake, slot: str):
    cfg = config(
        pd,
        slot,
        acknowledge_on=["incident.acknowledged"],
        resolve_on=["incident.resolved"],
        source="prod-mon",
    )
    incident = replace(SAMPLES["incident_triggered"], lifecycle_key=f"incident:{slot}")
    for event_type in (
        "incident.triggered",
        "incident.acknowledged",
        "incident.resolved",
        "pipeline.success",
    ):
        send(cfg, replace(incident, event_type=event_type))
    actions = [b["event_action"] for b in bodies(pd, slot)]
    assert actions == ["trigger", "acknowledge", "resolve", "trigger"]
    assert bodies(pd, slot)[0]["payload"]["source"] == "prod-mon"
    # After a resolve, a new trigger opens a new alert on the same key.
    first, second = pd.alerts_for(f"incident:{slot}")
    assert (first.status, first.history) == ("resolved", ["trigger", "acknowledge", "resolve"])
    assert (second.status, second.history) == ("triggered", ["trigger"])


def test_oversized_event_is_accepted(pd: PagerDutyFake, slot: str):
    message = replace(oversized(scale=5), lifecycle_key="x" * 600)
    receipt = send(config(pd, slot), message)
    assert receipt.provider_ref is not None and len(receipt.provider_ref) <= 255


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (invalid("'payload.summary' is missing"), InvalidPayload),
        (invalid("Length of 'routing_key' is incorrect (should be 32 characters)"), AuthFailed),
        (invalid("Invalid routing key"), AuthFailed),
        (rate_limited(), RateLimited),
        (Reply(500, "oops"), ProviderUnavailable),
        (Reply(503, "down"), ProviderUnavailable),
    ],
)
def test_errors_are_classified(pd: PagerDutyFake, slot: str, reply: Reply, error: type[DeliveryError]):
    pd.script(pd.enqueue_path(slot), reply)
    with pytest.raises(DeliveryError) as info:
        send(config(pd, slot), SAMPLES["incident_triggered"])
    assert type(info.value) is error
    assert KEY not in str(info.value) + (info.value.response_excerpt or "")


def test_invalid_event_detail_names_the_reason(pd: PagerDutyFake, slot: str):
    pd.script(pd.enqueue_path(slot), invalid("'payload.summary' is missing", f"routing key {KEY} echoed"))
    with pytest.raises(DeliveryError) as info:
        send(config(pd, slot), SAMPLES["incident_triggered"])
    assert "'payload.summary' is missing" in info.value.detail
    assert KEY not in info.value.detail


def test_config_validation_and_masked_preview():
    for bad in (
        {"routing_key": "short"},
        {"routing_key": KEY, "resolve_on": ["bad pattern!"]},
        {"routing_key": KEY, "events_url": "ftp://x"},
    ):
        with pytest.raises(ValueError):
            PagerDutyConfig.model_validate(bad)
    cfg = PagerDutyConfig.model_validate({"routing_key": KEY})
    preview = PagerDutyProvider(http=None).preview(SAMPLES["incident_triggered"], cfg)  # type: ignore[arg-type]
    assert KEY not in json.dumps(preview) and preview["routing_key"] == "********"
    assert preview["payload"]["severity"] == "critical"
