"""providers/_http.py over a real socket: timeouts, refused connections, egress policy, no redirects."""

from __future__ import annotations

import asyncio
import socket

import pytest

from providers._http import HttpClient
from shared import errors
from tests.fakes.server import FakeServer, Reply


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


async def _request(url: str, *, allow: tuple[str, ...] = ("127.0.0.1/32",), timeout_s: float = 5.0):
    client = HttpClient.create(allow_cidrs=allow)
    try:
        return await client.request("POST", url, provider="webhook", body=b"{}", timeout_s=timeout_s)
    finally:
        await client.close()


@pytest.fixture(scope="module")
def server():
    with FakeServer() as s:
        yield s


def test_success_returns_status_headers_body(server):
    server.script("/ok", Reply(201, b'{"id":"1"}', headers={"X-Thing": "yes"}))
    resp = run(_request(server.url("/ok")))
    assert (resp.status, resp.body, resp.headers["x-thing"]) == (201, b'{"id":"1"}', "yes")


def test_slow_answer_is_a_transport_timeout(server):
    server.script("/slow", Reply(200, b"late", delay_s=2))
    with pytest.raises(errors.TransportTimeout):
        run(_request(server.url("/slow"), timeout_s=0.3))


def test_refused_connection_is_provider_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(errors.ProviderUnavailable):
        run(_request(f"http://127.0.0.1:{port}/x"))


def test_loopback_is_refused_unless_allow_listed(server):
    with pytest.raises(errors.EgressDenied):
        run(_request(server.url("/denied"), allow=()))
    # a name that resolves to loopback is refused just the same
    with pytest.raises(errors.EgressDenied):
        run(_request(f"http://localhost:{server.port}/denied", allow=()))
    # metadata endpoints and private ranges are refused before any connection attempt
    for url in ("http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://[::1]:80/"):
        with pytest.raises(errors.EgressDenied):
            run(_request(url, allow=()))
    assert server.requests("/denied") == []  # nothing reached the server


def test_redirects_are_not_followed(server):
    server.script("/moved", Reply(307, b"", headers={"Location": server.url("/target")}))
    resp = run(_request(server.url("/moved")))
    assert resp.status == 307
    assert server.requests("/target") == []
