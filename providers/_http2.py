"""The HTTP/2 seam, for APNs only (HTTP/2 is all it speaks; aiohttp has no HTTP/2 client).

Built on httpx2's HTTP/2 stack: its transport layer `httpcore2` (with `h2`) used directly, because that layer
takes a network backend, which is where the egress policy is applied: every connection goes to an address the
resolver returned *and* the policy allows, while TLS still verifies the certificate against the host name.
httpx2's own client does not expose that hook.

Like providers/_http.py: one request per call, no redirects, bodies read whole up to the cap, the same egress
guard (providers/_egress.py: canonical host, every resolved address checked, connect to the checked address)
and the same classification (httpcore2's failure -> a `Mechanism` -> `transport_error`, the one policy).
Status codes are left to the caller (classify_status or vendor rules).
One client per provider instance, i.e. per worker process, created lazily on that process's event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping

import httpcore2

from providers._egress import (
    EgressPolicy,
    EgressRefused,
    MalformedUrl,
    NameNotFound,
    check_url,
    resolve_checked,
)
from providers._http import (
    HttpResponse,
    Mechanism,
    os_error_mechanism,
    read_capped,
    request_timeout_s,
    transport_error,
)


class _GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Resolves the (canonical) host once and connects only to the addresses providers/_egress.py checked."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._inner = httpcore2.AnyIOBackend()
        self._policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (the interface httpcore2 calls)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            found = await asyncio.wait_for(resolve_checked(host, port, self._policy), timeout=timeout)
        except (EgressRefused, NameNotFound, OSError, TimeoutError) as exc:
            # httpcore2 wraps what it does not know; the cause chain keeps the mechanism for the classifier.
            raise httpcore2.ConnectError(str(exc)[:200]) from exc
        last: Exception | None = None
        for _, address in found:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (the interface httpcore2 calls)
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("unix sockets are not used here")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """System trust (plus `ca_file`), TLS 1.2+, ALPN h2 only: APNs refuses anything but HTTP/2."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    return ctx


def httpcore_mechanism(exc: BaseException) -> tuple[Mechanism, str]:
    """The mechanism of an httpcore2 failure (its own classes first, then the low-level cause)."""
    if isinstance(exc, httpcore2.TimeoutException):
        return Mechanism.TIMEOUT, type(exc).__name__
    if isinstance(exc, httpcore2.UnsupportedProtocol):
        return Mechanism.MALFORMED_URL, "unsupported URL scheme"
    if isinstance(exc, httpcore2.ConnectError):
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            return os_error_mechanism(cause)
        return Mechanism.CONNECT_REFUSED, str(exc)[:200] or "connection failed"
    if isinstance(exc, httpcore2.NetworkError | httpcore2.ProtocolError):
        return Mechanism.CONNECTION_RESET, type(exc).__name__  # reset, GOAWAY, broken framing
    return os_error_mechanism(exc)


class Http2Client:
    """A small pool of HTTP/2 connections (requests multiplex over them), egress-checked at connect time."""

    def __init__(self, policy: EgressPolicy, *, ca_file: str | None = None, max_connections: int = 4) -> None:
        self._policy = policy
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=tls_context(ca_file),
            http1=False,
            http2=True,
            max_connections=max_connections,
            # APNs asks clients to keep connections open for many notifications; it closes idle ones itself
            # (GOAWAY), after which the pool opens a new connection on the next request.
            keepalive_expiry=600.0,
            network_backend=_GuardedBackend(policy),
        )

    async def close(self) -> None:
        await self._pool.aclose()

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
        try:
            # The request goes to the canonical host (punycode, canonical literal): the backend resolves exactly
            # what was checked, and TLS verifies the certificate against that same name.
            dest = check_url(url, self._policy)
        except (EgressRefused, MalformedUrl) as exc:
            raise transport_error(provider, *os_error_mechanism(exc)) from None
        effective_s = request_timeout_s(timeout_s, deadline, provider)
        timeouts = {"connect": effective_s, "read": effective_s, "write": effective_s, "pool": effective_s}
        try:
            async with asyncio.timeout(effective_s):
                async with self._pool.stream(
                    method,
                    str(dest.url),
                    headers=list((headers or {}).items()),
                    content=body or b"",
                    extensions={"timeout": timeouts},
                ) as resp:
                    payload = await read_capped(resp.aiter_stream())
                    return HttpResponse(
                        resp.status,
                        {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers},
                        payload,
                    )
        except TimeoutError:
            raise transport_error(
                provider, Mechanism.TIMEOUT, f"no answer within {effective_s:g} s"
            ) from None
        except (httpcore2.ConnectError, httpcore2.TimeoutException) as exc:
            raise transport_error(provider, *httpcore_mechanism(exc)) from None
        except (
            httpcore2.NetworkError,
            httpcore2.ProtocolError,
            httpcore2.UnsupportedProtocol,
            OSError,
        ) as exc:
            raise transport_error(provider, *httpcore_mechanism(exc)) from None


__all__ = ["Http2Client", "httpcore_mechanism", "tls_context"]
