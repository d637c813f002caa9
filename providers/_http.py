"""The one HTTP seam every provider goes through, and the one place failures become the taxonomy.

Client choice (bench/http_clients.py, measured side by side on this 2-core machine, see the README's
benchmark section): aiohttp's ClientSession sustained several times the posts/s of httpx2's AsyncClient at
the same concurrency against a 50 ms receiver, so the hot path uses aiohttp. Providers only see
`HttpClient.request` and `HttpResponse`, so the client can change without touching them.

What this module decides, for every transport (aiohttp here, httpcore2 in _http2.py, SMTP in email_smtp.py):
- transport failures: each transport names the MECHANISM (what happened, `Mechanism`), and `transport_error`
  is the one policy mapping a mechanism to a taxonomy class (retry or not), as httpx keeps its exception
  hierarchy apart from any retry decision;
- HTTP status: 2xx success; 3xx failure, never followed (a redirect could point anywhere, including inside our
  network); 408/425/429/5xx retryable, `Retry-After` parsed (seconds or HTTP date); 400/413/422 invalid payload;
  401/403 auth failed; 404/410 target gone; other 4xx invalid payload;
- bodies are read whole, up to MAX_RESPONSE_BYTES (a longer body is cut there, not an error);
- deadlines: a request gets min(its timeout, what is left of the attempt's deadline).
Egress (which host is really connected to, and whether it may be) is providers/_egress.py.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from providers._egress import (
    EgressPolicy,
    EgressRefused,
    MalformedUrl,
    NameNotFound,
    check_url,
    resolve_checked,
)
from shared.errors import (
    AuthFailed,
    DeliveryError,
    EgressDenied,
    InvalidConfig,
    InvalidPayload,
    ProviderUnavailable,
    RateLimited,
    TargetGone,
    TransportTimeout,
)

MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_CHARS = 500
REDACTED = "[redacted]"
_READ_CHUNK_BYTES = 16 * 1024
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


class Mechanism(StrEnum):
    """What went wrong on the wire, independent of what we do about it."""

    CONNECT_REFUSED = "connect_refused"
    CONNECTION_RESET = "connection_reset"  # reset or closed mid-exchange, broken framing
    DNS_NOT_FOUND = "dns_not_found"  # the name has no address (NXDOMAIN, NODATA)
    DNS_FAILURE = "dns_failure"  # the resolver itself failed (SERVFAIL, no network)
    TLS_UNTRUSTED = "tls_untrusted"  # certificate expired, self-signed, wrong name, unknown CA
    TLS_HANDSHAKE = "tls_handshake"  # the TLS handshake failed for another reason
    TIMEOUT = "timeout"
    MALFORMED_URL = "malformed_url"
    EGRESS_DENIED = "egress_denied"


#: the policy: mechanism -> taxonomy class (the class says whether it is retried and whether it marks failing)
_POLICY: dict[Mechanism, type[DeliveryError]] = {
    Mechanism.CONNECT_REFUSED: ProviderUnavailable,
    Mechanism.CONNECTION_RESET: ProviderUnavailable,
    # A name that does not resolve today may tomorrow (a DNS change in flight); the budget bounds it.
    Mechanism.DNS_NOT_FOUND: ProviderUnavailable,
    Mechanism.DNS_FAILURE: ProviderUnavailable,
    # Nothing a retry changes: the destination's certificate, or our CA bundle, needs fixing.
    Mechanism.TLS_UNTRUSTED: InvalidConfig,
    Mechanism.TLS_HANDSHAKE: ProviderUnavailable,
    Mechanism.TIMEOUT: TransportTimeout,
    Mechanism.MALFORMED_URL: InvalidConfig,
    Mechanism.EGRESS_DENIED: EgressDenied,
}

_PREFIX: dict[Mechanism, str] = {
    Mechanism.CONNECT_REFUSED: "connection failed",
    Mechanism.CONNECTION_RESET: "connection lost",
    Mechanism.DNS_NOT_FOUND: "connection failed",
    Mechanism.DNS_FAILURE: "connection failed",
    Mechanism.TLS_UNTRUSTED: "server certificate is not trusted",
    Mechanism.TLS_HANDSHAKE: "TLS handshake failed",
    Mechanism.TIMEOUT: "timed out",
    Mechanism.MALFORMED_URL: "malformed URL",
    Mechanism.EGRESS_DENIED: "egress denied",
}


def transport_error(provider: str, mechanism: Mechanism, cause: str = "") -> DeliveryError:
    """THE policy: the taxonomy error for a transport mechanism, with a detail naming the cause (no secrets)."""
    detail = _PREFIX[mechanism] + (f": {cause}" if cause else "")
    return _POLICY[mechanism](provider, detail[:300])


def os_error_mechanism(exc: BaseException) -> tuple[Mechanism, str]:
    """The mechanism of a low-level failure (socket, resolver, TLS), whichever library wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the cause chain, outermost first
        seen.add(id(current))
        found = _one_mechanism(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return Mechanism.CONNECTION_RESET, type(exc).__name__


def _one_mechanism(exc: BaseException) -> tuple[Mechanism, str] | None:
    if isinstance(exc, EgressRefused):
        return Mechanism.EGRESS_DENIED, exc.reason
    if isinstance(exc, MalformedUrl):
        return Mechanism.MALFORMED_URL, str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Mechanism.TLS_UNTRUSTED, exc.verify_message or "certificate verify failed"
    if isinstance(exc, ssl.CertificateError):
        return Mechanism.TLS_UNTRUSTED, str(exc)[:200]
    if isinstance(exc, ssl.SSLError):
        return Mechanism.TLS_HANDSHAKE, getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
    if isinstance(exc, NameNotFound):
        return Mechanism.DNS_NOT_FOUND, exc.strerror or "name does not resolve"
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return Mechanism.DNS_NOT_FOUND, exc.strerror or "name does not resolve"
        return Mechanism.DNS_FAILURE, exc.strerror or "resolver error"
    if isinstance(exc, TimeoutError):
        return Mechanism.TIMEOUT, ""
    if isinstance(exc, OSError):
        if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
            return Mechanism.CONNECT_REFUSED, exc.strerror or "connection refused"
        # reset, broken pipe, aborted (also a library's OSError carrying that errno, e.g. aiohttp.ClientOSError),
        # or a library's "server disconnected" ConnectionError
        if isinstance(exc, ConnectionError) or exc.errno in _RESET_ERRNOS:
            return Mechanism.CONNECTION_RESET, exc.strerror or str(exc)[:200] or type(exc).__name__
        if exc.errno is not None:  # unreachable network or host, and the like: the connection was not made
            return Mechanism.CONNECT_REFUSED, exc.strerror or f"errno {exc.errno}"
    return None


def aiohttp_mechanism(exc: BaseException) -> tuple[Mechanism, str]:
    """The mechanism of an aiohttp failure."""
    if isinstance(exc, aiohttp.InvalidURL):
        return Mechanism.MALFORMED_URL, "the URL cannot be parsed"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        return Mechanism.TLS_UNTRUSTED, (
            cert_error.verify_message if isinstance(cert_error, ssl.SSLCertVerificationError) else ""
        ) or "certificate verify failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return os_error_mechanism(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return Mechanism.CONNECTION_RESET, "server closed the connection mid-answer"
    if isinstance(exc, aiohttp.ClientResponseError):  # malformed status line or headers
        return Mechanism.CONNECTION_RESET, f"malformed answer ({type(exc).__name__})"
    return os_error_mechanism(exc)


def request_timeout_s(timeout_s: float, deadline: float | None, provider: str) -> float:
    """The timeout of one request: its own, cut to what is left of the attempt; TransportTimeout if none is."""
    if deadline is None:
        return timeout_s
    left_s = deadline - time.monotonic()
    if left_s <= 0:
        raise TransportTimeout(provider, "timed out: the attempt's deadline passed before this request")
    return min(timeout_s, left_s)


async def read_capped(chunks: Any, limit_bytes: int = MAX_RESPONSE_BYTES) -> bytes:
    """Every chunk of a body up to `limit_bytes` (an async iterator of bytes); the rest is not read."""
    payload = bytearray()
    async for chunk in chunks:
        payload.extend(chunk[: limit_bytes - len(payload)])
        if len(payload) >= limit_bytes:
            break
    return bytes(payload)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class _EgressOSError(OSError):
    """Carries an EgressRefused through aiohttp's resolver path (which only wraps OSError)."""

    def __init__(self, refused: EgressRefused | NameNotFound) -> None:
        super().__init__(str(refused))
        self.__cause__ = refused


class _GuardedResolver(AbstractResolver):
    """Resolves once and returns only checked addresses: aiohttp connects to exactly these."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            found = await resolve_checked(host, port, self._policy, family=family)
        except (EgressRefused, NameNotFound) as exc:
            raise _EgressOSError(exc) from exc
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=fam,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for fam, address in found
        ]

    async def close(self) -> None:
        return None


class HttpClient:
    """One per worker process, shared by every send on that process's event loop."""

    def __init__(self, session: aiohttp.ClientSession, policy: EgressPolicy) -> None:
        self._session = session
        self._policy = policy

    @classmethod
    def create(cls, *, allow_cidrs: Sequence[str] = (), max_connections: int = 512) -> HttpClient:
        """Must be called with an event loop running (the session binds to it)."""
        policy = EgressPolicy(allow_cidrs)
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=0,
            resolver=_GuardedResolver(policy),
            ttl_dns_cache=60,
            enable_cleanup_closed=True,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            # One session serves every integration of the process: a cookie one receiver sets would travel
            # with the next delivery to that host, another tenant's webhook among them. No send needs one.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            raise_for_status=False,
            headers={"User-Agent": "Herald/0.1 (+notification delivery)"},
        )
        return cls(session, policy)

    @property
    def policy(self) -> EgressPolicy:
        """The egress policy, for transports that do not go through this client (SMTP, HTTP/2 to APNs)."""
        return self._policy

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        provider: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float,
        deadline: float | None = None,
    ) -> HttpResponse:
        """One request, no redirects, body read whole (capped). Transport failures come back classified.

        `deadline` (time.monotonic()) cuts the timeout to what is left of the attempt."""
        try:
            # The canonical URL object is what aiohttp connects with: the host checked is the host used.
            # An IP literal skips aiohttp's resolver, so check_url judges it here; names are judged on resolution.
            dest = check_url(url, self._policy)
        except (EgressRefused, MalformedUrl) as exc:
            raise transport_error(provider, *os_error_mechanism(exc)) from None
        effective_s = request_timeout_s(timeout_s, deadline, provider)
        try:
            async with self._session.request(
                method,
                dest.url,
                data=body,
                headers=dict(headers or {}),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=effective_s),
            ) as resp:
                payload = await read_capped(resp.content.iter_chunked(_READ_CHUNK_BYTES))
                return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, payload)
        except TimeoutError:
            raise transport_error(
                provider, Mechanism.TIMEOUT, f"no answer within {effective_s:g} s"
            ) from None
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            raise transport_error(provider, *aiohttp_mechanism(exc)) from None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def excerpt(body: bytes | str, secrets: Iterable[str] = ()) -> str:
    """The start of a vendor's answer for the attempt log, with any of our secrets blanked out."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = text[: EXCERPT_CHARS * 4]
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text[:EXCERPT_CHARS]


def classify_status(
    provider: str,
    response: HttpResponse,
    *,
    secrets: Iterable[str] = (),
    detail: str | None = None,
) -> None:
    """Return quietly on 2xx, otherwise raise the error the status means."""
    status = response.status
    if 200 <= status < 300:
        return
    kwargs: dict[str, Any] = {
        "status_code": status,
        "response_excerpt": excerpt(response.body, secrets),
    }
    reason = detail or f"HTTP {status}"
    if 300 <= status < 400:
        raise InvalidPayload(provider, f"redirect not followed ({reason})", **kwargs)
    if status == 429:
        retry_after_s = parse_retry_after(response.headers.get("retry-after"))
        raise RateLimited(provider, f"rate limited ({reason})", retry_after_s=retry_after_s, **kwargs)
    if status in (408, 425) or status >= 500:
        if status == 503 and (hint := parse_retry_after(response.headers.get("retry-after"))) is not None:
            raise RateLimited(provider, f"unavailable ({reason})", retry_after_s=hint, **kwargs)
        raise ProviderUnavailable(provider, f"unavailable ({reason})", **kwargs)
    if status in (401, 403):
        raise AuthFailed(provider, f"rejected credentials ({reason})", **kwargs)
    if status in (404, 410):
        raise TargetGone(provider, f"target gone ({reason})", **kwargs)
    raise InvalidPayload(provider, f"rejected payload ({reason})", **kwargs)


__all__ = [
    "DeliveryError",
    "EgressPolicy",
    "HttpClient",
    "HttpResponse",
    "Mechanism",
    "aiohttp_mechanism",
    "classify_status",
    "excerpt",
    "os_error_mechanism",
    "parse_retry_after",
    "read_capped",
    "request_timeout_s",
    "transport_error",
]
