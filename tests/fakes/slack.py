"""Slack fakes speaking reference/provider-protocols.md §1: incoming webhooks and the Web API.

- `POST /services/T.../B.../<secret>`: 200 `ok` for a body with `text` or `blocks`, else 400 `invalid_payload`;
  blocks over Slack's limits (50 blocks, 3000-char sections, 10 fields) are refused like Slack does.
- `POST <prefix>/api/chat.postMessage` and `.../chat.update`: bearer token checked, `{"ok": false, "error": ...}`
  on HTTP 200 for failures, messages kept so chat.update can find (or not find) the `ts` it is given.
- `GET <prefix>/api/conversations.history`: the channel's messages newest first (with their `metadata` when
  asked), paged by cursor; `slow_posts` makes chat.postMessage land but answer late (a timed-out reply).

Scripted per test with `script(path, Reply)`; helpers below build Slack's error answers.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.parse
from typing import Any

from tests.fakes.ratelimit import RateLimit, Window
from tests.fakes.server import FakeServer, Recorded, Reply

TOKEN = "xoxb-1111-2222-herald-test"
CHANNEL_ID = "C0HERALD01"


def webhook_error(code: str, status: int) -> Reply:
    """An incoming-webhook failure: the bare error string as a text body."""
    return Reply(status, code, content_type="text/plain")


def api_error(code: str, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    """A Web API failure: `{"ok": false, "error": code}` (on HTTP 200 unless said otherwise)."""
    return Reply(
        status,
        json.dumps({"ok": False, "error": code}),
        headers=headers or {},
        content_type="application/json",
    )


def rate_limited(retry_after_s: int, *, api: bool = False) -> Reply:
    body = {"ok": False, "error": "ratelimited"} if api else {"error": "rate_limited"}
    return Reply(
        429, json.dumps(body), headers={"Retry-After": str(retry_after_s)}, content_type="application/json"
    )


def server_error() -> Reply:
    """What Slack answers during an outage: 500 with an HTML page."""
    return Reply(500, "<html><body><h1>Server Error</h1></body></html>", content_type="text/html")


def block_problems(body: dict[str, Any]) -> str | None:
    """The error Slack would give for these blocks, or None when they are within limits."""
    blocks = body.get("blocks") or []
    if len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        text = (block.get("text") or {}).get("text", "")
        if block.get("type") == "header" and len(text) > 150:
            return "invalid_blocks"
        if len(text) > 3000 or len(block.get("fields") or []) > 10:
            return "invalid_blocks"
        if any(len(f.get("text", "")) > 2000 for f in block.get("fields") or []):
            return "invalid_blocks"
    if len(body.get("text") or "") > 40000:
        return "msg_too_long"
    return None


class SlackFake(FakeServer):
    def __init__(self, token: str = TOKEN, *, rate: RateLimit | None = None) -> None:
        super().__init__(self._answer)
        self.token = token
        #: an enforced per-webhook/per-channel limit (off by default): 429 + Retry-After over it
        self.window = Window(rate) if rate is not None else None
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._state = threading.Lock()
        #: the next this many chat.postMessage calls are posted at once but answered only after
        #: `slow_post_delay_s` (a reply lost to the client's timeout while the message did land)
        self.slow_posts = 0
        self.slow_post_delay_s = 0.0
        #: conversations.history answers `{"ok": false, "error": <this>}` when set (e.g. missing_scope)
        self.history_error: str | None = None
        #: messages per conversations.history page unless the caller's `limit` is lower
        self.history_page_size = 100

    def webhook_url(self, slot: str) -> str:
        return self.url(self.webhook_path(slot))

    @staticmethod
    def webhook_path(slot: str) -> str:
        return f"/services/T0HERALD/B{slot}/s3cr3tW3bh00kP4th"

    def api_base(self, slot: str) -> str:
        return self.url(f"/{slot}/api")

    def _answer(self, request: Recorded) -> Reply:
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        if self.window is not None:
            key = request.path if request.path.startswith("/services/") else str((body or {}).get("channel"))
            if (wait_s := self.window.check(key)) is not None:
                return rate_limited(math.ceil(wait_s), api=not request.path.startswith("/services/"))
        if request.path.startswith("/services/"):
            if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
                return webhook_error("invalid_payload", 400)
            if problem := block_problems(body):
                return webhook_error("invalid_payload" if problem == "invalid_blocks" else problem, 400)
            return Reply(200, "ok")
        method = request.path.rsplit("/", 1)[-1]
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return api_error("invalid_auth")
        if method == "conversations.history":
            return self._history(urllib.parse.parse_qs(request.query))
        if not isinstance(body, dict):
            return api_error("invalid_json")
        if problem := block_problems(body):
            return api_error(problem)
        if method == "chat.postMessage":
            return self._post(body)
        if method == "chat.update":
            return self._update(body)
        return api_error("unknown_method", 404)

    def _post(self, body: dict[str, Any]) -> Reply:
        channel = str(body.get("channel") or "")
        if not channel:
            return api_error("channel_not_found")
        channel_id = CHANNEL_ID if channel.startswith("#") else channel
        with self._state:
            ts = f"{time.time():.6f}"
            while (channel_id, ts) in self.messages:  # two posts in one microsecond
                ts = f"{float(ts) + 0.000001:.6f}"
            self.messages[(channel_id, ts)] = body
            slow = self.slow_posts > 0
            if slow:
                self.slow_posts -= 1
        reply = _ok({"ok": True, "channel": channel_id, "ts": ts, "message": {"text": body.get("text")}})
        if slow:
            reply.delay_s = self.slow_post_delay_s
        return reply

    def _history(self, query: dict[str, list[str]]) -> Reply:
        """conversations.history: newest first, `oldest` exclusive, `limit` per page, paged by
        `response_metadata.next_cursor`; metadata only with `include_all_metadata=true`."""
        if self.history_error is not None:
            return api_error(self.history_error)
        channel = (query.get("channel") or [""])[0]
        if not re.match(r"^[CGD][A-Z0-9]{6,}$", channel):
            return api_error("channel_not_found")
        oldest = float((query.get("oldest") or ["0"])[0])
        limit = min(int((query.get("limit") or ["100"])[0]), self.history_page_size)
        start = int((query.get("cursor") or ["0"])[0] or 0)
        with_metadata = (query.get("include_all_metadata") or ["false"])[0] == "true"
        with self._state:
            found = sorted(
                (
                    (ts, body)
                    for (c, ts), body in self.messages.items()
                    if c == channel and float(ts) > oldest
                ),
                key=lambda m: float(m[0]),
                reverse=True,
            )
        page = found[start : start + limit]
        messages = []
        for ts, body in page:
            message: dict[str, Any] = {"type": "message", "ts": ts, "text": body.get("text")}
            if with_metadata and isinstance(body.get("metadata"), dict):
                message["metadata"] = body["metadata"]
            messages.append(message)
        more = start + limit < len(found)
        return _ok(
            {
                "ok": True,
                "messages": messages,
                "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""},
            }
        )

    def _update(self, body: dict[str, Any]) -> Reply:
        key = (str(body.get("channel")), str(body.get("ts")))
        with self._state:
            if key not in self.messages:
                return api_error("message_not_found")
            self.messages[key] = body
        return _ok({"ok": True, "channel": key[0], "ts": key[1], "text": body.get("text")})


def _ok(body: dict[str, Any]) -> Reply:
    return Reply(200, json.dumps(body), content_type="application/json")
