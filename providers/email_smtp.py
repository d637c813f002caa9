"""SMTP submission: one multipart/alternative (text + HTML) message per attempt, over TLS, with AUTH.

- Port 465 (or `security="tls"`): TLS from the first byte (RFC 8314). Any other port (or `security="starttls"`):
  plaintext greeting, then STARTTLS, which is required: credentials and mail never go out in the clear.
- Reply codes: 4yz retryable (454 "Throttling failure" is rate limiting), 5yz permanent, and
  530/534/535/538 mean the configuration is wrong (AuthFailed, which marks the integration failing).
- Recipients are this provider's targets: a recipient refused with 4yz is retried alone on the next attempt
  (the others are recorded as delivered), one refused with 5yz is recorded and not retried.
- One connection per integration, kept for the worker process's life and reused across sends. A connection
  that sat idle is probed with NOOP before reuse, so a server that closed it only costs a reconnect.
- Egress: SMTP does not go through the HTTP client, so the server's address is resolved and checked against
  the egress policy here, and the connection is made to the checked address (DNS cannot swap it afterwards).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, ClassVar, Literal

import aiosmtplib
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from providers._http import EgressPolicy, HttpClient, excerpt
from providers.base import Provider, Receipt, attempt_deadline, secret_values
from providers.templates import EmailConfig, EmailContent, render_email
from shared.config import get_settings
from shared.errors import (
    AuthFailed,
    DeliveryError,
    EgressDenied,
    InvalidPayload,
    ProviderUnavailable,
    RateLimited,
    TargetGone,
    TransportTimeout,
)
from shared.rendering import RenderedMessage

NAME = "smtp"
AUTH_CODES = frozenset({530, 534, 535, 538})
IMPLICIT_TLS_PORT = 465
# A cached connection idle longer than this is probed with NOOP before use: servers drop idle sessions
# (RFC 5321 suggests a 5 min server timeout; many relays use far less).
PROBE_AFTER_IDLE_S = 2.0
DELIVERED = "delivered"


class SmtpConfig(EmailConfig):
    """Seed 003's "Configure SMTP": host, port, username, password, send-from (the name is the integration's)."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(587, ge=1, le=65535)
    #: None = from the port: 465 is implicit TLS, anything else STARTTLS
    security: Literal["starttls", "tls"] | None = None
    username: str | None = Field(None, max_length=256)
    password: SecretStr | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not all(c.isalnum() or c in ".-:[]" for c in value):
            raise ValueError("host must be a DNS name or an IP address")
        return value

    @model_validator(mode="after")
    def _auth_pair(self) -> SmtpConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    @property
    def implicit_tls(self) -> bool:
        return self.security == "tls" or (self.security is None and self.port == IMPLICIT_TLS_PORT)


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = 0.0


def build_message(content: EmailContent, config: EmailConfig, *, message_id_key: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = content.subject
    msg["From"] = config.from_address
    msg["To"] = ", ".join(config.to)
    if config.cc:
        msg["Cc"] = ", ".join(config.cc)
    if config.reply_to:
        msg["Reply-To"] = config.reply_to
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    # Stable across retries of one delivery, so a receiving system can spot a duplicate.
    domain = config.from_address.rsplit("@", 1)[-1].rstrip(">").strip() or "herald.local"
    msg["Message-ID"] = make_msgid(idstring=message_id_key.replace("-", ""), domain=domain)
    msg["X-Herald-Delivery"] = message_id_key
    msg.set_content(content.text)
    msg.add_alternative(content.html, subtype="html")
    return msg


class SmtpProvider(Provider[SmtpConfig]):
    name: ClassVar[str] = NAME
    config_model: ClassVar[type[BaseModel]] = SmtpConfig

    def __init__(self, http: HttpClient, *, tls_ca_file: str | None = None) -> None:
        super().__init__(http)
        self._tls_ca_file = tls_ca_file if tls_ca_file is not None else get_settings().tls_ca_file
        self._connections: dict[str, _Connection] = {}
        self._tls: ssl.SSLContext | None = None

    def preview(self, message: RenderedMessage, config: SmtpConfig) -> dict[str, Any]:
        content = render_email(message, subject_prefix=config.subject_prefix)
        return {**content.as_dict(), "from": config.from_address, "to": config.to, "cc": config.cc}

    async def send(
        self,
        message: RenderedMessage,
        config: SmtpConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        deadline = attempt_deadline(config, deadline)
        done = {t for t, outcome in (progress or {}).items() if outcome == DELIVERED}
        pending = [r for r in config.recipients() if r not in done]
        if not pending:
            return Receipt(target_progress={})
        content = render_email(message, subject_prefix=config.subject_prefix)
        email = build_message(content, config, message_id_key=idempotency_key)
        secrets = list(secret_values(config))
        key = _cache_key(config)
        conn = self._connections.get(key)
        if conn is None:
            conn = self._connections[key] = _Connection(self._new_client(config))
        async with conn.lock:
            try:
                await self._ready(conn, config)
                refused, reply = await conn.client.send_message(
                    email, sender=_bare(config.from_address), recipients=pending
                )
            except DeliveryError:
                await _drop(conn)
                raise
            except aiosmtplib.SMTPRecipientsRefused as exc:
                # Every pending recipient refused: the transaction never started, the connection is fine.
                conn.last_used = time.monotonic()
                per = {r.recipient: (r.code, r.message) for r in exc.recipients}
                raise _recipients_failed(per, {}, secrets) from None
            except aiosmtplib.SMTPException as exc:
                await _drop(conn)
                raise _classify(exc, secrets) from None
            except OSError as exc:
                await _drop(conn)
                if isinstance(exc, ssl.SSLCertVerificationError):  # during STARTTLS
                    raise AuthFailed(NAME, "server certificate is not trusted") from None
                raise ProviderUnavailable(NAME, f"connection failed: {type(exc).__name__}") from None
            conn.last_used = time.monotonic()
        accepted = [r for r in pending if r not in refused]
        tally = {r: DELIVERED for r in accepted}
        if refused:
            raise _recipients_failed(
                {r: (resp.code, resp.message) for r, resp in refused.items()}, tally, secrets
            )
        return Receipt(
            status_code=None,
            response_excerpt=excerpt(reply, secrets),
            target_progress=tally,
        )

    # connection handling
    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            ctx = ssl.create_default_context()
            if self._tls_ca_file:
                ctx.load_verify_locations(cafile=self._tls_ca_file)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._tls = ctx
        return self._tls

    def _new_client(self, config: SmtpConfig) -> aiosmtplib.SMTP:
        implicit = config.implicit_tls
        return aiosmtplib.SMTP(
            hostname=config.host.strip("[]"),
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            timeout=config.timeout_s,
            use_tls=implicit,
            # STARTTLS is mandatory on a plaintext port: without it aiosmtplib would send AUTH in the clear.
            start_tls=not implicit,
            tls_context=self._tls_context(),
        )

    async def _ready(self, conn: _Connection, config: SmtpConfig) -> None:
        """Make the cached connection usable: probe it if it idled, (re)connect if it is closed."""
        client = conn.client
        if client.is_connected and time.monotonic() - conn.last_used > PROBE_AFTER_IDLE_S:
            try:
                await client.noop()
            except (aiosmtplib.SMTPException, OSError):
                client.close()  # the server let it go; a fresh connection below is not a retry of a send
        if not client.is_connected:
            sock = await _checked_socket(self.http.policy, config)
            try:
                # connect() also does EHLO, STARTTLS (re-EHLO) and AUTH, as configured on the client.
                await client.connect(sock=sock, port=None)
            except BaseException:
                # The socket now belongs to the transport built over it (asyncio closes it with the transport).
                # Closing it here would free its fd while the loop still has it registered, and the next socket
                # given that fd would fail with "File descriptor N is used by transport".
                client.close()
                raise


def _bare(address: str) -> str:
    return address.rsplit("<", 1)[-1].rstrip(">").strip()


def _cache_key(config: SmtpConfig) -> str:
    # Changed credentials or server mean a new connection; the password only enters as a digest.
    password = config.password.get_secret_value() if config.password else ""
    raw = "\0".join(
        (config.host, str(config.port), str(config.implicit_tls), config.username or "", password)
    )
    return hashlib.sha256(raw.encode()).hexdigest()


async def _drop(conn: _Connection) -> None:
    if conn.client.is_connected:
        conn.client.close()


async def _checked_socket(policy: EgressPolicy, config: SmtpConfig) -> socket.socket:
    """A connected socket to the first address of `host` the egress policy allows."""
    loop = asyncio.get_running_loop()
    host = config.host.strip("[]")
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, config.port, type=socket.SOCK_STREAM), timeout=config.timeout_s
        )
    except TimeoutError:
        raise TransportTimeout(NAME, "name resolution timed out") from None
    except socket.gaierror:
        raise ProviderUnavailable(NAME, "server name does not resolve") from None
    allowed = [i for i in infos if policy.permits(ipaddress.ip_address(i[4][0]))]
    if not allowed:
        raise EgressDenied(NAME, "SMTP server resolves only to refused addresses")
    last: OSError | None = None
    for family, type_, proto, _, address in allowed:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout=config.timeout_s)
            return sock
        except TimeoutError:
            sock.close()
            raise TransportTimeout(NAME, f"no connection within {config.timeout_s:g} s") from None
        except OSError as exc:
            sock.close()
            last = exc
    raise ProviderUnavailable(NAME, f"connection failed: {last.strerror if last else 'error'}")


def _classify(exc: aiosmtplib.SMTPException, secrets: list[str]) -> DeliveryError:
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPConnectTimeoutError):
        return TransportTimeout(NAME, "SMTP server did not answer in time")
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            return AuthFailed(NAME, "server certificate is not trusted")
        return ProviderUnavailable(NAME, "connection failed")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return ProviderUnavailable(NAME, "server closed the connection")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, exc.message, secrets)
    if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
        return AuthFailed(NAME, "server certificate is not trusted")
    text = str(exc).lower()
    if "starttls" in text or "tls" in text:
        # e.g. the server does not offer STARTTLS: we will not send credentials or mail in the clear
        return AuthFailed(NAME, "server does not offer TLS; refusing to send in the clear")
    if "auth" in text:
        return AuthFailed(NAME, "server does not offer a usable AUTH mechanism")
    return ProviderUnavailable(NAME, f"SMTP error: {type(exc).__name__}")


def _by_code(code: int, text: str, secrets: list[str]) -> DeliveryError:
    kwargs: dict[str, Any] = {"status_code": code, "response_excerpt": excerpt(f"{code} {text}", secrets)}
    if code in AUTH_CODES:
        return AuthFailed(NAME, f"server refused the credentials ({code})", **kwargs)
    if code == 454 and "throttl" in text.lower():
        return RateLimited(NAME, f"server throttles sending ({code})", **kwargs)
    if 400 <= code < 500:
        return ProviderUnavailable(NAME, f"transient server reply ({code})", **kwargs)
    return InvalidPayload(NAME, f"server rejected the message ({code})", **kwargs)


def _recipients_failed(
    refused: Mapping[str, tuple[int, str]], tally: dict[str, str], secrets: list[str]
) -> DeliveryError:
    """Some or all recipients refused at RCPT: retry only the transient ones, record the rest."""
    progress = dict(tally)
    for recipient, (code, _) in refused.items():
        progress[recipient] = f"smtp_{code}"
    lines = "; ".join(f"{code} {text}" for code, text in refused.values())
    kwargs: dict[str, Any] = {
        "status_code": max(code for code, _ in refused.values()),
        "response_excerpt": excerpt(lines, secrets),
        "target_progress": progress,
    }
    transient = [r for r, (code, _) in refused.items() if 400 <= code < 500]
    count = len(refused)
    if transient:
        # The accepted recipients are marked delivered in `progress`, so the retry resends to the rest only.
        return ProviderUnavailable(NAME, f"{len(transient)} recipient(s) refused transiently", **kwargs)
    if any(code in AUTH_CODES for code, _ in refused.values()):
        return AuthFailed(NAME, "server refused the credentials", **kwargs)
    if tally:
        # Delivered to some, the others refused for good: nothing a retry would change.
        return InvalidPayload(NAME, f"{count} recipient(s) refused permanently", **kwargs)
    return TargetGone(NAME, f"all {count} recipient(s) refused", **kwargs)
