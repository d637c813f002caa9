"""A Discord webhook fake speaking reference/provider-protocols.md §2.

- `POST /api/webhooks/{id}/{token}[?wait=true]`: 204 without wait, 200 with a message object (snowflake `id`)
  with it; the body is checked against Discord's limits (content 2000, 10 embeds, title 256, description 4096,
  25 fields of 256/1024, footer 2048, 6000 in total) and refused with 400 code 50035 like Discord does.
- `PATCH /api/webhooks/{id}/{token}/messages/{message_id}`: 200 with the edited message, 404 code 10008 if unknown.
- Unknown webhook id: 404 code 10015; wrong token: 401 code 50027. Every answer carries `X-RateLimit-*` headers.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from typing import Any

from tests.fakes.ratelimit import RateLimit, Window
from tests.fakes.server import FakeServer, Recorded, Reply

RATE_HEADERS = {
    "X-RateLimit-Limit": "5",
    "X-RateLimit-Remaining": "4",
    "X-RateLimit-Reset-After": "1",
    "X-RateLimit-Bucket": "herald-fake",
}


def error(status: int, code: int, message: str, **extra: Any) -> Reply:
    return Reply(
        status,
        json.dumps({"message": message, "code": code, **extra}),
        headers=dict(RATE_HEADERS),
        content_type="application/json",
    )


def rate_limited(retry_after_s: float, *, header_s: int | None = None) -> Reply:
    """Discord's 429: `retry_after` in the body (fractional seconds) and the integer `Retry-After` header."""
    return Reply(
        429,
        json.dumps({"message": "You are being rate limited.", "retry_after": retry_after_s, "global": False}),
        headers={
            **RATE_HEADERS,
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(retry_after_s),
            "X-RateLimit-Scope": "shared",
            "Retry-After": str(header_s if header_s is not None else int(retry_after_s)),
        },
        content_type="application/json",
    )


def unknown_webhook() -> Reply:
    return error(404, 10015, "Unknown Webhook")


def embed_problems(body: dict[str, Any]) -> str | None:
    if len(body.get("content") or "") > 2000:
        return "content: Must be 2000 or fewer in length."
    embeds = body.get("embeds") or []
    if not (body.get("content") or embeds):
        return "Cannot send an empty message"
    if len(embeds) > 10:
        return "embeds: Must be 10 or fewer in length."
    total = 0
    for embed in embeds:
        fields = embed.get("fields") or []
        limits = [
            (len(embed.get("title", "")), 256),
            (len(embed.get("description", "")), 4096),
            (len(fields), 25),
            (len((embed.get("footer") or {}).get("text", "")), 2048),
        ]
        limits += [(len(f.get("name", "")), 256) for f in fields] + [
            (len(f.get("value", "")), 1024) for f in fields
        ]
        if any(size > limit for size, limit in limits):
            return "embeds.0: Invalid Form Body"
        if any(not f.get("name") or not f.get("value") for f in fields):
            return "embeds.0.fields: This field is required"
        total += (
            len(embed.get("title", ""))
            + len(embed.get("description", ""))
            + len((embed.get("footer") or {}).get("text", ""))
            + sum(len(f["name"]) + len(f["value"]) for f in fields)
        )
    if total > 6000:
        return "embeds: Embed size exceeds maximum size of 6000"
    return None


class DiscordFake(FakeServer):
    def __init__(self, *, rate: RateLimit | None = None) -> None:
        super().__init__(self._answer)
        #: an enforced per-webhook limit (off by default): 429 with the body's `retry_after` over it
        self.window = Window(rate) if rate is not None else None
        self.webhooks: dict[str, str] = {}  # id -> token
        self.messages: dict[str, dict[str, Any]] = {}  # message id -> last body
        self._ids = itertools.count(1)
        self._state = threading.Lock()

    def add_webhook(self, slot: str) -> tuple[str, str]:
        """A webhook of this fake: (id, token). The same slot always gets the same one."""
        with self._state:
            for webhook_id, token in self.webhooks.items():
                if token.endswith("-" + slot):
                    return webhook_id, token
            webhook_id = str(1_200_000_000_000_000_000 + next(self._ids))
            self.webhooks[webhook_id] = f"tok3n_{webhook_id[-6:]}-{slot}"
            return webhook_id, self.webhooks[webhook_id]

    def webhook_path(self, slot: str) -> str:
        webhook_id, token = self.add_webhook(slot)
        return f"/api/webhooks/{webhook_id}/{token}"

    def webhook_url(self, slot: str) -> str:
        return self.url(self.webhook_path(slot))

    def _answer(self, request: Recorded) -> Reply:
        parts = request.path.strip("/").split("/")
        if len(parts) < 4 or parts[:2] != ["api", "webhooks"]:
            return error(404, 0, "404: Not Found")
        webhook_id, token = parts[2], parts[3]
        if webhook_id not in self.webhooks:
            return unknown_webhook()
        if self.webhooks[webhook_id] != token:
            return error(401, 50027, "Invalid Webhook Token")
        if self.window is not None and (wait_s := self.window.check(webhook_id)) is not None:
            return rate_limited(round(wait_s, 3), header_s=math.ceil(wait_s))
        try:
            body = json.loads(request.body)
        except ValueError:
            return error(400, 50109, "The request body contains invalid JSON.")
        if problem := embed_problems(body):
            return error(400, 50035, "Invalid Form Body", errors={"detail": problem})
        if request.method == "PATCH" and len(parts) == 6 and parts[4] == "messages":
            return self._edit(webhook_id, parts[5], body)
        if request.method != "POST" or len(parts) != 4:
            return error(405, 0, "405: Method Not Allowed")
        with self._state:
            message_id = str(1_300_000_000_000_000_000 + next(self._ids))
            self.messages[message_id] = body
        if "wait=true" not in request.query:
            return Reply(204, b"", headers=dict(RATE_HEADERS))
        return self._message(message_id, webhook_id, body)

    def _edit(self, webhook_id: str, message_id: str, body: dict[str, Any]) -> Reply:
        with self._state:
            if message_id not in self.messages:
                return error(404, 10008, "Unknown Message")
            self.messages[message_id] = body
        return self._message(message_id, webhook_id, body)

    @staticmethod
    def _message(message_id: str, webhook_id: str, body: dict[str, Any]) -> Reply:
        message = {
            "id": message_id,
            "type": 0,
            "channel_id": "1100000000000000001",
            "webhook_id": webhook_id,
            "content": body.get("content", ""),
            "embeds": body.get("embeds", []),
            "timestamp": "2025-01-01T00:00:00.000000+00:00",
        }
        return Reply(200, json.dumps(message), headers=dict(RATE_HEADERS), content_type="application/json")
