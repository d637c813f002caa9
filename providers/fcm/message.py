"""The FCM HTTP v1 `message` for one target, kept within FCM's size limits by truncating the body."""

from __future__ import annotations

from typing import Any

import orjson

from providers.apns.payload import body_text, collapse_id
from shared.events import PUSH_LEVELS
from shared.rendering import RenderedMessage

MAX_TOKEN_MESSAGE_BYTES = 4096
MAX_TOPIC_MESSAGE_BYTES = 2048
MAX_TITLE_CHARS = 200
MAX_LINK_CHARS = 1024
ELLIPSIS = "…"
TOPIC_PREFIX = "topic:"


def target_field(target: str) -> dict[str, str]:
    """A progress key ("topic:<name>" or a registration token) as the message's target field."""
    if target.startswith(TOPIC_PREFIX):
        return {"topic": target[len(TOPIC_PREFIX) :]}
    return {"token": target}


def build_message(
    message: RenderedMessage, target: str, *, android_priority: str, ttl_s: int
) -> dict[str, Any]:
    # data values must be strings (FCM answers 400 INVALID_ARGUMENT otherwise); no reserved keys
    # ("from", "gcm", "google*")
    data = {
        "event_id": str(message.data.get("event_id") or ""),
        "type": message.event_type,
        "severity": message.severity,
    }
    if message.link and len(message.link) <= MAX_LINK_CHARS:
        data["link"] = message.link
    title = (
        message.title
        if len(message.title) <= MAX_TITLE_CHARS
        else message.title[: MAX_TITLE_CHARS - 1] + ELLIPSIS
    )
    body: dict[str, Any] = {
        **target_field(target),
        "notification": {"title": title, "body": ""},
        "data": data,
        "android": {"priority": android_priority, "ttl": f"{ttl_s}s"},
    }
    # A gateway message's own ttl and severity win over the integration's defaults.
    if message.ttl_s is not None:
        body["android"]["ttl"] = f"{message.ttl_s}s"
    if (levels := PUSH_LEVELS.get(message.gateway_severity or "")) is not None:
        body["android"]["priority"] = levels[1].lower()
    if message.ciphertext:
        data["ciphertext"] = message.ciphertext  # PushGo's E2EE blob, untouched, for the app to decrypt
    if (cid := collapse_id(message.lifecycle_key)) is not None:
        # one visible notification per lifecycle on the device, on both platforms
        body["android"]["collapse_key"] = cid
        body["android"]["notification"] = {"tag": cid}
        body["apns"] = {"headers": {"apns-collapse-id": cid}}
    limit = MAX_TOPIC_MESSAGE_BYTES if "topic" in body else MAX_TOKEN_MESSAGE_BYTES
    return _fit({"message": body}, body_text(message), limit)


def _fit(envelope: dict[str, Any], text: str, limit: int) -> dict[str, Any]:
    notification = envelope["message"]["notification"]
    notification["body"] = text
    if len(orjson.dumps(envelope)) <= limit:
        return envelope
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        notification["body"] = text[:mid] + ELLIPSIS
        if len(orjson.dumps(envelope)) <= limit:
            low = mid
        else:
            high = mid - 1
    notification["body"] = text[:low] + ELLIPSIS
    return envelope
