"""The HTTP/2 seam, for APNs only (HTTP/2 is all it speaks; aiohttp has no HTTP/2 client).

Built on httpx2's HTTP/2 stack: its transport layer `httpcore2` (with `h2`) used directly, because that layer
takes a network backend, which is where the egress policy is applied: every connection goes to an address the
resolver returned *and* the policy allows, while TLS still verifies the certificate against the host name.
httpx2's own client does not expose that hook.

Like providers/_http.py: one request per call, no redirects, responses capped, transport failures turned
into the taxonomy (timeouts -> TransportTimeout, refused/reset/GOAWAY -> ProviderUnavailable, a destination
the policy refuses -> EgressDenied). Status codes are left to the caller (classify_status or vendor rules).
One client per provider instance, i.e. per worker process, created lazily on that process's event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping

import httpcore2

from providers._http import MAX_RESPONSE_BYTES, EgressPolicy, HttpResponse
from shared.errors import EgressDenied, ProviderUnavailable, TransportTimeout


class _EgressRefused(httpcore2.ConnectError):
    pass


class _GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Resolves the host itself and connects only to addresses the egress policy permits."""

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
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM), timeout=timeout
            )
        except (OSError, TimeoutError) as exc:
            raise httpcore2.ConnectError(f"cannot resolve host: {type(exc).__name__}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = [a for a in addresses if self._policy.permits(ipaddress.ip_address(a))]
        if not allowed:
            raise _EgressRefused("host resolves only to refused addresses")
        last: Exception | None = None
        for address in allowed:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
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


class Http2Client:
    """A small pool of HTTP/2 connections (requests multiplex over them), egress-checked at connect time."""

    def __init__(self, policy: EgressPolicy, *, ca_file: str | None = None, max_connections: int = 4) -> None:
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
    ) -> HttpResponse:
        timeouts = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        try:
            async with asyncio.timeout(timeout_s):
                async with self._pool.stream(
                    method,
                    url,
                    headers=list((headers or {}).items()),
                    content=body or b"",
                    extensions={"timeout": timeouts},
                ) as resp:
                    payload = bytearray()
                    async for chunk in resp.aiter_stream():
                        payload.extend(chunk)
                        if len(payload) >= MAX_RESPONSE_BYTES:
                            break
                    return HttpResponse(
                        resp.status,
                        {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers},
                        bytes(payload[:MAX_RESPONSE_BYTES]),
                    )
        except (TimeoutError, httpcore2.TimeoutException) as exc:
            raise TransportTimeout(provider, f"no answer within {timeout_s:g} s") from exc
        except _EgressRefused:
            raise EgressDenied(provider, "destination resolves only to refused addresses") from None
        except ssl.SSLCertVerificationError:
            raise ProviderUnavailable(provider, "server certificate is not trusted") from None
        except httpcore2.ConnectError as exc:
            if isinstance(exc.__context__, ssl.SSLCertVerificationError):
                raise ProviderUnavailable(provider, "server certificate is not trusted") from None
            raise ProviderUnavailable(provider, "connection failed") from None
        except (httpcore2.NetworkError, httpcore2.ProtocolError, OSError) as exc:
            raise ProviderUnavailable(provider, f"transport error: {type(exc).__name__}") from None


__all__ = ["Http2Client", "tls_context"]
