"""SMTP submission: one multipart/alternative (text + HTML) message per attempt, over TLS, with AUTH.

- Port 465 (or `security="tls"`): TLS from the first byte (RFC 8314). Any other port (or `security="starttls"`):
  plaintext greeting, then STARTTLS, which is required: credentials and mail never go out in the clear.
- Reply codes: 4yz retryable (454 "Throttling failure" is rate limiting), 5yz permanent, and
  530/534/535/538 mean the configuration is wrong (AuthFailed, which marks the integration failing).
- Recipients are this provider's targets: a recipient refused with 4yz is retried alone on the next attempt
  (the others are recorded as delivered), one refused with 5yz is recorded and not retried.
- Connections: a small bounded pool per relay (providers/_pool.py; HERALD_SMTP_CONNECTIONS_PER_RELAY, in total
  HERALD_SMTP_MAX_CONNECTIONS, closed after HERALD_SMTP_IDLE_S idle), so sends to one relay run side by side
  instead of queueing behind one lock. Waiting for a free connection counts against the attempt's deadline
  (TransportTimeout if none frees in time) but is not a failure of the relay. A connection that sat idle is
  probed with NOOP before reuse; one whose send failed or was cancelled is closed, never reused mid-dialogue.
- Egress: the host is canonicalised, resolved and every address checked by providers/_egress.py (the same
  guard as HTTP), and the socket is connected to a checked address (DNS cannot swap it afterwards).
- Transport failures are classified by providers/_http.py's one policy (a mechanism, then `transport_error`);
  only SMTP reply codes are decided here.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import time
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, ClassVar, Literal

import aiosmtplib
from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator

from providers._egress import (
    EgressPolicy,
    EgressRefused,
    MalformedUrl,
    canonical_host,
    check_config_host,
    resolve_checked,
)
from providers._http import HttpClient, Mechanism, excerpt, os_error_mechanism, transport_error
from providers._pool import ConnectionPool, PoolTimeout
from providers.base import Provider, Receipt, attempt_deadline, secret_values
from providers.templates import EmailConfig, EmailContent, email_thread, render_email
from shared.config import get_settings
from shared.errors import (
    AuthFailed,
    DeliveryError,
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
# Added to timeout_s for a whole attempt (connect + transaction), inside the worker's own allowance
# (timeout_s + 5 s), as APNs and FCM do for their several requests.
CONNECT_EXTRA_S = 3.0


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
    def _host(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not all(c.isalnum() or c in ".-:[]" for c in value):
            raise ValueError("host must be a DNS name or an IP address")
        check_config_host(
            value, info.context
        )  # disguised numeric hosts, refused literals (providers/_egress.py)
        return value

    @model_validator(mode="after")
    def _auth_pair(self) -> SmtpConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    def max_attempt_s(self) -> float:
        """`timeout_s` plus CONNECT_EXTRA_S: opening a connection (TCP, TLS, EHLO, STARTTLS, AUTH) is several
        round trips before the mail transaction starts; a send on a pooled connection needs only the latter."""
        return self.timeout_s + CONNECT_EXTRA_S

    @property
    def implicit_tls(self) -> bool:
        return self.security == "tls" or (self.security is None and self.port == IMPLICIT_TLS_PORT)


def build_message(
    content: EmailContent, config: EmailConfig, *, message_id_key: str, thread_ref: str | None = None
) -> EmailMessage:
    """The mail; `thread_ref` (the kept reference of the lifecycle's shown mail, providers/templates/
    email_thread.py) makes it a reply in that thread."""
    msg = EmailMessage()
    msg["Subject"] = content.subject
    msg["From"] = config.from_address
    msg["To"] = ", ".join(config.to)
    if config.cc:
        msg["Cc"] = ", ".join(config.cc)
    if config.reply_to:
        msg["Reply-To"] = config.reply_to
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(message_id_key, config)
    msg["X-Herald-Delivery"] = message_id_key
    # One thread per lifecycle: each state replies to the one shown before it, References names the chain.
    for name, value in email_thread.reply_headers(thread_ref).items():
        msg[name] = value
    msg.set_content(content.text)
    msg.add_alternative(content.html, subtype="html")
    return msg


def message_id(key: str, config: EmailConfig) -> str:
    """The mail's Message-ID: the delivery id at the sender's domain, the same on every retry of one delivery,
    so a receiver can spot a duplicate (a relay that took the mail but whose answer was lost)."""
    domain = config.from_address.rsplit("@", 1)[-1].rstrip(">").strip() or "herald.local"
    candidate = f"<{key.replace('-', '')}@{domain}>"
    return candidate if email_thread.is_message_id(candidate) else make_msgid(domain=domain)


class SmtpProvider(Provider[SmtpConfig]):
    name: ClassVar[str] = NAME
    config_model: ClassVar[type[BaseModel]] = SmtpConfig

    def __init__(
        self,
        http: HttpClient,
        *,
        tls_ca_file: str | None = None,
        connections_per_relay: int | None = None,
        max_connections: int | None = None,
        idle_s: float | None = None,
    ) -> None:
        super().__init__(http)
        settings = get_settings()
        self._tls_ca_file = tls_ca_file if tls_ca_file is not None else settings.tls_ca_file
        self._pool: ConnectionPool[aiosmtplib.SMTP] = ConnectionPool(
            per_key=connections_per_relay or settings.smtp_connections_per_relay,
            total=max_connections or settings.smtp_max_connections,
            idle_s=idle_s if idle_s is not None else settings.smtp_idle_s,
            close=_close,
        )
        self._tls: ssl.SSLContext | None = None

    @property
    def open_connections(self) -> int:
        return self._pool.open_connections

    def preview(self, message: RenderedMessage, config: SmtpConfig) -> dict[str, Any]:
        content = render_email(message, subject_prefix=config.subject_prefix)
        return {**content.as_dict(), "from": config.from_address, "to": config.to, "cc": config.cc}

    async def aclose(self) -> None:
        self._pool.close_all()

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
        email = build_message(
            content,
            config,
            message_id_key=idempotency_key,
            thread_ref=previous_ref if message.lifecycle_key else None,
        )
        secrets = list(secret_values(config))
        try:
            lease = await self._pool.acquire(_cache_key(config), deadline)
        except PoolTimeout:
            raise TransportTimeout(
                NAME,
                f"timed out: no free connection to the relay within the attempt "
                f"({self._pool.per_key} in use by other sends)",
            ) from None
        client = lease.conn
        reusable = False
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                if client is None:
                    client = self._new_client(config)
                client = await self._ready(client, lease.idle_s, config, deadline)
                try:
                    refused, reply = await client.send_message(
                        email, sender=_bare(config.from_address), recipients=pending
                    )
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    # Every pending recipient refused: the transaction never started, the connection is fine.
                    reusable = True
                    per = {r.recipient: (r.code, r.message) for r in exc.recipients}
                    raise _recipients_failed(per, {}, secrets) from None
            reusable = True
        except TimeoutError:
            raise transport_error(
                NAME, Mechanism.TIMEOUT, "no answer from the SMTP server within the attempt"
            ) from None
        except aiosmtplib.SMTPException as exc:
            raise _classify(exc, secrets) from None
        except (OSError, EgressRefused, MalformedUrl) as exc:
            raise transport_error(NAME, *os_error_mechanism(exc)) from None
        finally:
            # A failed or cancelled send closes its connection: the dialogue may be half-way through a command.
            self._pool.release(
                lease, client, reusable=reusable and client is not None and client.is_connected
            )
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
            # A lifecycle's next state replies to this mail: the thread so far is the reference kept.
            provider_ref=(
                email_thread.kept_ref(previous_ref, str(email["Message-ID"]))
                if message.lifecycle_key
                else None
            ),
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
            # The canonical (ASCII) host: what was egress-checked is what TLS verifies the certificate against.
            hostname=canonical_host(config.host)[0],
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            timeout=config.timeout_s,
            use_tls=implicit,
            # STARTTLS is mandatory on a plaintext port: without it aiosmtplib would send AUTH in the clear.
            start_tls=not implicit,
            tls_context=self._tls_context(),
        )

    async def _ready(
        self, client: aiosmtplib.SMTP, idle_s: float, config: SmtpConfig, deadline: float
    ) -> aiosmtplib.SMTP:
        """Make a pooled connection usable: probe it if it idled, (re)connect if it is closed."""
        if client.is_connected and idle_s > PROBE_AFTER_IDLE_S:
            try:
                await client.noop()
            except (aiosmtplib.SMTPException, OSError):
                client.close()  # the server let it go; a fresh connection below is not a retry of a send
        if not client.is_connected:
            sock = await _checked_socket(self.http.policy, config, deadline)
            try:
                # connect() also does EHLO, STARTTLS (re-EHLO) and AUTH, as configured on the client.
                await client.connect(sock=sock, port=None)
            except BaseException:
                # The socket now belongs to the transport built over it (asyncio closes it with the transport).
                # Closing it here would free its fd while the loop still has it registered, and the next socket
                # given that fd would fail with "File descriptor N is used by transport".
                client.close()
                raise
        return client


def _close(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        client.close()


def _bare(address: str) -> str:
    return address.rsplit("<", 1)[-1].rstrip(">").strip()


def _cache_key(config: SmtpConfig) -> str:
    # Changed credentials or server mean a new connection; the password only enters as a digest.
    password = config.password.get_secret_value() if config.password else ""
    raw = "\0".join(
        (config.host, str(config.port), str(config.implicit_tls), config.username or "", password)
    )
    return hashlib.sha256(raw.encode()).hexdigest()


async def _checked_socket(policy: EgressPolicy, config: SmtpConfig, deadline: float) -> socket.socket:
    """A socket connected to an address of `host` that providers/_egress.py checked (every address is)."""
    loop = asyncio.get_running_loop()
    host, _ = canonical_host(config.host)
    found = await resolve_checked(host, config.port, policy)
    last: OSError | None = None
    for family, address in found:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                loop.sock_connect(sock, (str(address), config.port)),
                timeout=max(min(config.timeout_s, deadline - time.monotonic()), 0.0),
            )
            return sock
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError) or isinstance(exc, TimeoutError):
                raise
            last = exc
    assert last is not None
    raise last


def _classify(exc: aiosmtplib.SMTPException, secrets: list[str]) -> DeliveryError:
    """aiosmtplib's failure: reply codes decided here (SMTP's own rules), the rest by the shared transport policy."""
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPConnectTimeoutError):
        return transport_error(NAME, Mechanism.TIMEOUT, "the SMTP server did not answer in time")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return transport_error(NAME, Mechanism.CONNECTION_RESET, "the SMTP server closed the connection")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, exc.message, secrets)
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        mechanism, detail = os_error_mechanism(cause)
        if mechanism is not Mechanism.CONNECTION_RESET or isinstance(exc, aiosmtplib.SMTPConnectError):
            return transport_error(NAME, mechanism, detail)
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return transport_error(NAME, Mechanism.CONNECT_REFUSED, "the SMTP connection failed")
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
