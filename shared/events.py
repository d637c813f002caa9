"""What an accepted event is, independent of how it arrived: type, kind, severity and lifecycle key.

The API's request schemas turn a request body into an `EventFacts`; routing and rendering read only this.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2, "critical": 3}

RELEASE_TYPES = ("release.created", "release.promoted", "release.rollout_changed")
PIPELINE_TYPES = ("pipeline.trigger", "pipeline.success", "pipeline.failure")


@dataclass(frozen=True)
class EventFacts:
    id: uuid.UUID
    kind: str  # release | pipeline | incident
    type: str
    project: str
    environment: str | None
    severity: str
    payload: dict[str, Any]
    created_at: datetime
    lifecycle_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def severity_at_least(severity: str, minimum: str) -> bool:
    return SEVERITY_ORDER.get(severity, 0) >= SEVERITY_ORDER.get(minimum, 0)


def release_severity(event_type: str, payload: dict[str, Any]) -> str:
    # A mandatory release asks people to act (upgrade), so it stands out from routine ones.
    return "warning" if payload.get("mandatory") else "info"


def pipeline_severity(stage: str) -> str:
    return "error" if stage == "failure" else "info"


def release_lifecycle_key(payload: dict[str, Any]) -> str:
    return f"release:{payload['project']}:{payload['version']}"


def pipeline_lifecycle_key(payload: dict[str, Any]) -> str:
    # trigger -> success|failure of one pipeline run on one image meet on this key
    tag = payload.get("image_tag") or ""
    return f"pipeline:{payload['project']}:{payload['app']}:{payload['pipeline']}:{tag}"
