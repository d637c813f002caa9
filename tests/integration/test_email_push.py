"""Email and push end to end: API -> PostgreSQL -> Redis -> celery worker -> local SMTP/SES/APNs/FCM fakes.

The SMTP and APNs fakes serve the session's generated certificate, whose CA the shared stack's worker trusts.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.fakes.apns import KEY_ID, TEAM_ID, FakeApns, device_token, generated_p8
from tests.fakes.fcm import FakeFcm, fcm_error, registration_token
from tests.fakes.ses import FakeSes, generated_credentials
from tests.fakes.smtp import PASSWORD, USERNAME, FakeSmtp, TlsFiles, session_tls
from tests.integration.stack import AUTH, Stack, post_release, wait_for_deliveries

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]


@pytest.fixture(scope="module")
def tls() -> TlsFiles:
    """The certificate the shared stack's worker trusts (tests/integration/conftest.py sets HERALD_TLS_CA_FILE)."""
    return session_tls()


def create_integration(client: TestClient, provider: str, project: str, config: dict[str, Any]) -> str:
    r = client.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": f"{provider}-{uuid.uuid4().hex[:6]}",
            "provider": provider,
            "project": project,
            "config": config,
        },
    )
    assert r.status_code == 201, r.text
    integration_id: str = r.json()["data"]["id"]
    r = client.post("/v1/routes", headers=AUTH, json={"integration_id": integration_id, "project": project})
    assert r.status_code == 201, r.text
    return integration_id


def stored_config(client: TestClient, integration_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/integrations/{integration_id}", headers=AUTH)
    assert r.status_code == 200, r.text
    config: dict[str, Any] = r.json()["data"]["config"]
    return config


def db_rows(stack: Stack, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


def attempts(stack: Stack, delivery_id: str) -> list[tuple[int, str, str | None]]:
    rows = db_rows(
        stack,
        "SELECT attempt_no, outcome, error_class FROM attempt WHERE delivery_id = :d ORDER BY attempt_no",
        d=delivery_id,
    )
    return [(r[0], r[1], r[2]) for r in rows]


def progress(stack: Stack, delivery_id: str) -> dict[str, str]:
    [(value,)] = db_rows(stack, "SELECT progress FROM delivery WHERE id = :d", d=delivery_id)
    return dict(value or {})


def test_smtp_release_email_through_the_worker(api: TestClient, tls: TlsFiles, project: str):
    with FakeSmtp(tls) as smtp:
        create_integration(
            api,
            "smtp",
            project,
            {
                "host": "127.0.0.1",
                "port": smtp.port,
                "username": USERNAME,
                "password": PASSWORD,
                "from_address": "Herald <herald@example.com>",
                "to": ["ana@example.com", "bo@example.com"],
                "default": True,
            },
        )
        event_id = post_release(api, project)
        [got] = smtp.wait_for(1)
        [delivery] = wait_for_deliveries(api, event_id)
    assert delivery["state"] == "delivered"
    assert got.tls and got.authenticated
    assert sorted(got.rcpt_tos) == ["ana@example.com", "bo@example.com"]
    assert got.message["Subject"] == f"{project} 1.4.2 released to prod"
    assert "Fixes the login crash" in got.part("plain")
    assert 'href="https://admin.example/r/142"' in got.part("html")


def test_ses_signed_send_through_the_worker(api: TestClient, project: str):
    akid, secret = generated_credentials()
    with FakeSes(akid, secret) as ses:
        integration_id = create_integration(
            api,
            "ses",
            project,
            {
                "access_key_id": akid,
                "secret_access_key": secret,
                "region": "eu-west-1",
                "endpoint_url": ses.endpoint_url,
                "from_address": "herald@example.com",
                "to": ["ops@example.com"],
            },
        )
        [delivery] = wait_for_deliveries(api, post_release(api, project))
        assert delivery["state"] == "delivered", delivery
        assert len(ses.verified) == 1 and ses.rejected == []
    shown = stored_config(api, integration_id)
    assert shown["secret_access_key"] != secret  # masked by the API


def test_apns_unregistered_token_removed_and_retry_resends_only_the_rest(
    api: TestClient, stack: Stack, tls: TlsFiles, project: str
):
    p8, public_key = generated_p8()
    ok, gone, busy = device_token(), device_token(), device_token()
    with FakeApns(tls, public_key) as apns:
        apns.unregistered.add(gone)
        apns.script(busy, (503, "ServiceUnavailable"))
        integration_id = create_integration(
            api,
            "apns",
            project,
            {
                "team_id": TEAM_ID,
                "key_id": KEY_ID,
                "private_key": p8,
                "topic": apns.topic,
                "endpoint_url": apns.endpoint_url,
                "device_tokens": [ok, gone, busy],
            },
        )
        [delivery] = wait_for_deliveries(api, post_release(api, project))
        sent = [(r.token, r.status) for r in apns.requests]
    assert delivery["state"] == "delivered", delivery
    assert attempts(stack, delivery["id"]) == [
        (1, "retrying", "provider_unavailable"),
        (2, "delivered", None),
    ]
    # First attempt: all three; the retry: only the token that failed retryably.
    assert sorted(sent[:3]) == sorted([(ok, 200), (gone, 410), (busy, 503)])
    assert sent[3:] == [(busy, 200)]
    assert progress(stack, delivery["id"]) == {ok: "delivered", gone: "apns_Unregistered", busy: "delivered"}
    assert stored_config(api, integration_id)["device_tokens"] == [ok, busy]


def test_fcm_unregistered_token_removed_and_retry_resends_only_the_rest(
    api: TestClient, stack: Stack, project: str
):
    with FakeFcm() as fcm:
        ok, gone, limited = registration_token(), registration_token(), registration_token()
        fcm.unregistered.add(gone)
        fcm.script_target(limited, fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"))
        integration_id = create_integration(
            api,
            "fcm",
            project,
            {
                "service_account": fcm.service_account(),
                "api_base_url": fcm.api_base_url,
                "device_tokens": [ok, gone, limited],
                "topics": ["releases"],
            },
        )
        [delivery] = wait_for_deliveries(api, post_release(api, project))
        delivered = fcm.delivered_to()
    assert delivery["state"] == "delivered", delivery
    assert attempts(stack, delivery["id"]) == [(1, "retrying", "rate_limited"), (2, "delivered", None)]
    assert sorted(delivered) == sorted([ok, limited, "topic:releases"])  # each exactly once
    assert progress(stack, delivery["id"])[gone] == "fcm_UNREGISTERED"
    config = stored_config(api, integration_id)
    assert config["device_tokens"] == [ok, limited]
    assert config["service_account"]["private_key"] == "********"  # masked by the API


def test_integration_with_every_token_gone_is_dead_target_gone(api: TestClient, tls: TlsFiles, project: str):
    p8, public_key = generated_p8()
    gone = device_token()
    with FakeApns(tls, public_key) as apns:
        apns.unregistered.add(gone)
        integration_id = create_integration(
            api,
            "apns",
            project,
            {
                "team_id": TEAM_ID,
                "key_id": KEY_ID,
                "private_key": p8,
                "topic": apns.topic,
                "endpoint_url": apns.endpoint_url,
                "device_tokens": [gone],
            },
        )
        [delivery] = wait_for_deliveries(api, post_release(api, project))
    assert delivery["state"] == "dead" and delivery["dead_reason"] == "target_gone"
    assert stored_config(api, integration_id)["device_tokens"] == []
