"""Fake Slack and Discord OAuth servers: the authorize page (which approves at once) and the token endpoint.

- Slack (`oauth.v2.access`): form POST with client_id, client_secret, code, redirect_uri. Answers HTTP 200
  `{"ok": true, "access_token": "xoxb-...", "team": {...}, "incoming_webhook": {"channel", "channel_id",
  "configuration_url", "url"}}`, or HTTP 200 `{"ok": false, "error": "invalid_code" | "bad_client_secret" |
  "invalid_client_id" | "bad_redirect_uri"}`.
- Discord (`/api/oauth2/token`): form POST with grant_type=authorization_code, code, redirect_uri and the client
  credentials. Answers 200 `{"access_token", "token_type": "Bearer", "expires_in", "refresh_token", "scope":
  "webhook.incoming", "webhook": {"id", "token", "name", "channel_id", "guild_id", "url"}}`, or 400
  `{"error": "invalid_grant", "error_description": ...}` / 401 `{"error": "invalid_client"}`.
Codes are single-use and bound to the redirect_uri they were issued for, as with the real vendors.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from tests.fakes.server import FakeServer, Recorded, Reply

CLIENT_ID = "1234.5678"
CLIENT_SECRET = "oauth-client-s3cret-value"
SLACK_AUTHORIZE_PATH = "/oauth/v2/authorize"
SLACK_TOKEN_PATH = "/api/oauth.v2.access"
DISCORD_AUTHORIZE_PATH = "/oauth2/authorize"
DISCORD_TOKEN_PATH = "/api/oauth2/token"


@dataclass
class Grant:
    redirect_uri: str
    webhook_url: str
    channel: str


class OAuthFake(FakeServer):
    """One fake for both vendors (they live on different paths). Set `webhook_url` and `channel` to what the
    next approval grants; set `deny` to make the user press Cancel."""

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.webhook_url = ""
        self.channel = "#releases"
        self.deny = False
        self._grants: dict[str, Grant] = {}
        self._codes = itertools.count(1)
        self._state = threading.Lock()

    def _answer(self, request: Recorded) -> Reply:
        if request.path in (SLACK_AUTHORIZE_PATH, DISCORD_AUTHORIZE_PATH):
            return self._authorize(request)
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        client_id, client_secret = _client_credentials(request, form)
        if request.path == SLACK_TOKEN_PATH:
            return self._slack_token(form, client_id, client_secret)
        if request.path == DISCORD_TOKEN_PATH:
            return self._discord_token(form, client_id, client_secret)
        return Reply(404, "not found")

    def _authorize(self, request: Recorded) -> Reply:
        query = {k: v[0] for k, v in parse_qs(request.query).items()}
        redirect_uri = query.get("redirect_uri", "")
        expected_scope = "incoming-webhook" if request.path == SLACK_AUTHORIZE_PATH else "webhook.incoming"
        if query.get("client_id") != CLIENT_ID or query.get("scope") != expected_scope or not redirect_uri:
            return Reply(400, "invalid authorize request")
        if request.path == DISCORD_AUTHORIZE_PATH and query.get("response_type") != "code":
            return Reply(400, "response_type must be code")
        if self.deny:
            back = {"error": "access_denied", "state": query.get("state", "")}
        else:
            code = f"code-{next(self._codes)}"
            with self._state:
                self._grants[code] = Grant(redirect_uri, self.webhook_url, self.channel)
            back = {"code": code, "state": query.get("state", "")}
        return Reply(302, "", headers={"Location": f"{redirect_uri}?{urlencode(back)}"})

    def _take(self, code: str, redirect_uri: str) -> Grant | None:
        with self._state:
            grant = self._grants.get(code)
            if grant is None or grant.redirect_uri != redirect_uri:
                return None
            del self._grants[code]  # single use
            return grant

    def _slack_token(self, form: dict[str, str], client_id: str, client_secret: str) -> Reply:
        if client_id != CLIENT_ID:
            return _json(200, {"ok": False, "error": "invalid_client_id"})
        if client_secret != CLIENT_SECRET:
            return _json(200, {"ok": False, "error": "bad_client_secret"})
        grant = self._take(form.get("code", ""), form.get("redirect_uri", ""))
        if grant is None:
            return _json(200, {"ok": False, "error": "invalid_code"})
        return _json(
            200,
            {
                "ok": True,
                "app_id": "A0HERALD",
                "authed_user": {"id": "U0HERALD"},
                "scope": "incoming-webhook",
                "token_type": "bot",
                "access_token": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
                "bot_user_id": "U0BOT",
                "team": {"id": "T0HERALD", "name": "Herald"},
                "enterprise": None,
                "is_enterprise_install": False,
                "incoming_webhook": {
                    "channel": grant.channel,
                    "channel_id": "C0HERALD01",
                    "configuration_url": "https://herald.slack.com/services/B0HERALD",
                    "url": grant.webhook_url,
                },
            },
        )

    def _discord_token(self, form: dict[str, str], client_id: str, client_secret: str) -> Reply:
        if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
            return _json(401, {"error": "invalid_client"})
        if form.get("grant_type") != "authorization_code":
            return _json(400, {"error": "unsupported_grant_type"})
        grant = self._take(form.get("code", ""), form.get("redirect_uri", ""))
        if grant is None:
            return _json(400, {"error": "invalid_grant", "error_description": 'Invalid "code" in request.'})
        webhook_id, token = grant.webhook_url.rstrip("/").rsplit("/", 2)[-2:]
        return _json(
            200,
            {
                "token_type": "Bearer",
                "access_token": "6qrZcUqja7812RVdnEKjpzOL4CvHBFG",
                "expires_in": 604800,
                "refresh_token": "D43f5y0ahjqew82jZ4NViEr2YafMKhue",
                "scope": "webhook.incoming",
                "webhook": {
                    "application_id": "310954232226357250",
                    "name": grant.channel.lstrip("#"),
                    "url": grant.webhook_url,
                    "channel_id": "345626669224982402",
                    "token": token,
                    "type": 1,
                    "avatar": None,
                    "guild_id": "290926792226357250",
                    "id": webhook_id,
                },
            },
        )


def _client_credentials(request: Recorded, form: dict[str, str]) -> tuple[str, str]:
    """From the form, or HTTP Basic (both vendors accept either)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        return user, password
    return form.get("client_id", ""), form.get("client_secret", "")


def _json(status: int, body: object) -> Reply:
    return Reply(status, json.dumps(body), content_type="application/json")
