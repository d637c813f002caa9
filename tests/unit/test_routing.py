"""shared.routing: type patterns, pipeline filters (empty = all current and future), project binding, plan."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.events import EventFacts
from shared.routing import (
    IntegrationTarget,
    RouteRule,
    expand_type_pattern,
    plan,
    route_mismatch,
    type_matches,
)


def pipeline(stage: str = "failure", **payload: str) -> EventFacts:
    body = {"app": "checkout", "cluster": "eu-1", "pipeline": "deploy-prod", "project": "shop", **payload}
    return EventFacts(
        id=uuid.uuid4(),
        kind="pipeline",
        type=f"pipeline.{stage}",
        project=body["project"],
        environment="prod",
        severity="error" if stage == "failure" else "info",
        payload=body,
        created_at=datetime.now(UTC),
    )


def release(event_type: str = "release.created") -> EventFacts:
    return EventFacts(
        id=uuid.uuid4(),
        kind="release",
        type=event_type,
        project="shop",
        environment="prod",
        severity="info",
        payload={"project": "shop", "environment": "prod", "version": "1"},
        created_at=datetime.now(UTC),
    )


def rule(**kw: object) -> RouteRule:
    base: dict[str, object] = {
        "id": uuid.uuid4(),
        "integration_id": uuid.uuid4(),
        "project": None,
        "environments": (),
        "event_types": (),
        "min_severity": "info",
    }
    return RouteRule(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "expanded"),
    [
        ("release.*", ["release.*"]),
        ("pipeline.success|failure", ["pipeline.success", "pipeline.failure"]),
        ("pipeline.trigger|success|failure", ["pipeline.trigger", "pipeline.success", "pipeline.failure"]),
        ("release.*|pipeline.failure", ["release.*", "pipeline.failure"]),
        ("incident", ["incident"]),
    ],
)
def test_expand_type_pattern(pattern, expanded):
    assert expand_type_pattern(pattern) == expanded


@pytest.mark.parametrize(
    ("event_type", "pattern", "matches"),
    [
        ("release.created", "release.*", True),
        ("release.promoted", "release.created", False),
        ("pipeline.failure", "pipeline.success|failure", True),
        ("pipeline.trigger", "pipeline.success|failure", False),
        ("incident.triggered", "incident", True),  # a bare kind is every type of that kind
        ("release.created", "incident", False),
        ("releases.created", "release", False),  # a kind prefix is a whole word, not a string prefix
        ("pipeline.success", "*", True),
    ],
)
def test_type_matches(event_type, pattern, matches):
    assert type_matches(event_type, pattern) is matches


def test_empty_pipeline_filters_mean_all_current_and_future():
    assert route_mismatch(pipeline(app="brand-new-app"), rule()) is None


@pytest.mark.parametrize(
    ("filters", "reason"),
    [
        ({"apps": ("cart",)}, "app 'checkout' not in ['cart']"),
        ({"clusters": ("us-1",)}, "cluster 'eu-1' not in ['us-1']"),
        ({"pipelines": ("build",)}, "pipeline 'deploy-prod' not in ['build']"),
    ],
)
def test_pipeline_filters_name_the_reason(filters, reason):
    assert route_mismatch(pipeline(), rule(**filters)) == reason
    assert (
        route_mismatch(
            pipeline(), rule(**{k: (*v, *pipeline().payload.values()) for k, v in filters.items()})
        )
        is None
    )


def test_pipeline_filters_do_not_apply_to_releases():
    assert route_mismatch(release(), rule(apps=("cart",), clusters=("us-1",))) is None


def test_filters_in_order_type_then_severity():
    r = rule(event_types=("pipeline.success|failure",), min_severity="error")
    assert (
        route_mismatch(pipeline("trigger"), r)
        == "event type 'pipeline.trigger' not in ['pipeline.success|failure']"
    )
    assert route_mismatch(pipeline("success"), r) == "severity 'info' below 'error'"
    assert route_mismatch(pipeline("failure"), r) is None
    assert route_mismatch(pipeline(), rule(project="other")) == "project 'shop' is not 'other'"
    assert (
        route_mismatch(pipeline(), rule(environments=("staging",))) == "environment 'prod' not in ['staging']"
    )


def test_plan_dedupes_respects_binding_and_skips_disabled():
    bound, disabled, free = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    targets = {
        bound: IntegrationTarget(bound, "webhook", "other-project", True),
        disabled: IntegrationTarget(disabled, "webhook", None, False),
        free: IntegrationTarget(free, "webhook", None, True),
    }
    routes = [
        rule(integration_id=bound),  # catch-all route, but the integration is bound to another project
        rule(integration_id=disabled),
        rule(integration_id=free, event_types=("release.*",)),
        rule(integration_id=free),  # a second route to the same integration: one delivery
        rule(integration_id=uuid.uuid4()),  # integration deleted meanwhile
    ]
    planned = {p.integration_id: p.state for p in plan(release(), routes, targets)}
    assert planned == {disabled: "skipped", free: "pending"}
