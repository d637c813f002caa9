"""Issue 11, push destinations of a lifecycle: one notification per lifecycle on the device (APNs collapse id
and thread, FCM collapse_key and notification tag), the gateway's `ttl` as the expiry, its severity as the APNs
interruption level and the FCM priority, `ciphertext` carried untouched. Before: no tag, and the gateway's
ttl, severity and ciphertext were ignored (the integration defaults were sent)."""

from __future__ import annotations

import time

from providers.apns import ApnsConfig, _headers
from providers.apns.payload import build_payload
from providers.fcm.message import build_message
from shared.rendering import RenderedMessage

INCIDENT = RenderedMessage(
    kind="incident",
    event_type="incident.updated",
    title="Database lag",
    text="Failover started",
    severity="error",
    lifecycle_key="incident:chan:ev1",
    sequence=2,
    ciphertext="opaque-E2EE-blob",
    ttl_s=600,
    gateway_severity="low",
)


def apns_config() -> ApnsConfig:
    # Only the header fields matter here (no key is used): built without the key validators.
    return ApnsConfig.model_construct(topic="com.example.app")


def test_apns_collapses_on_the_lifecycle_with_the_gateway_ttl_level_and_ciphertext():
    payload = build_payload(INCIDENT, "alert", None)
    assert payload["aps"]["thread-id"] == "incident:chan:ev1"
    assert payload["aps"]["interruption-level"] == "passive"
    assert payload["herald"]["ciphertext"] == "opaque-E2EE-blob"
    headers = _headers(INCIDENT, apns_config(), apns_id=None, jwt=None)
    assert headers["apns-collapse-id"] == "incident:chan:ev1"
    assert abs(int(headers["apns-expiration"]) - (int(time.time()) + 600)) <= 5


def test_fcm_collapses_and_tags_on_the_lifecycle_with_the_gateway_ttl_priority_and_ciphertext():
    body = build_message(INCIDENT, "tok", android_priority="high", ttl_s=86400)["message"]
    assert body["android"]["collapse_key"] == "incident:chan:ev1"
    assert body["android"]["notification"]["tag"] == "incident:chan:ev1"
    assert body["android"]["ttl"] == "600s" and body["android"]["priority"] == "normal"
    assert body["data"]["ciphertext"] == "opaque-E2EE-blob"
