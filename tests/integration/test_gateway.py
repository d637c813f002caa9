"""The PushGo-compatible gateway against real PostgreSQL: every contract rule of seed 002 and
reference/pushgo-api.md, the seed examples as written, op_id idempotency, lifecycle steps, channel auth."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.integration.stack import AUTH, Stack

pytestmark = pytest.mark.integration

SEED_CHANNEL = "06J0FZG1Y8XGG14VTQ4Y3G10MR"
SEED_PASSWORD = "pass-1234"


def make_channel(api: TestClient, project: str, **body: Any) -> dict[str, Any]:
    r = api.post("/v1/channels", headers=AUTH, json={"name": "ci", "project": project, **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


@pytest.fixture
def channel(api: TestClient, project: str) -> dict[str, str]:
    data = make_channel(api, project, password="s3cret-pass")
    return {"channel_id": data["channel_id"], "password": "s3cret-pass"}


def event_body(channel: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        **channel,
        "title": "Database lag",
        "status": "ongoing",
        "message": "Replica delay > 30s",
        "severity": "high",
        "event_time": 1713750000,
        **extra,
    }


def update_body(channel: dict[str, str], event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        **channel,
        "event_id": event_id,
        "status": "mitigating",
        "message": "Failover started",
        "severity": "high",
        "event_time": 1713750060,
        **extra,
    }


def ok(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["error"] is None and body["error_code"] is None
    assert body["data"]["accepted"] is True
    data: dict[str, Any] = body["data"]
    return data


def err(r: Any) -> tuple[int, str]:
    body = r.json()
    assert body["success"] is False and body["data"] is None and body["error"], body
    return r.status_code, body["error_code"]


def create_event(api: TestClient, channel: dict[str, str], **extra: Any) -> str:
    event_id: str = ok(api.post("/event/create", json=event_body(channel, **extra)))["event_id"]
    return event_id


def create_thing(api: TestClient, channel: dict[str, str], **extra: Any) -> str:
    thing_id: str = ok(api.post("/thing/create", json={**channel, "observed_at": 1713750000, **extra}))[
        "thing_id"
    ]
    return thing_id


# --- seeds, as written ---


def test_seed_002_event_create_example_works_as_written(api, stack: Stack):
    """Seed 002's curl body, byte for byte, after creating its channel; the answer has the seed's shape."""
    r = api.post(
        "/v1/channels",
        headers=AUTH,
        json={"name": "seed-002", "project": "seed", "channel_id": SEED_CHANNEL, "password": SEED_PASSWORD},
    )
    assert r.status_code in (201, 409), r.text  # 409: another test of this session made it already
    raw = (
        b'{ "channel_id": "06J0FZG1Y8XGG14VTQ4Y3G10MR", "password": "pass-1234", "title": "Database lag", '
        b'"status": "ongoing", "message": "Replica delay > 30s", "severity": "high", "event_time": 1713750000, '
        b'"started_at": 1713750000, "tags": ["db", "replica"] }'
    )
    r = api.post("/event/create", content=raw, headers={"Content-Type": "application/json"})
    body = r.json()
    assert r.status_code == 200, r.text
    assert set(body) == {"success", "data", "error", "error_code"}
    assert set(body["data"]) == {"channel_id", "op_id", "event_id", "thing_id", "accepted"}
    assert body["data"]["channel_id"] == SEED_CHANNEL and body["data"]["thing_id"] is None
    assert (
        len(body["data"]["event_id"]) == 32 and body["data"]["event_id"] == body["data"]["event_id"].lower()
    )
    assert body["data"]["op_id"]  # generated and echoed
    # the row is committed before the answer
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.connect() as conn:
        kind, type_, severity, key = conn.execute(
            text("SELECT kind, type, severity, lifecycle_key FROM event WHERE idempotency_key = :k"),
            {"k": f"gw:{SEED_CHANNEL}:{body['data']['op_id']}"},
        ).one()
    engine.dispose()
    assert (kind, type_, severity) == ("incident", "incident.created", "error")
    assert key == f"incident:{SEED_CHANNEL}:{body['data']['event_id']}"


def test_seed_000_message_example_works_as_written(api, channel):
    """Seed 000's minimal call: channel_id, password, title, body."""
    data = ok(
        api.post(
            "/message",
            json={**channel, "title": "Hello from PushGo", "body": "The automation path is working."},
        )
    )
    assert set(data) == {"channel_id", "op_id", "message_id", "thing_id", "accepted"}
    assert len(data["message_id"]) == 32


# --- contract rules, one per row: (route, change to a valid body, status, error_code) ---

LONG = "x" * 600


def _valid(route: str, channel: dict[str, str], ids: dict[str, str]) -> dict[str, Any]:
    if route == "/message":
        return {**channel, "title": "t"}
    if route == "/event/create":
        return event_body(channel)
    if route in ("/event/update", "/event/close"):
        return update_body(channel, ids["event_id"])
    if route == "/thing/create":
        return {**channel, "observed_at": 1713750000}
    return {**channel, "thing_id": ids["thing_id"], "observed_at": 1713750100}


RULES: list[tuple[str, str, dict[str, Any], tuple[int, str]]] = [
    ("unknown field", "/event/create", {"colour": "blue"}, (400, "unknown_field")),
    ("missing title on create", "/event/create", {"title": None}, (400, "missing_field")),
    ("missing status", "/event/create", {"status": None}, (400, "missing_field")),
    ("missing message", "/event/update", {"message": None}, (400, "missing_field")),
    ("missing severity", "/event/close", {"severity": None}, (400, "missing_field")),
    ("missing event_time", "/event/create", {"event_time": None}, (400, "missing_field")),
    ("missing event_id on update", "/event/update", {"event_id": None}, (400, "missing_field")),
    ("missing event_id on close", "/event/close", {"event_id": None}, (400, "missing_field")),
    ("missing password", "/event/create", {"password": None}, (400, "missing_field")),
    ("missing channel_id", "/message", {"channel_id": None}, (400, "missing_field")),
    ("event_id on create", "/event/create", {"event_id": "abc"}, (400, "event_id_not_allowed")),
    ("started_at on update", "/event/update", {"started_at": 1713750000}, (400, "started_at_not_allowed")),
    ("started_at on close", "/event/close", {"started_at": 1713750000}, (400, "started_at_not_allowed")),
    ("ended_at on create", "/event/create", {"ended_at": 1713750000}, (400, "ended_at_not_allowed")),
    ("ended_at on update", "/event/update", {"ended_at": 1713750000}, (400, "ended_at_not_allowed")),
    (
        "created_at on thing update",
        "/thing/update",
        {"created_at": 1713750000},
        (400, "created_at_not_allowed"),
    ),
    (
        "deleted_at on thing update",
        "/thing/update",
        {"deleted_at": 1713750000},
        (400, "deleted_at_not_allowed"),
    ),
    (
        "deleted_at on thing create",
        "/thing/create",
        {"deleted_at": 1713750000},
        (400, "deleted_at_not_allowed"),
    ),
    ("thing_id on thing create", "/thing/create", {"thing_id": "abc"}, (400, "thing_id_not_allowed")),
    ("missing observed_at", "/thing/create", {"observed_at": None}, (400, "missing_field")),
    ("missing thing_id on archive", "/thing/archive", {"thing_id": None}, (400, "missing_field")),
    ("empty status", "/event/create", {"status": ""}, (400, "empty_field")),
    ("status over 24", "/event/create", {"status": "s" * 25}, (400, "field_too_long")),
    ("empty message", "/event/update", {"message": "  "}, (400, "empty_field")),
    ("message over 512", "/event/create", {"message": "m" * 513}, (400, "field_too_long")),
    ("empty title on message", "/message", {"title": ""}, (400, "empty_field")),
    ("severity unknown on event", "/event/create", {"severity": "urgent"}, (400, "invalid_severity")),
    ("severity not a string", "/event/create", {"severity": 3}, (400, "invalid_type")),
    ("password too short", "/event/create", {"password": "short"}, (400, "invalid_password")),
    ("password too long", "/message", {"password": "p" * 129}, (400, "invalid_password")),
    ("bad channel_id", "/message", {"channel_id": "has space"}, (400, "invalid_id")),
    ("channel_id over 64", "/message", {"channel_id": "c" * 65}, (400, "invalid_id")),
    ("bad op_id", "/message", {"op_id": "op id"}, (400, "invalid_id")),
    ("op_id over 128", "/message", {"op_id": "o" * 129}, (400, "invalid_id")),
    ("bad event_id", "/event/update", {"event_id": "a/b"}, (400, "invalid_id")),
    ("event_time a string", "/event/create", {"event_time": "2024-04-22"}, (400, "invalid_timestamp")),
    ("event_time a bool", "/event/create", {"event_time": True}, (400, "invalid_timestamp")),
    ("event_time negative", "/event/create", {"event_time": -5}, (400, "invalid_timestamp")),
    ("33 tags", "/event/create", {"tags": [f"t{i}" for i in range(33)]}, (400, "too_many_items")),
    ("tag over 64", "/event/create", {"tags": ["t" * 65]}, (400, "field_too_long")),
    ("tag not a string", "/event/create", {"tags": [1]}, (400, "invalid_type")),
    ("tags not a list", "/event/create", {"tags": "db"}, (400, "invalid_type")),
    ("image over 2048", "/event/create", {"images": ["https://x/" + "i" * 2048]}, (400, "field_too_long")),
    ("image not a URL", "/message", {"images": ["not a url"]}, (400, "invalid_url")),
    ("33 images", "/message", {"images": [f"https://i/{i}" for i in range(33)]}, (400, "too_many_items")),
    ("metadata nested", "/event/create", {"metadata": {"a": {"b": 1}}}, (400, "metadata_not_scalar")),
    ("metadata array", "/message", {"metadata": {"a": [1]}}, (400, "metadata_not_scalar")),
    ("metadata null", "/message", {"metadata": {"a": None}}, (400, "metadata_not_scalar")),
    ("metadata key over 64", "/message", {"metadata": {"k" * 65: "v"}}, (400, "invalid_key")),
    ("metadata value over 512", "/message", {"metadata": {"k": "v" * 513}}, (400, "field_too_long")),
    ("metadata not an object", "/message", {"metadata": [1]}, (400, "invalid_type")),
    ("attrs array", "/event/create", {"attrs": {"hosts": ["a", "b"]}}, (400, "attrs_array")),
    ("attrs nested array", "/event/update", {"attrs": {"db": {"hosts": ["a"]}}}, (400, "attrs_array")),
    ("attrs two levels", "/event/create", {"attrs": {"a": {"b": {"c": 1}}}}, (400, "attrs_too_deep")),
    ("attrs not an object", "/thing/update", {"attrs": [1]}, (400, "invalid_type")),
    ("thing_id without occurred_at", "/message", {"thing_id": "abc"}, (400, "occurred_at_required")),
    ("location_type alone", "/thing/create", {"location_type": "rack"}, (400, "location_incomplete")),
    ("bad external_ids key", "/thing/create", {"external_ids": {"a b": "x"}}, (400, "invalid_key")),
    ("external_ids value a number", "/thing/create", {"external_ids": {"k": 1}}, (400, "invalid_type")),
    ("primary_image not a URL", "/thing/create", {"primary_image": "ftp://x"}, (400, "invalid_url")),
    ("url not a URL", "/message", {"url": "javascript:alert(1)"}, (400, "invalid_url")),
    ("ttl a string", "/message", {"ttl": "1d"}, (400, "invalid_timestamp")),
    ("body field on event", "/event/create", {"body": "x"}, (400, "body_not_allowed")),
    ("description over 4096", "/event/create", {"description": "d" * 4097}, (400, "field_too_long")),
    ("title over 256", "/message", {"title": "t" * 257}, (400, "field_too_long")),
    ("ttl on event", "/event/create", {"ttl": 1713750000}, (400, "ttl_not_allowed")),
    ("observed_at on event", "/event/update", {"observed_at": 1713750000}, (400, "observed_at_not_allowed")),
]


@pytest.fixture
def ids(api, channel) -> dict[str, str]:
    return {"event_id": create_event(api, channel), "thing_id": create_thing(api, channel)}


@pytest.mark.parametrize(("route", "change", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_contract_rule(api, channel, ids, route, change, expected):
    body = {k: v for k, v in {**_valid(route, channel, ids), **change}.items() if v is not None}
    assert err(api.post(route, json=body)) == expected


@pytest.mark.parametrize("route", ["/event/create", "/event/update", "/thing/create", "/message"])
def test_each_valid_body_is_accepted(api, channel, ids, route):
    ok(api.post(route, json=_valid(route, channel, ids)))


def test_malformed_json_non_object_and_413(api, channel):
    r = api.post("/event/create", content=b'{"title": ', headers={"Content-Type": "application/json"})
    assert err(r) == (400, "malformed_json")
    assert err(api.post("/event/create", json=[1, 2])) == (400, "invalid_body")
    big = event_body(channel, description="d" * 4000, metadata={f"k{i}": "v" * 500 for i in range(60)})
    assert err(api.post("/event/create", json=big)) == (413, "body_too_large")


def test_unknown_channel_and_wrong_password_get_the_same_answer(api, channel):
    unknown = api.post(
        "/message", json={"channel_id": "no-such-channel", "password": "whatever1", "title": "t"}
    )
    wrong = api.post("/message", json={**channel, "password": "wrong-password", "title": "t"})
    assert err(unknown) == err(wrong) == (401, "invalid_channel_credentials")
    assert unknown.json()["error"] == wrong.json()["error"]


def test_gateway_token_when_configured(stack: Stack, project):
    with stack.client(gateway_token="gw-token-123") as client:
        data = make_channel(client, project, password="s3cret-pass")
        body = {"channel_id": data["channel_id"], "password": "s3cret-pass", "title": "t"}
        assert err(client.post("/message", json=body)) == (401, "gateway_unauthorized")
        r = client.post("/message", json=body, headers={"Authorization": "Bearer wrong"})
        assert err(r) == (401, "gateway_unauthorized")
        ok(client.post("/message", json=body, headers={"Authorization": "Bearer gw-token-123"}))


# --- normalisation ---


def test_tags_images_trimmed_deduped_empty_description_absent_ms_times(api, channel):
    event_id = create_event(
        api,
        channel,
        tags=[" db ", "db", "replica", "  "],
        images=["https://i/a.png ", "https://i/a.png"],
        description="",
        event_time=1713750000123,  # milliseconds
        started_at=1713749990,
    )
    data = api.get(f"/v1/incidents/{event_id}", headers=AUTH).json()["data"]
    assert data["tags"] == ["db", "replica"]
    assert data["details"]["images"] == ["https://i/a.png"]
    assert data["description"] is None
    assert data["last_event_time"].startswith("2024-04-22T01:40:00.123")
    assert data["started_at"].startswith("2024-04-22T01:39:50")


def test_message_unknown_severity_falls_back_to_normal_and_ttl_is_capped(api, channel, stack: Stack):
    far = int(time.time()) + 90 * 24 * 3600
    data = ok(api.post("/message", json={**channel, "title": "t", "severity": "urgent", "ttl": far}))
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.connect() as conn:
        severity, payload = conn.execute(
            text("SELECT severity, payload FROM event WHERE idempotency_key = :k"),
            {"k": f"gw:{channel['channel_id']}:{data['op_id']}"},
        ).one()
    engine.dispose()
    assert severity == "warning" and payload["dispatch"]["severity"] == "normal"
    assert payload["ttl_s"] == 28 * 24 * 3600


def test_ciphertext_is_stored_untouched_and_never_echoed(api, channel, stack: Stack):
    blob = "AAECAwQF+/=base64-ish.opaque"
    data = ok(api.post("/message", json={**channel, "title": "t", "ciphertext": blob}))
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.connect() as conn:
        payload = conn.execute(
            text("SELECT payload FROM event WHERE idempotency_key = :k"),
            {"k": f"gw:{channel['channel_id']}:{data['op_id']}"},
        ).scalar_one()
    engine.dispose()
    assert payload["ciphertext"] == blob and "ciphertext" not in payload["dispatch"]
    assert blob not in str(data)


# --- op_id idempotency ---


def test_same_op_id_same_body_returns_first_answer_and_creates_nothing(api, channel, stack: Stack):
    body = event_body(channel, op_id="op-20260422-001")
    first = ok(api.post("/event/create", json=body))
    again = ok(api.post("/event/create", json=body))
    assert again == first and first["op_id"] == "op-20260422-001"
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM gateway_lifecycle WHERE channel_id = :c"), {"c": channel["channel_id"]}
        ).scalar_one()
    engine.dispose()
    assert count == 1


def test_a_create_is_one_transaction_whatever_fails(api, channel, stack: Stack):
    """The create routes write the op's claim, the lifecycle and the event in one statement: a value
    PostgreSQL cannot store (a NUL character) leaves none of them behind, so the op_id stays free."""
    for route, body in (
        ("/event/create", event_body(channel, op_id="op-nul-1", title="lag\x00")),
        ("/message", {**channel, "title": "build\x00", "op_id": "op-nul-2"}),
    ):
        assert err(api.post(route, json=body)) == (400, "invalid_character"), route
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.connect() as conn:
        left = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM gateway_dispatch WHERE channel_id = :c)"
                " + (SELECT count(*) FROM gateway_lifecycle WHERE channel_id = :c)"
                " + (SELECT count(*) FROM event WHERE idempotency_key LIKE :k)"
            ),
            {"c": channel["channel_id"], "k": f"gw:{channel['channel_id']}:%"},
        ).scalar_one()
    engine.dispose()
    assert left == 0
    # the op_id was not taken: the same op with a good body is accepted
    ok(api.post("/event/create", json=event_body(channel, op_id="op-nul-1")))


def test_same_op_id_other_body_is_409(api, channel):
    ok(api.post("/event/create", json=event_body(channel, op_id="op-x")))
    assert err(api.post("/event/create", json=event_body(channel, op_id="op-x", title="Other"))) == (
        409,
        "op_id_conflict",
    )
    # the same op_id on another route is another request too
    assert err(api.post("/message", json={**channel, "title": "t", "op_id": "op-x"})) == (
        409,
        "op_id_conflict",
    )


def test_op_ids_are_per_channel(api, project, channel):
    other = make_channel(api, project, password="other-pass")
    ok(api.post("/message", json={**channel, "title": "t", "op_id": "shared-op"}))
    ok(
        api.post(
            "/message",
            json={
                "channel_id": other["channel_id"],
                "password": "other-pass",
                "title": "u",
                "op_id": "shared-op",
            },
        )
    )


# --- lifecycle steps ---


def test_incident_lifecycle_state_and_dispatches(api, channel):
    event_id = create_event(api, channel, attrs={"region": "eu", "db": {"primary": "a", "lag_s": 31}})
    ok(
        api.post(
            "/event/update",
            json=update_body(
                channel, event_id, attrs={"region": None, "db": {"lag_s": 5}}, severity="critical"
            ),
        )
    )
    ok(
        api.post(
            "/event/close",
            json=update_body(
                channel,
                event_id,
                status="resolved",
                message="Replica caught up",
                severity="normal",
                event_time=1713750300,
            ),
        )
    )
    r = api.get(f"/v1/incidents/{event_id}", headers=AUTH)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["status"], data["message"], data["severity"], data["state"], data["open"]) == (
        "resolved",
        "Replica caught up",
        "normal",
        "closed",
        False,
    )
    assert data["attrs"] == {"db": {"primary": "a", "lag_s": 5}}  # null deleted, nested merged
    assert data["title"] == "Database lag"
    assert data["ended_at"].startswith("2024-04-22T01:45:00")
    assert [(d["sequence"], d["route"], d["type"]) for d in data["dispatches"]] == [
        (1, "/event/create", "incident.created"),
        (2, "/event/update", "incident.updated"),
        (3, "/event/close", "incident.resolved"),
    ]
    assert data["dispatch_count"] == 3


def test_update_and_close_of_unknown_event_are_404(api, channel):
    assert err(api.post("/event/update", json=update_body(channel, "nope"))) == (404, "event_not_found")
    assert err(api.post("/event/close", json=update_body(channel, "nope"))) == (404, "event_not_found")


def test_event_of_another_channel_is_404(api, project, channel):
    event_id = create_event(api, channel)
    other = make_channel(api, project, password="other-pass")
    creds = {"channel_id": other["channel_id"], "password": "other-pass"}
    assert err(api.post("/event/update", json=update_body(creds, event_id))) == (404, "event_not_found")


def test_update_after_close_refused_second_close_same_op_idempotent(api, channel):
    event_id = create_event(api, channel)
    close = update_body(channel, event_id, status="resolved", op_id="close-1")
    first = ok(api.post("/event/close", json=close))
    assert ok(api.post("/event/close", json=close)) == first
    assert err(api.post("/event/close", json={**close, "op_id": "close-2"})) == (409, "event_already_closed")
    assert err(api.post("/event/update", json=update_body(channel, event_id))) == (409, "event_closed")


def test_older_update_does_not_overwrite_newer_state(api, channel):
    event_id = create_event(api, channel)
    ok(api.post("/event/update", json=update_body(channel, event_id, status="newer", event_time=1713750200)))
    ok(
        api.post(
            "/event/update",
            json=update_body(channel, event_id, status="older", event_time=1713750100, attrs={"late": True}),
        )
    )
    data = api.get(f"/v1/incidents/{event_id}", headers=AUTH).json()["data"]
    assert data["status"] == "newer" and "late" not in data["attrs"]
    assert len(data["dispatches"]) == 3  # recorded, numbered, just not shown as current


def test_thing_lifecycle_and_refusals(api, channel):
    thing_id = create_thing(
        api,
        channel,
        title="db-1",
        attrs={"cpu": 10},
        external_ids={"aws": "i-1"},
        location_type="rack",
        location_value="r12",
    )
    ok(
        api.post(
            "/thing/update",
            json={
                **channel,
                "thing_id": thing_id,
                "observed_at": 1713750100,
                "attrs": {"cpu": 90},
                "external_ids": {"aws": None, "gcp": "g-1"},
            },
        )
    )
    ok(api.post("/thing/archive", json={**channel, "thing_id": thing_id, "observed_at": 1713750200}))
    update = {**channel, "thing_id": thing_id, "observed_at": 1713750300}
    assert err(api.post("/thing/update", json=update)) == (409, "thing_archived")
    ok(api.post("/thing/delete", json={**update, "deleted_at": 1713750400}))
    assert err(api.post("/thing/delete", json={**update, "op_id": "again"})) == (409, "thing_deleted")
    data = api.get(f"/v1/things/{thing_id}", headers=AUTH).json()["data"]
    assert (data["state"], data["open"], data["attrs"]) == ("deleted", False, {"cpu": 90})
    assert data["details"]["external_ids"] == {"gcp": "g-1"}
    assert data["started_at"].startswith("2024-04-22T01:40:00")
    assert [d["route"] for d in data["dispatches"]] == [
        "/thing/create",
        "/thing/update",
        "/thing/archive",
        "/thing/delete",
    ]
    for route in ("/thing/update", "/thing/archive", "/thing/delete"):
        body = {**channel, "thing_id": "missing", "observed_at": 1713750000}
        assert err(api.post(route, json=body)) == (404, "thing_not_found")


def test_thing_context_on_events_and_messages(api, channel):
    thing_id = create_thing(api, channel)
    data = ok(api.post("/event/create", json=event_body(channel, thing_id=thing_id)))
    assert data["thing_id"] == thing_id
    assert err(api.post("/event/create", json=event_body(channel, thing_id="missing"))) == (
        404,
        "thing_not_found",
    )
    # an update names the thing too (the step path checks it after claiming the op)
    event_id = data["event_id"]
    ok(api.post("/event/update", json=update_body(channel, event_id, thing_id=thing_id)))
    assert err(api.post("/event/update", json=update_body(channel, event_id, thing_id="missing"))) == (
        404,
        "thing_not_found",
    )
    ok(api.post("/message", json={**channel, "title": "t", "thing_id": thing_id, "occurred_at": 1713750000}))
    assert err(
        api.post("/message", json={**channel, "title": "t", "thing_id": "missing", "occurred_at": 1713750000})
    ) == (404, "thing_not_found")


# --- reading back: lists, filters, cursor ---


def test_incident_list_filters_and_cursor(api, project, channel):
    made = [create_event(api, channel, severity=s) for s in ("high", "low", "high")]
    ok(api.post("/event/close", json=update_body(channel, made[0], severity="high")))
    base = f"/v1/incidents?channel={channel['channel_id']}"
    ids_all = [i["id"] for i in api.get(base, headers=AUTH).json()["data"]["items"]]
    assert ids_all == list(reversed(made))
    open_high = api.get(base + "&open=true&severity=high", headers=AUTH).json()["data"]["items"]
    assert [i["id"] for i in open_high] == [made[2]]
    by_project = api.get(f"/v1/incidents?project={project}&open=false", headers=AUTH).json()["data"]["items"]
    assert [i["id"] for i in by_project] == [made[0]]
    page = api.get(base + "&limit=2", headers=AUTH).json()["data"]
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = api.get(base + f"&limit=2&cursor={page['next_cursor']}", headers=AUTH).json()["data"]
    assert [i["id"] for i in page["items"] + rest["items"]] == ids_all and rest["next_cursor"] is None
    assert api.get("/v1/incidents/unknown", headers=AUTH).status_code == 404


# --- channels ---


def test_channel_create_generates_id_and_password_shown_once(api, project, stack: Stack):
    data = make_channel(api, project)
    assert len(data["channel_id"]) == 32 and data["channel_id"] == data["channel_id"].lower()
    assert data["password"] and 8 <= len(data["password"]) <= 128
    listed = api.get("/v1/channels", headers=AUTH).json()["data"]
    mine = next(c for c in listed if c["channel_id"] == data["channel_id"])
    assert "password" not in mine
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT password_hash FROM channel WHERE id = :i"), {"i": data["channel_id"]}
        ).scalar_one()
    engine.dispose()
    assert data["password"] not in stored and stored.startswith("scrypt$")
    ok(
        api.post(
            "/message", json={"channel_id": data["channel_id"], "password": data["password"], "title": "t"}
        )
    )


@pytest.mark.parametrize(
    "body",
    [
        {"channel_id": "has space"},
        {"channel_id": "c" * 65},
        {"password": "short"},
        {"password": "p" * 129},
        {"colour": "blue"},
    ],
)
def test_channel_create_rejects_bad_input(api, project, body):
    r = api.post("/v1/channels", headers=AUTH, json={"name": "n", "project": project, **body})
    assert r.status_code == 422 and r.json()["error_code"] in ("invalid_field", "unknown_field")


def test_channel_id_taken_is_409_and_admin_only(api, project, stack: Stack):
    given = f"chan:{uuid.uuid4().hex[:8]}"
    make_channel(api, project, channel_id=given, password="p4ssword")
    r = api.post("/v1/channels", headers=AUTH, json={"name": "n", "project": project, "channel_id": given})
    assert err(r) == (409, "channel_exists")
    assert api.post("/v1/channels", json={"name": "n", "project": project}).status_code == 401


def test_rotate_and_delete_take_effect(api, project):
    data = make_channel(api, project, password="first-pass")
    cid = data["channel_id"]
    ok(api.post("/message", json={"channel_id": cid, "password": "first-pass", "title": "t"}))
    r = api.post(f"/v1/channels/{cid}/rotate-password", headers=AUTH)
    assert r.status_code == 200, r.text
    new = r.json()["data"]["password"]
    assert new and r.json()["data"]["version"] == 2
    assert err(api.post("/message", json={"channel_id": cid, "password": "first-pass", "title": "t"})) == (
        401,
        "invalid_channel_credentials",
    )
    ok(api.post("/message", json={"channel_id": cid, "password": new, "title": "t"}))
    assert api.delete(f"/v1/channels/{cid}", headers=AUTH).status_code == 204
    assert err(api.post("/message", json={"channel_id": cid, "password": new, "title": "t"})) == (
        401,
        "invalid_channel_credentials",
    )
    assert api.delete(f"/v1/channels/{cid}", headers=AUTH).status_code == 404


def test_rotation_in_another_process_is_seen_within_the_cache_ttl(stack: Stack, project):
    """Two apps = two API processes, each with its own verification cache. B rotates; A, whose cache holds
    the old password's success, refuses it within HERALD_GATEWAY_CHANNEL_CACHE_TTL_S (polled, not slept)."""
    with stack.client() as a, stack.client() as b:
        data = make_channel(a, project, password="first-pass")
        body = {"channel_id": data["channel_id"], "password": "first-pass", "title": "t"}
        ok(a.post("/message", json=body))
        ok(a.post("/message", json=body))  # served from A's cache now
        r = b.post(
            f"/v1/channels/{data['channel_id']}/rotate-password",
            headers=AUTH,
            json={"password": "second-pass"},
        )
        assert r.status_code == 200 and r.json()["data"]["password"] is None  # given, so not echoed
        deadline = time.monotonic() + 10
        status = 200
        while time.monotonic() < deadline:
            status = a.post("/message", json=body).status_code
            if status == 401:
                break
            time.sleep(0.1)
        assert status == 401
        ok(a.post("/message", json={**body, "password": "second-pass"}))


def test_concurrent_updates_get_a_gap_free_sequence_and_the_newest_state_wins(api, channel):
    """50 updates of one incident from 8 threads at once: every one is numbered exactly once (the row lock
    serialises them), and the current state is the update with the newest event_time, whatever the arrival
    order."""
    from concurrent.futures import ThreadPoolExecutor

    event_id = create_event(api, channel)
    times = list(range(1713750001, 1713750051))
    order = times[::2] + times[1::2]  # arrival order differs from event_time order

    def send(t: int) -> int:
        return api.post(
            "/event/update", json=update_body(channel, event_id, status=f"s{t}"[-24:], event_time=t)
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, order))
    assert statuses == [200] * 50
    data = api.get(f"/v1/incidents/{event_id}", headers=AUTH).json()["data"]
    assert [d["sequence"] for d in data["dispatches"]] == list(range(1, 52))
    assert data["status"] == f"s{times[-1]}" and data["dispatch_count"] == 51
