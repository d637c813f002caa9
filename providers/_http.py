"""The one HTTP seam every provider goes through, and the one place status codes become the taxonomy.

Client choice (bench/http_clients.py, measured side by side on this 2-core machine, see the README's
benchmark section): aiohttp's ClientSession sustained several times the posts/s of httpx2's AsyncClient at
the same concurrency against a 50 ms receiver, so the hot path uses aiohttp. Providers only see
`HttpClient.post` and `HttpResponse`, so the client can change without touching them.

What this module decides:
- 2xx success; 3xx failure, never followed (a redirect could point anywhere, including inside our network);
- 408/425/429/5xx, timeouts and connection errors retryable, `Retry-After` parsed (seconds or HTTP date);
- 400/413/422 invalid payload; 401/403 auth failed; 404/410 target gone; other 4xx invalid payload;
- egress to private, loopback and link-local addresses refused unless allow-listed (checked on the resolved
  address, so DNS cannot smuggle one in).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

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

MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_CHARS = 500
REDACTED = "[redacted]"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class EgressPolicy:
    """Public addresses are fine; private, loopback, link-local and reserved ones need an allow-list entry."""

    def __init__(self, allow_cidrs: Sequence[str] = ()) -> None:
        self.allowed: list[IpNetwork] = [ipaddress.ip_network(c, strict=False) for c in allow_cidrs]
        # Parsing an address per request showed in profiles; a host's verdict never changes.
        self._literal_verdicts: dict[str, bool] = {}

    def permits(self, address: IpAddress) -> bool:
        if any(address in net for net in self.allowed):
            return True
        return address.is_global and not address.is_multicast

    def permits_host_literal(self, host: str) -> bool:
        """False for an IP-literal host the policy refuses; True for names (checked once resolved)."""
        verdict = self._literal_verdicts.get(host)
        if verdict is None:
            try:
                verdict = self.permits(ipaddress.ip_address(host.strip("[]")))
            except ValueError:
                verdict = True  # a name: the guarded resolver checks what it resolves to
            if len(self._literal_verdicts) > 4096:  # bounded: hosts come from configs, but be safe
                self._literal_verdicts.clear()
            self._literal_verdicts[host] = verdict
        return verdict


class _GuardedResolver(AbstractResolver):
    """Resolves with the default resolver, then drops every address the egress policy refuses."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._policy.permits(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise _EgressRefused(host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class _EgressRefused(OSError):
    pass


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
    ) -> HttpResponse:
        """One request, no redirects. Transport failures come back as taxonomy errors."""
        host = urlsplit(url).hostname or ""
        self._check_literal_address(provider, host)
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                headers=dict(headers or {}),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                payload = await resp.content.read(MAX_RESPONSE_BYTES)
                return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, payload)
        except TimeoutError as exc:
            raise TransportTimeout(provider, f"no answer within {timeout_s:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _EgressRefused):
                raise EgressDenied(provider, f"{host} resolves only to refused addresses") from None
            raise ProviderUnavailable(
                provider, f"connection failed: {exc.os_error.strerror or 'error'}"
            ) from None
        except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError) as exc:
            raise ProviderUnavailable(provider, f"transport error: {type(exc).__name__}") from None

    def _check_literal_address(self, provider: str, host: str) -> None:
        if not self._policy.permits_host_literal(host):
            raise EgressDenied(provider, "destination address is not allowed for egress")


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
    "classify_status",
    "excerpt",
    "parse_retry_after",
]
