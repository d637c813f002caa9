"""Prometheus metrics from the API and from a prefork worker's aggregated metrics port."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.server import FakeServer, Reply
from tests.integration.stack import AUTH, Stack, create_webhook, post_release, wait_for_deliveries

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
