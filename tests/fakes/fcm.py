"""A fake FCM HTTP v1 with its own OAuth 2 token endpoint (reference/provider-protocols.md section 5).

The token endpoint verifies the RS256 service-account assertion against the generated key pair (iss, scope,
aud, iat/exp at most an hour apart) and issues access tokens; `messages:send` accepts only a live token,
checks the message shape (exactly one target, string-only data, size limit) and answers per target: scripted
replies, unregistered tokens (404 UNREGISTERED), and `revoke_access_tokens()` to make the next call a 401.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.server import FakeServer, Recorded, Reply

PROJECT_ID = "herald-test-project"
CLIENT_EMAIL = "herald@herald-test-project.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
TOKEN_PATH = "/token"
SEND_PATH = f"/v1/projects/{PROJECT_ID}/messages:send"


def generated_service_account(token_uri: str) -> tuple[dict[str, Any], rsa.RSAPublicKey]:
    """A service-account JSON like Google's, with a fresh RSA key (never a real one), and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    account = {
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    return account, key.public_key()


def registration_token() -> str:
    return secrets.token_urlsafe(12) + ":APA91b" + secrets.token_urlsafe(100)


def fcm_error(status: int, canonical: str, code: str | None, message: str = "error") -> Reply:
    error: dict[str, Any] = {"code": status, "message": message, "status": canonical}
    if code:
        error["details"] = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        ]
    return Reply(status, orjson.dumps({"error": error}), content_type="application/json")


class FakeFcm(FakeServer):
    def __init__(self, expires_in_s: int = 3599) -> None:
        super().__init__(default_reply=self._answer)
        self.public_key: rsa.RSAPublicKey | None = None
        self.expires_in_s = expires_in_s
        self.live_tokens: set[str] = set()
        self.assertions: list[dict[str, Any]] = []
        self.unregistered: set[str] = set()
        self.delivered: list[dict[str, Any]] = []
        self._per_target: dict[str, deque[Reply]] = defaultdict(deque)
        self._mutex = threading.Lock()

    @property
    def token_uri(self) -> str:
        return self.url(TOKEN_PATH)

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def service_account(self) -> dict[str, Any]:
        account, self.public_key = generated_service_account(self.token_uri)
        return account

    def script_target(self, target: str, *replies: Reply) -> None:
        """Replies for the next sends to a token, or to "topic:<name>"."""
        with self._mutex:
            self._per_target[target].extend(replies)

    def revoke_access_tokens(self) -> None:
        with self._mutex:
            self.live_tokens.clear()

    def delivered_to(self) -> list[str]:
        with self._mutex:
            return [m.get("token") or "topic:" + m["topic"] for m in self.delivered]

    # the server
    def _answer(self, req: Recorded) -> Reply:
        if req.path == TOKEN_PATH:
            return self._token(req)
        if req.path == SEND_PATH:
            return self._send(req)
        return fcm_error(404, "NOT_FOUND", None, "no such method")

    def _token(self, req: Recorded) -> Reply:
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Reply(400, b'{"error":"unsupported_grant_type"}', content_type="application/json")
        assert self.public_key is not None, "call service_account() first"
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                self.public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.PyJWTError:
            return Reply(
                400,
                b'{"error":"invalid_grant","error_description":"Invalid JWT Signature."}',
                content_type="application/json",
            )
        if claims["iss"] != CLIENT_EMAIL or claims["scope"] != SCOPE or claims["exp"] - claims["iat"] > 3600:
            return Reply(400, b'{"error":"invalid_grant"}', content_type="application/json")
        token = "ya29." + secrets.token_urlsafe(40)
        with self._mutex:
            self.assertions.append(claims)
            self.live_tokens.add(token)
        body = {"access_token": token, "expires_in": self.expires_in_s, "token_type": "Bearer"}
        return Reply(200, orjson.dumps(body), content_type="application/json")

    def _send(self, req: Recorded) -> Reply:
        auth = req.headers.get("authorization", "")
        with self._mutex:
            live = auth.startswith("Bearer ") and auth[7:] in self.live_tokens
        if not live:
            return fcm_error(401, "UNAUTHENTICATED", None, "Request had invalid authentication credentials.")
        try:
            message = orjson.loads(req.body)["message"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "bad JSON")
        targets = [k for k in ("token", "topic", "condition") if k in message]
        if len(targets) != 1:
            return fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "exactly one target")
        if any(not isinstance(v, str) for v in message.get("data", {}).values()):
            return fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "data values must be strings")
        limit = 2048 if "topic" in message else 4096
        if len(req.body) > limit + 64:  # the envelope and validate_only flag are not counted by FCM
            return fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message too big")
        target = message.get("token") or "topic:" + message.get("topic", "")
        with self._mutex:
            queue = self._per_target.get(target)
            scripted = queue.popleft() if queue else None
        if scripted is not None:
            return scripted
        if target in self.unregistered:
            return fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")
        with self._mutex:
            self.delivered.append(message)
        name = f"projects/{PROJECT_ID}/messages/{time.time_ns()}"
        return Reply(200, orjson.dumps({"name": name}), content_type="application/json")


class FcmContract:
    """tests/fakes/catalog.py's ContractFake for FCM: each slot is one registration token (derived from the slot).

    "gone" here is a 404 NOT_FOUND without an FCM errorCode (the project or sender is gone): the integration
    fails. A token-level UNREGISTERED removes the token instead (tests/providers/test_fcm.py).
    """

    def __init__(self) -> None:
        from tests.fakes.catalog import RETRY_AFTER_S

        self.retry_after_s: float | None = RETRY_AFTER_S
        from tests.fakes.catalog import SPLIT_WRITES

        self.server = FakeFcm().start()
        self.server.split_writes = SPLIT_WRITES
        self.account = self.server.service_account()

    @staticmethod
    def token(slot: str) -> str:
        return f"{slot}:APA91b" + "x" * 40

    def config(self, slot: str, *, timeout_s: float, port: int | None = None) -> dict[str, Any]:
        base = f"http://127.0.0.1:{port or self.server.port}"
        return {
            "service_account": {**self.account, "token_uri": base + TOKEN_PATH},
            "api_base_url": base,
            "device_tokens": [self.token(slot)],
            "timeout_s": timeout_s,
        }

    def script(self, slot: str, case: str) -> None:
        from tests.fakes.catalog import SLOW_ANSWER_S

        limited = fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded")
        limited.headers["Retry-After"] = str(int(self.retry_after_s or 1))
        replies = {
            "rate_limited": limited,
            "unavailable": fcm_error(500, "INTERNAL", "INTERNAL", "Internal error"),
            "invalid": fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid value"),
            "auth": fcm_error(403, "PERMISSION_DENIED", None, "The caller does not have permission"),
            "gone": fcm_error(404, "NOT_FOUND", None, "Requested entity was not found."),
            "timeout": Reply(200, b'{"name":"late"}', delay_s=SLOW_ANSWER_S, content_type="application/json"),
        }
        if case in replies:
            self.server.script_target(self.token(slot), replies[case])

    def received(self, slot: str) -> list[float]:
        token = self.token(slot)
        return [r.arrived_at for r in self.server.requests(SEND_PATH) if token.encode() in r.body]

    def stop(self) -> None:
        self.server.stop()


def contract() -> FcmContract:
    return FcmContract()
