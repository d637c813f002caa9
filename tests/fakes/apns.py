"""A fake APNs: HTTP/2 over TLS (hypercorn, ALPN h2 only, a generated certificate) that verifies the ES256 JWT.

Speaks reference/provider-protocols.md section 4: `POST /3/device/<token>`, JWT checked against the team's
public key (kid, iss, iat no older than an hour), the apns-* headers and the 4096-byte payload limit, and the
documented error bodies `{"reason": ...}` (410 adds a timestamp). Device tokens can be marked unregistered or
bad, and replies scripted per token. The key pair is generated per test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio import serve
from hypercorn.config import Config

from tests.fakes.smtp import SLOW_ANSWER_S, TlsFiles, free_port, session_tls

TEAM_ID = "TEAM123456"
KEY_ID = "KEY7890ABC"
PUSH_TYPES = {
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
}


def generated_p8() -> tuple[str, ec.EllipticCurvePublicKey]:
    """A fresh P-256 key as Apple's .p8 (PKCS#8 PEM) and its public half for the fake."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


def device_token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits, like a real one


@dataclass
class PushRequest:
    token: str
    http_version: str
    headers: dict[str, str]
    payload: dict[str, Any]
    jwt: str
    status: int
    reason: str | None
    arrived_at: float


@dataclass
class FakeApns:
    tls: TlsFiles
    public_key: ec.EllipticCurvePublicKey
    topic: str = "com.example.app"
    team_id: str = TEAM_ID
    key_id: str = KEY_ID
    port: int = 0
    requests: list[PushRequest] = field(default_factory=list)
    unregistered: set[str] = field(default_factory=set)
    bad_tokens: set[str] = field(default_factory=set)
    #: JWTs this fake has declared expired (ExpiredProviderToken); a newly minted one is accepted
    expired_jwts: set[str] = field(default_factory=set)
    expire_next_jwt: bool = False
    #: send each reply body in this many DATA frames, `split_pause_s` apart (a client must read them all)
    split_writes: int = 1
    split_pause_s: float = 0.05
    #: token -> scripted (status, reason) or (status, reason, delay_s) replies
    _scripts: dict[str, deque[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    @property
    def endpoint_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # life cycle
    def start(self) -> FakeApns:
        self.port = free_port()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="fake-apns")
        self._thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            time.sleep(0.02)
        raise RuntimeError("fake APNs did not start")

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile = self.tls.cert_file
        config.keyfile = self.tls.key_file
        config.alpn_protocols = ["h2"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 0.5
        ready.set()
        self._loop.run_until_complete(serve(self._app, config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeApns:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # scripting
    def script(self, token: str, *replies: tuple[Any, ...]) -> None:
        with self._lock:
            self._scripts[token].extend(replies)

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[PushRequest]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout_s):
                raise AssertionError(f"{len(self.requests)} of {count} arrived within {timeout_s} s")
            return list(self.requests)

    def delivered_to(self) -> list[str]:
        with self._lock:
            return [r.token for r in self.requests if r.status == 200]

    # the server
    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, reason, token, bearer, delay_s = self._judge(scope, headers, body)
        try:
            payload = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            payload = {}
        with self._lock:
            self.requests.append(
                PushRequest(
                    token, scope["http_version"], headers, payload, bearer, status, reason, time.time()
                )
            )
            self._lock.notify_all()
        if delay_s:
            await asyncio.sleep(delay_s)
        reply: dict[str, Any] = {}
        if reason:
            reply["reason"] = reason
            if status == 410:
                reply["timestamp"] = int(time.time() * 1000)
        out = [(b"apns-id", headers.get("apns-id", str(uuid.uuid4())).encode())]
        if reply:
            out.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": out})
        data = orjson.dumps(reply) if reply else b""
        if self.split_writes > 1 and len(data) > 1:
            size = -(-len(data) // min(self.split_writes, len(data)))
            for start in range(0, len(data), size):
                await send(
                    {"type": "http.response.body", "body": data[start : start + size], "more_body": True}
                )
                await asyncio.sleep(self.split_pause_s)
            data = b""
        await send({"type": "http.response.body", "body": data})

    def _judge(
        self, scope: dict[str, Any], headers: dict[str, str], body: bytes
    ) -> tuple[int, str | None, str, str, float]:
        path: str = scope["path"]
        token = path.removeprefix("/3/device/") if path.startswith("/3/device/") else ""
        auth = headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else ""
        if scope["method"] != "POST":
            return 405, "MethodNotAllowed", token, bearer, 0.0
        if not token:
            return 404, "BadPath", token, bearer, 0.0
        if scope["http_version"] != "2":
            return 400, "BadPath", token, bearer, 0.0  # APNs is HTTP/2 only
        if not bearer:
            return 403, "MissingProviderToken", token, bearer, 0.0
        if bearer in self.expired_jwts:
            return 403, "ExpiredProviderToken", token, bearer, 0.0
        try:
            header = jwt.get_unverified_header(bearer)
            claims = jwt.decode(
                bearer, self.public_key, algorithms=["ES256"], options={"require": ["iss", "iat"]}
            )
        except jwt.PyJWTError:
            return 403, "InvalidProviderToken", token, bearer, 0.0
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return 403, "InvalidProviderToken", token, bearer, 0.0
        if time.time() - float(claims["iat"]) > 3600 or self.expire_next_jwt:
            self.expire_next_jwt = False
            self.expired_jwts.add(bearer)
            return 403, "ExpiredProviderToken", token, bearer, 0.0
        if headers.get("apns-topic") != self.topic:
            reason = "DeviceTokenNotForTopic" if headers.get("apns-topic") else "MissingTopic"
            return 400, reason, token, bearer, 0.0
        if headers.get("apns-push-type") not in PUSH_TYPES:
            return 400, "InvalidPushType", token, bearer, 0.0
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return 400, "BadPriority", token, bearer, 0.0
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return 400, "BadCollapseId", token, bearer, 0.0
        if not headers.get("apns-expiration", "0").isdigit():
            return 400, "BadExpirationDate", token, bearer, 0.0
        if not body:
            return 400, "PayloadEmpty", token, bearer, 0.0
        if len(body) > 4096:
            return 413, "PayloadTooLarge", token, bearer, 0.0
        with self._lock:
            queue = self._scripts.get(token)
            scripted = queue.popleft() if queue else None
        if scripted:
            return scripted[0], scripted[1], token, bearer, (scripted[2] if len(scripted) > 2 else 0.0)
        if token in self.unregistered:
            return 410, "Unregistered", token, bearer, 0.0
        if token in self.bad_tokens:
            return 400, "BadDeviceToken", token, bearer, 0.0
        return 200, None, token, bearer, 0.0


class ApnsContract:
    """tests/fakes/catalog.py's ContractFake for APNs: each slot is one device token (derived from the slot).

    "gone" here is APNs' 404 BadPath, an integration-level gone; a token-level 410 Unregistered removes the
    token instead of failing the integration (tests/providers/test_apns.py, tests/integration/test_email_push.py).
    """

    retry_after_s: float | None = None  # APNs' 429 carries no Retry-After

    def __init__(self) -> None:
        self.p8, public_key = generated_p8()
        from tests.fakes.catalog import SPLIT_WRITES

        self.server = FakeApns(session_tls(), public_key, split_writes=SPLIT_WRITES).start()

    @staticmethod
    def token(slot: str) -> str:
        return hashlib.sha256(slot.encode()).hexdigest()

    def config(self, slot: str, *, timeout_s: float, port: int | None = None) -> dict[str, Any]:
        return {
            "team_id": self.server.team_id,
            "key_id": self.server.key_id,
            "private_key": self.p8,
            "topic": self.server.topic,
            "endpoint_url": f"https://127.0.0.1:{port or self.server.port}",
            "device_tokens": [self.token(slot)],
            "timeout_s": timeout_s,
        }

    def script(self, slot: str, case: str) -> None:
        replies: dict[str, tuple[Any, ...]] = {
            "rate_limited": (429, "TooManyRequests"),
            "unavailable": (500, "InternalServerError"),
            "invalid": (400, "BadTopic"),
            "auth": (403, "InvalidProviderToken"),
            "gone": (404, "BadPath"),
            "timeout": (200, None, SLOW_ANSWER_S),
        }
        if case in replies:
            self.server.script(self.token(slot), replies[case])

    def received(self, slot: str) -> list[float]:
        token = self.token(slot)
        with self.server._lock:
            return [r.arrived_at for r in self.server.requests if r.token == token]

    def stop(self) -> None:
        self.server.stop()


def contract() -> ApnsContract:
    return ApnsContract()
