"""Pure parts of the gateway: password hashing, the verification cache, severity vocabularies in routing,
attrs patches, lifecycle steps and incident rendering."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from api.gateway.state import LifecycleRefused, apply, merge_patch
from api.gateway.validation import GatewayInvalid, timestamp, validate
from shared.channels import ChannelRow, VerificationCache, hash_password, verify_password
from shared.events import EventFacts, severity_at_least
from shared.rendering import render
from shared.routing import RouteRule, route_mismatch


def test_password_hash_is_salted_scrypt_and_verifies():
    a, b = hash_password("pass-1234"), hash_password("pass-1234")
    assert a != b and a.startswith("scrypt$") and "pass-1234" not in a
    assert verify_password("pass-1234", a) and not verify_password("pass-12345", a)
    assert not verify_password("pass-1234", "garbage")


def test_cache_verifies_once_and_a_new_version_is_verified_again():
    calls: list[str] = []
    stored = hash_password("first-pass")
    rows = {"c1": ChannelRow("c1", "p", stored, 1)}

    async def load(channel_id: str) -> ChannelRow | None:
        return rows.get(channel_id)

    async def verify(password: str, h: str) -> bool:
        calls.append(password)
        return verify_password(password, h)

    cache = VerificationCache(row_ttl_s=0.0)  # reload the row every call: only verification is cached

    async def run() -> None:
        assert await cache.authenticate("c1", "first-pass", load, verify) is not None
        assert await cache.authenticate("c1", "first-pass", load, verify) is not None
        assert calls == ["first-pass"]
        rows["c1"] = ChannelRow("c1", "p", hash_password("second-pass"), 2)  # rotated elsewhere
        assert await cache.authenticate("c1", "first-pass", load, verify) is None
        assert await cache.authenticate("c1", "second-pass", load, verify) is not None
        # unknown channel: the same work as a wrong password, and None
        assert await cache.authenticate("nope", "first-pass", load, verify) is None

    asyncio.run(run())
    assert len(calls) == 4


@pytest.mark.parametrize(
    ("severity", "minimum", "passes"),
    [
        ("error", "high", True),
        ("warning", "high", False),
        ("critical", "high", True),
        ("info", "normal", False),
        ("warning", "normal", True),
        ("high", "error", True),
        ("normal", "error", False),
        ("low", "info", True),
    ],
)
def test_min_severity_accepts_both_vocabularies(severity, minimum, passes):
    assert severity_at_least(severity, minimum) is passes
    event = EventFacts(
        uuid.uuid4(), "incident", "incident.created", "p", None, severity, {}, datetime.now(UTC)
    )
    rule = RouteRule(uuid.uuid4(), uuid.uuid4(), None, (), ("incident",), minimum)
    assert (route_mismatch(event, rule) is None) is passes


def test_timestamps_seconds_or_milliseconds():
    assert timestamp("t", 1713750000) == 1713750000.0
    assert timestamp("t", 1713750000123) == pytest.approx(1713750000.123)
    with pytest.raises(GatewayInvalid):
        timestamp("t", 0)


def test_validate_normalises_and_orders_errors():
    out = validate(
        "/event/create",
        {
            "channel_id": "c",
            "password": "p" * 8,
            "title": "T",
            "status": "s",
            "message": "m",
            "severity": "low",
            "event_time": 1,
            "description": "",
            "tags": ["a ", "a", ""],
        },
    )
    assert "description" not in out and out["tags"] == ["a"]
    with pytest.raises(GatewayInvalid) as exc:
        validate("/event/create", {"password": "short"})
    assert (exc.value.error_code, exc.value.field) == ("missing_field", "channel_id")


def test_merge_patch_null_deletes_nested_merges():
    assert merge_patch({"a": 1, "b": {"x": 1, "y": 2}, "c": 3}, {"a": None, "b": {"y": None, "z": 3}}) == {
        "b": {"x": 1, "z": 3},
        "c": 3,
    }


def test_lifecycle_steps_and_refusals():
    base = {"title": "T", "status": "open", "message": "m", "severity": "critical", "event_time": 100.0}
    state, stale = apply("incident", "/event/create", None, base)
    assert state["open"] and state["started_at"] == 100.0 and not stale
    state, stale = apply("incident", "/event/update", state, {**base, "severity": "low", "event_time": 90.0})
    assert stale and state["severity"] == "critical" and state["peak_severity"] == "critical"
    state, _ = apply("incident", "/event/close", state, {**base, "status": "done", "event_time": 200.0})
    assert (state["state"], state["open"], state["ended_at"], state["status"]) == (
        "closed",
        False,
        200.0,
        "done",
    )
    with pytest.raises(LifecycleRefused) as exc:
        apply("incident", "/event/update", state, base)
    assert exc.value.error_code == "event_closed"


def test_incident_renders_its_current_state():
    payload = {
        "project": "p",
        "lifecycle": {"kind": "incident", "id": "e1", "key": "incident:c:e1", "sequence": 3, "event_time": 5},
        "state": {
            "title": "DB lag",
            "status": "resolved",
            "severity": "high",
            "open": False,
            "attrs": {"region": "eu"},
        },
        "dispatch": {"message": "caught up", "severity": "high"},
        "ciphertext": "blob",
    }
    event = EventFacts(
        uuid.uuid4(),
        "incident",
        "incident.resolved",
        "p",
        None,
        "error",
        payload,
        datetime.now(UTC),
        lifecycle_key="incident:c:e1",
    )
    message = render(event)
    assert message.title == "[CLOSED] DB lag" and message.text == "caught up"
    assert ("Status", "resolved") in message.fields and ("region", "eu") in message.fields
    assert (message.sequence, message.ciphertext, message.gateway_severity) == (3, "blob", "high")
    assert message.data["lifecycle"]["id"] == "e1"
