"""The APNs JSON payload for a message, kept within Apple's 4096-byte limit by truncating the body."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from shared.events import PUSH_LEVELS
from shared.rendering import RenderedMessage

MAX_PAYLOAD_BYTES = 4096
MAX_COLLAPSE_ID_BYTES = 64
MAX_TITLE_CHARS = 178  # what a lock-screen banner shows is far less; keeps room for the body
MAX_LINK_CHARS = 1024
ELLIPSIS = "…"


def body_text(message: RenderedMessage) -> str:
    """The notification body: the message's text, else its fields as "Name: value" lines."""
    if message.text:
        return message.text
    return "\n".join(f"{name}: {value}" for name, value in message.fields)


#: a longer E2EE blob would crowd the alert out of the 4 KB payload; it is dropped (the webhook still has it)
MAX_CIPHERTEXT_CHARS = 2048


def collapse_id(lifecycle_key: str | None) -> str | None:
    """The lifecycle key as apns-collapse-id (a release's notifications replace each other on the device);
    a key over 64 bytes becomes its SHA-256 hex digest (64 characters), still stable per lifecycle."""
    if not lifecycle_key:
        return None
    if len(lifecycle_key.encode()) <= MAX_COLLAPSE_ID_BYTES and lifecycle_key.isprintable():
        return lifecycle_key
    return hashlib.sha256(lifecycle_key.encode()).hexdigest()


def build_payload(message: RenderedMessage, push_type: str, sound: str | None) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "event_id": message.data.get("event_id"),
        "type": message.event_type,
        "severity": message.severity,
    }
    if message.link and len(message.link) <= MAX_LINK_CHARS:  # a longer link would crowd out the body
        custom["link"] = message.link
    if push_type == "background":
        return _fit({"aps": {"content-available": 1}, "herald": custom}, None)
    title = (
        message.title
        if len(message.title) <= MAX_TITLE_CHARS
        else message.title[: MAX_TITLE_CHARS - 1] + ELLIPSIS
    )
    aps: dict[str, Any] = {"alert": {"title": title, "body": ""}}
    if sound:
        aps["sound"] = sound
    if message.lifecycle_key:
        aps["thread-id"] = collapse_id(message.lifecycle_key)
    if (levels := PUSH_LEVELS.get(message.gateway_severity or "")) is not None:
        aps["interruption-level"] = levels[0]
    if message.ciphertext and len(message.ciphertext) <= MAX_CIPHERTEXT_CHARS:
        custom["ciphertext"] = message.ciphertext  # PushGo's E2EE blob, untouched, for the app to decrypt
    return _fit({"aps": aps, "herald": custom}, body_text(message))


def _fit(payload: dict[str, Any], body: str | None) -> dict[str, Any]:
    """Put `body` into aps.alert.body, cut so the encoded payload is at most 4096 bytes."""
    if body is None:
        return payload
    payload["aps"]["alert"]["body"] = body
    if len(orjson.dumps(payload)) <= MAX_PAYLOAD_BYTES:
        return payload
    # Cut by characters (JSON escaping makes bytes per character vary), halving the overshoot each time.
    low, high = 0, len(body)
    while low < high:
        mid = (low + high + 1) // 2
        payload["aps"]["alert"]["body"] = body[:mid] + ELLIPSIS
        if len(orjson.dumps(payload)) <= MAX_PAYLOAD_BYTES:
            low = mid
        else:
            high = mid - 1
    payload["aps"]["alert"]["body"] = body[:low] + ELLIPSIS
    return payload
