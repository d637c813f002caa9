"""Prometheus metrics from the API and from a prefork worker's aggregated metrics port."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.server import FakeServer, Reply
from tests.integration.lifecycles import channel_credentials, lifecycle_rows, routed, settled
from tests.integration.stack import AUTH, Stack, create_webhook, post_release, wait_for_deliveries, wait_until
from tests.integration.test_gateway import event_body, ok, update_body

pytestmark = pytest.mark.integration


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(all_samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in all_samples.items() if n == name and set(labels.items()) <= set(ls))


def test_api_counts_submissions_and_reports_state(api, project):
    before = samples(api.get("/metrics").text)
    post_release(api, project)
    assert api.post("/v1/events/release", headers=AUTH, json={"type": "nope"}).status_code == 422
    after = samples(api.get("/metrics").text)
    assert value(after, "herald_events_accepted_total", event_type="release", status_code="202") == (
        value(before, "herald_events_accepted_total", event_type="release", status_code="202") + 1
    )
    assert value(after, "herald_events_accepted_total", event_type="release", status_code="422") >= 1
    assert value(after, "herald_api_request_duration_seconds_count", route="/v1/events/release") >= 2
    names = {n for n, _ in after}
    for gauge in ("herald_queue_depth", "herald_outbox_backlog", "herald_queue_oldest_age_seconds"):
        assert gauge in names
    # no unbounded labels: the project never appears as a label value
    assert project not in api.get("/metrics").text


def test_worker_metrics_aggregate_pool_children(own_stack: Stack, receiver: FakeServer, project):
    own_stack.start_beat()
    own_stack.start_worker(concurrency=2)
    ok_path, bad_path = f"/m/{project}/ok", f"/m/{project}/bad"
    receiver.script(bad_path, *[Reply(400, b"no")] * 5)
    with own_stack.client() as api:
        create_webhook(api, receiver.url(ok_path), project=project)
        create_webhook(api, receiver.url(bad_path), project=project)
        event_ids = [post_release(api, project, version=f"1.0.{i}") for i in range(5)]
        for event_id in event_ids:
            wait_for_deliveries(api, event_id, count=2)
    url = f"http://127.0.0.1:{own_stack.worker_metrics_port}/metrics"
    scraped = samples(urllib.request.urlopen(url, timeout=5).read().decode())
    assert value(scraped, "herald_deliveries_total", provider="webhook", outcome="delivered") == 5
    assert (
        value(
            scraped,
            "herald_deliveries_total",
            provider="webhook",
            outcome="dead",
            error_class="invalid_payload",
        )
        == 5
    )
    assert value(scraped, "herald_attempt_duration_seconds_count", provider="webhook") == 10
    assert value(scraped, "herald_delivery_latency_seconds_count", provider="webhook") == 5


def test_superseded_deliveries_are_counted_as_their_own_outcome(
    own_stack: Stack, receiver: FakeServer, hook_path: str, project: str
):
    """A lifecycle's older pending states that end `superseded` are counted in herald_deliveries_total with
    outcome="superseded" (not dead, not delivered), once each. The edit after the root hangs at the receiver,
    two more updates arrive meanwhile: the older of them is superseded when the newest is due. Before: the
    gate superseded rows and nothing counted them (the dashboard's outcome panel never showed them)."""
    own_stack.start_beat()
    own_stack.start_worker(concurrency=4)
    with own_stack.client() as api:
        routed(api, project, "webhook", {"url": receiver.url(hook_path)})
        creds = channel_credentials(api, project)
        event_id = ok(api.post("/event/create", json=event_body(creds, message="step 0")))["event_id"]
        key = f"incident:{creds['channel_id']}:{event_id}"
        wait_until(lambda: settled(own_stack, key, 1, 1), 60, "the root was never delivered")
        receiver.script(hook_path, Reply(200, b"ok", delay_s=3))
        for i in (1, 2, 3):
            body = update_body(creds, event_id, message=f"step {i}", event_time=1713750000 + i)
            ok(api.post("/event/update", json=body))
            if i == 1:
                receiver.wait_for(hook_path, 2, timeout_s=60)  # step 1 is in flight (held 3 s)
        wait_until(
            lambda: settled(own_stack, key, 1, 4), 60, f"never settled: {lifecycle_rows(own_stack, key)}"
        )
    states = [r.state for r in lifecycle_rows(own_stack, key)]
    assert states.count("superseded") >= 1 and "dead" not in states, states
    url = f"http://127.0.0.1:{own_stack.worker_metrics_port}/metrics"
    scraped = samples(urllib.request.urlopen(url, timeout=5).read().decode())
    counted = value(
        scraped, "herald_deliveries_total", provider="webhook", outcome="superseded", error_class=""
    )
    assert counted == states.count("superseded")
    assert value(scraped, "herald_deliveries_total", provider="webhook", outcome="delivered") == states.count(
        "delivered"
    )
    assert value(scraped, "herald_deliveries_total", provider="webhook", outcome="dead") == 0
