"""Gateway lifecycles on push and email, end to end: PushGo clients (channel auth) -> API -> PostgreSQL ->
Redis -> the real celery worker -> the APNs, FCM, SMTP and SES fakes, which keep every request as it arrived.

- push: every notification of one incident carries the lifecycle as its collapse id (APNs `apns-collapse-id`
  and `thread-id`, FCM `collapse_key` and notification `tag`), so a device shows only the newest state; the
  state's severity is the APNs interruption level and the FCM priority; `ciphertext` arrives byte for byte;
  a `/message`'s `ttl` is the expiry (`apns-expiration`, FCM `ttl`), capped at 28 days;
- email: one thread per lifecycle: the first mail's Message-ID is the root, each later state replies to the
  mail shown before it (In-Reply-To) and References carries the whole chain (RFC 5322 section 3.6.4), on
  SMTP and on SES.

Each state is sent once the previous one is delivered, so every state reaches the destination (none is
superseded) and the expectations are exact.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes.apns import KEY_ID, TEAM_ID, FakeApns, PushRequest, device_token, generated_p8
from tests.fakes.fcm import FakeFcm, registration_token
from tests.fakes.ses import FakeSes, generated_credentials
from tests.fakes.smtp import PASSWORD, USERNAME, FakeSmtp, Received, session_tls
from tests.integration.lifecycles import channel_credentials, routed, settled
from tests.integration.stack import Stack, wait_until
from tests.integration.test_gateway import event_body, ok, update_body

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

MAX_PUSH_TTL_S = 28 * 86400
#: how far an expiry computed at ingest or send time may be from one computed here (a loaded machine)
CLOCK_SLACK_S = 60


@pytest.fixture(scope="module")
def apns() -> Iterator[tuple[FakeApns, str]]:
    p8, public_key = generated_p8()
    with FakeApns(session_tls(), public_key) as server:
        yield server, p8


@pytest.fixture(scope="module")
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm() as server:
        yield server


def expected_collapse_id(key: str) -> str:
    """APNs allows 64 bytes: a gateway key (kind, 32-hex channel, 32-hex id) is longer, so its SHA-256 hex."""
    return key if len(key.encode()) <= 64 else hashlib.sha256(key.encode()).hexdigest()


def step(
    api: TestClient,
    stack: Stack,
    route: str,
    body: dict[str, Any],
    integrations: int,
    *,
    sequence: int | None = None,
) -> str:
    """Post one gateway call, the lifecycle's `sequence`-th (by default: message 1, create 1, update 2,
    close 3), and wait until every integration delivered it; return its lifecycle key."""
    data = ok(api.post(route, json=body))
    if "message_id" in data:
        key = f"message:{body['channel_id']}:{data['message_id']}"
    else:
        key = f"incident:{body['channel_id']}:{data['event_id']}"
    if sequence is None:
        sequence = {"/message": 1, "/event/create": 1, "/event/update": 2, "/event/close": 3}[route]
    wait_until(lambda: settled(stack, key, integrations, sequence), 60, f"{route} of {key} never delivered")
    return key


def push_integrations(
    api: TestClient, project: str, apns: tuple[FakeApns, str], fcm: FakeFcm
) -> tuple[str, str]:
    server, p8 = apns
    apns_token, fcm_token = device_token(), registration_token()
    apns_config = {
        "team_id": TEAM_ID,
        "key_id": KEY_ID,
        "private_key": p8,
        "topic": server.topic,
        "endpoint_url": server.endpoint_url,
        "device_tokens": [apns_token],
    }
    fcm_config = {
        "service_account": fcm.service_account(),
        "api_base_url": fcm.api_base_url,
        "device_tokens": [fcm_token],
    }
    for provider, config in (("apns", apns_config), ("fcm", fcm_config)):
        routed(api, project, provider, config, event_types=["incident", "message"])
    return apns_token, fcm_token


def apns_requests(server: FakeApns, token: str) -> list[PushRequest]:
    with server._lock:
        return sorted((r for r in server.requests if r.token == token), key=lambda r: r.arrived_at)


def fcm_messages(server: FakeFcm, token: str) -> list[dict[str, Any]]:
    with server._mutex:
        return [m for m in server.delivered if m.get("token") == token]


def test_incident_on_apns_and_fcm_is_one_notification_per_lifecycle_with_severity_and_ciphertext(
    api: TestClient, stack: Stack, apns: tuple[FakeApns, str], fcm: FakeFcm, project: str
):
    apns_token, fcm_token = push_integrations(api, project, apns, fcm)
    creds = channel_credentials(api, project)
    blobs = ["E2EE:v1:" + "A" * 40 + "==", "E2EE:v1:+/=\\u00e9 opaque"]
    create = event_body(creds, severity="critical", message="Replica delay > 30s", ciphertext=blobs[0])
    key = step(api, stack, "/event/create", create, 2)
    event_id = key.rsplit(":", 1)[1]
    update = update_body(creds, event_id, severity="low", message="Lag falling", ciphertext=blobs[1])
    step(api, stack, "/event/update", update, 2)
    close = update_body(creds, event_id, status="resolved", severity="normal", message="Recovered")
    step(api, stack, "/event/close", close, 2)

    cid = expected_collapse_id(key)
    pushes = apns_requests(apns[0], apns_token)
    assert [p.status for p in pushes] == [200, 200, 200]
    assert {p.headers["apns-collapse-id"] for p in pushes} == {cid}
    assert {p.payload["aps"]["thread-id"] for p in pushes} == {cid}
    assert [p.payload["aps"]["interruption-level"] for p in pushes] == ["critical", "passive", "active"]
    assert [p.payload["herald"].get("ciphertext") for p in pushes] == [*blobs, None]
    assert [p.payload["aps"]["alert"]["body"] for p in pushes] == [
        "Replica delay > 30s",
        "Lag falling",
        "Recovered",
    ]

    messages = fcm_messages(fcm, fcm_token)
    assert len(messages) == 3
    assert {m["android"]["collapse_key"] for m in messages} == {cid}
    assert {m["android"]["notification"]["tag"] for m in messages} == {cid}
    assert {m["apns"]["headers"]["apns-collapse-id"] for m in messages} == {cid}
    assert [m["android"]["priority"] for m in messages] == ["high", "normal", "high"]
    assert [m["data"].get("ciphertext") for m in messages] == [*blobs, None]


def test_message_ttl_is_the_push_expiry_capped_at_28_days(
    api: TestClient, stack: Stack, apns: tuple[FakeApns, str], fcm: FakeFcm, project: str
):
    apns_token, fcm_token = push_integrations(api, project, apns, fcm)
    creds = channel_credentials(api, project)
    sent_at = time.time()
    hour = {**creds, "title": "Deploy window", "body": "in an hour", "ttl": int(sent_at) + 3600}
    step(api, stack, "/message", hour, 2)
    # Milliseconds, as the newer PushGo pages allow, and 60 days out: capped at 28 days.
    far = {**creds, "title": "Quarterly", "body": "far out", "ttl": int((sent_at + 60 * 86400) * 1000)}
    step(api, stack, "/message", far, 2)

    first, second = apns_requests(apns[0], apns_token)
    assert abs(int(first.headers["apns-expiration"]) - (sent_at + 3600)) <= CLOCK_SLACK_S
    assert abs(int(second.headers["apns-expiration"]) - (sent_at + MAX_PUSH_TTL_S)) <= CLOCK_SLACK_S
    assert first.headers["apns-collapse-id"] != second.headers["apns-collapse-id"]  # two lifecycles

    hour_msg, far_msg = fcm_messages(fcm, fcm_token)
    assert abs(int(hour_msg["android"]["ttl"].removesuffix("s")) - 3600) <= CLOCK_SLACK_S
    assert far_msg["android"]["ttl"] == f"{MAX_PUSH_TTL_S}s"


def smtp_config(smtp: FakeSmtp, to: str) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": smtp.port,
        "username": USERNAME,
        "password": PASSWORD,
        "from_address": "Herald <herald@example.com>",
        "to": [to],
    }


def thread(mails: list[Received]) -> list[tuple[str, str | None, list[str]]]:
    """(Message-ID, In-Reply-To, References as a list) of each mail, in arrival order."""
    return [
        (
            str(m.message["Message-ID"]),
            None if m.message["In-Reply-To"] is None else str(m.message["In-Reply-To"]),
            str(m.message["References"] or "").split(),
        )
        for m in mails
    ]


def test_incident_on_smtp_is_one_thread(api: TestClient, stack: Stack, project: str):
    """Six states, each delivered before the next: one thread, every mail's References the whole chain back
    to the root. Before: References named only the previous mail; and the sixth state's kept chain (six
    Message-IDs) did not fit delivery.provider_ref (255), so recording its outcome failed."""
    to = f"oncall-{project}@example.com"
    with FakeSmtp(session_tls()) as smtp:
        routed(api, project, "smtp", smtp_config(smtp, to))
        creds = channel_credentials(api, project)
        key = step(api, stack, "/event/create", event_body(creds, message="step 0"), 1)
        event_id = key.rsplit(":", 1)[1]
        for i in range(1, 5):
            body = update_body(creds, event_id, message=f"step {i}", event_time=1713750000 + i)
            step(api, stack, "/event/update", body, 1, sequence=1 + i)
        close = update_body(creds, event_id, status="resolved", message="step 5", event_time=1713750100)
        step(api, stack, "/event/close", close, 1, sequence=6)
        mails = [m for m in smtp.wait_for(6) if m.rcpt_tos == [to]]

    assert len(mails) == 6
    headers = thread(mails)
    ids = [message_id for message_id, _, _ in headers]
    assert len(set(ids)) == 6
    assert headers[0] == (ids[0], None, [])
    for n in range(1, 6):
        assert headers[n] == (ids[n], ids[n - 1], ids[:n]), f"mail {n}: {headers[n]}"
    assert "step 5" in mails[-1].part("plain")


def test_incident_on_ses_is_one_thread(api: TestClient, stack: Stack, project: str):
    """The same lifecycle through SES (SigV4-signed SendEmail): In-Reply-To and References as message
    headers, on the Message-IDs SES gives its mails. Before: SES mails carried no threading headers."""
    akid, secret = generated_credentials()
    to = f"oncall-{project}@example.com"
    with FakeSes(akid, secret) as ses:
        config = {
            "access_key_id": akid,
            "secret_access_key": secret,
            "region": ses.region,
            "endpoint_url": ses.endpoint_url,
            "from_address": "herald@example.com",
            "to": [to],
        }
        routed(api, project, "ses", config)
        creds = channel_credentials(api, project)
        key = step(api, stack, "/event/create", event_body(creds, message="step 0"), 1)
        event_id = key.rsplit(":", 1)[1]
        step(api, stack, "/event/update", update_body(creds, event_id, message="step 1"), 1)
        close = update_body(creds, event_id, status="resolved", message="step 2", event_time=1713750100)
        step(api, stack, "/event/close", close, 1)
        mails = [m for m in ses.sent if m.to == [to]]
        assert ses.rejected == []
    assert len(mails) == 3
    ids = [m.message_id for m in mails]
    assert [m.headers for m in mails] == [
        {},
        {"In-Reply-To": ids[0], "References": ids[0]},
        {"In-Reply-To": ids[1], "References": f"{ids[0]} {ids[1]}"},
    ]
    assert "step 2" in mails[-1].text
