"""Helpers for the lifecycle tests (one message per lifecycle, through the real workers): route an integration
to a project's gateway events, open a gateway channel, and read a lifecycle's delivery rows back from PostgreSQL.

Shared by tests/integration/test_lifecycles.py (Slack bot, Discord, PagerDuty, webhook) and
tests/integration/test_lifecycle_email_push.py (APNs, FCM, SMTP, SES).
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.integration.stack import AUTH, Stack
from tests.integration.test_gateway import make_channel

#: delivery states a lifecycle's rows end in
FINAL = {"delivered", "superseded", "dead"}
CHANNEL_PASSWORD = "s3cret-pass"


def routed(api: TestClient, project: str, provider: str, config: dict[str, Any], **route: Any) -> str:
    """An integration of `provider` for `project` and a route to it of the project's incidents (by default)."""
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={"name": f"lc-{provider}", "provider": provider, "project": project, "config": config},
    )
    assert r.status_code == 201, r.text
    integration_id: str = r.json()["data"]["id"]
    r = api.post(
        "/v1/routes",
        headers=AUTH,
        json={"integration_id": integration_id, "project": project, "event_types": ["incident"], **route},
    )
    assert r.status_code == 201, r.text
    return integration_id


def channel_credentials(api: TestClient, project: str) -> dict[str, str]:
    """A new gateway channel of `project`: the channel_id and password a PushGo client sends."""
    channel = make_channel(api, project, password=CHANNEL_PASSWORD)
    return {"channel_id": channel["channel_id"], "password": CHANNEL_PASSWORD}


def lifecycle_rows(stack: Stack, key: str) -> list[Any]:
    """Every delivery of the lifecycle `key`: integration, state, attempts, last error detail, sequence."""
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT d.integration_id, d.state, d.attempt_count, d.last_error_detail,"
                        " CAST(e.payload->'lifecycle'->>'sequence' AS int) AS sequence"
                        " FROM delivery d JOIN event e ON e.id = d.event_id WHERE e.lifecycle_key = :k"
                    ),
                    {"k": key},
                )
            )
    finally:
        engine.dispose()


def settled(stack: Stack, key: str, integrations: int, last_sequence: int) -> bool:
    """Every delivery of the lifecycle is final and each integration delivered the last state."""
    rows = lifecycle_rows(stack, key)
    last = [r for r in rows if r.sequence == last_sequence and r.state == "delivered"]
    return len(last) == integrations and all(r.state in FINAL for r in rows)
