"""Sample events rendered through shared.rendering, for golden files and provider tests (fixed ids and times)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from shared.events import EventFacts, pipeline_lifecycle_key, release_lifecycle_key
from shared.rendering import RenderedMessage, render

CREATED_AT = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


def _event(
    n: int, kind: str, type_: str, severity: str, payload: dict[str, Any], key: str | None
) -> EventFacts:
    return EventFacts(
        id=uuid.UUID(int=n),
        kind=kind,
        type=type_,
        project=payload["project"],
        environment=payload.get("environment"),
        severity=severity,
        payload={"type": type_, **payload},
        created_at=CREATED_AT,
        lifecycle_key=key,
    )


def _release(n: int, type_: str, **extra: Any) -> RenderedMessage:
    payload = {
        "project": "nitro-ios",
        "environment": "prod",
        "version": "4.2.0",
        "description": "Fixes the login crash on iOS 17 & speeds up <sync> by 30%.",
        "url": "https://nitro.example/releases/420",
        **extra,
    }
    severity = "warning" if payload.get("mandatory") else "info"
    return render(_event(n, "release", type_, severity, payload, release_lifecycle_key(payload)))


def _pipeline(n: int, stage: str) -> RenderedMessage:
    payload = {
        "app": "checkout",
        "project": "shop",
        "environment": "prod",
        "cluster": "eu-1",
        "pipeline": "deploy-prod",
        "pipeline_type": "cd",
        "stage": stage,
        "triggered_by": "ana@example.com",
        "image_repo": "registry.example/checkout",
        "image_tag": "9f2c1e",
        "url": "https://ci.example/shop/checkout/77",
    }
    severity = "error" if stage == "failure" else "info"
    return render(
        _event(n, "pipeline", f"pipeline.{stage}", severity, payload, pipeline_lifecycle_key(payload))
    )


def _incident(n: int) -> RenderedMessage:
    payload = {
        "project": "shop",
        "environment": "prod",
        "title": "Checkout error rate above 5% for 10 minutes",
        "message": "p99 latency 4.2 s; 502s from the payments gateway.\nRunbook: https://runbooks.example/checkout",
        "url": "https://grafana.example/d/checkout",
    }
    return render(
        _event(n, "incident", "incident.triggered", "critical", payload, "incident:shop:checkout-errors")
    )


SAMPLES: dict[str, RenderedMessage] = {
    "release_created": _release(1, "release.created", mandatory=True),
    "release_promoted": _release(2, "release.promoted", from_environment="staging"),
    "pipeline_failure": _pipeline(3, "failure"),
    "pipeline_success": _pipeline(4, "success"),
    "incident_triggered": _incident(5),
}


def oversized(base: RenderedMessage | None = None, *, scale: int = 1) -> RenderedMessage:
    """A message over every vendor's limits: long title and text, many long fields, markup characters."""
    base = base or SAMPLES["pipeline_failure"]
    return replace(
        base,
        title="Deploy <failed> & " + "T" * 400 * scale,
        text=("Line with <angle> & ampersand. " * 40 + "\n") * 20 * scale,
        fields=[(f"Field {i} <&>", "v&<>" * 200 * scale) for i in range(120 * scale)],
    )
