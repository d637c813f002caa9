"""providers/_http.py and _http2.py over real sockets: timeouts, refusals, TLS, egress policy, no redirects."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import pytest

from providers._http import EgressPolicy, HttpClient
from providers._http2 import Http2Client
from shared import errors
from tests.fakes.server import FakeServer, Reply
from tests.fakes.smtp import TlsFiles, make_tls


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


def test_a_cookie_one_receiver_sets_is_never_sent_to_another(server):
    """One client serves every integration of a worker process: a cookie that one team's receiver sets must not
    travel with the next delivery to the same host (another team's webhook), nor with its own retries."""
    server.script("/team-a", Reply(200, b"ok", headers={"Set-Cookie": "session=team-a-secret; Path=/"}))
    server.script("/team-b", Reply(200, b"ok"))

    async def both() -> None:
        client = HttpClient.create(allow_cidrs=("127.0.0.1/32",))
        try:
            # by name: aiohttp keeps no cookies of an IP-literal host, a receiver's name is the real case
            for path in ("/team-a", "/team-b", "/team-a"):
                url = f"http://localhost:{server.port}{path}"
                await client.request("POST", url, provider="webhook", body=b"{}", timeout_s=5)
        finally:
            await client.close()

    run(both())
    sent = [r.headers.get("cookie") for path in ("/team-a", "/team-b") for r in server.requests(path)]
    assert sent == [None, None, None]


def test_redirects_are_not_followed(server):
    server.script("/moved", Reply(307, b"", headers={"Location": server.url("/target")}))
    resp = run(_request(server.url("/moved")))
    assert resp.status == 307
    assert server.requests("/target") == []


# one classification for every transport: each mechanism, over a real socket


class _Listener:
    """127.0.0.1 listener; `mode`: "tls" (handshake with the test CA's certificate), "plain" (answers HTTP in
    clear text, so a TLS client's handshake fails), "hangup" (accepts and closes)."""

    def __init__(self, mode: str, tls: TlsFiles | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._mode = mode
        self._ctx = tls.server_context(alpn=["h2", "http/1.1"]) if tls else None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self._mode == "tls" and self._ctx is not None:
                    conn.settimeout(5)
                    with contextlib.suppress(OSError):
                        self._ctx.wrap_socket(conn, server_side=True).close()
                elif self._mode == "plain":
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("transport-tls"))


async def _h2(url: str, ca_file: str | None) -> None:
    client = Http2Client(EgressPolicy(["127.0.0.1/32"]), ca_file=ca_file)
    try:
        await client.request("POST", url, provider="apns", body=b"{}", timeout_s=5)
    finally:
        await client.close()


def test_untrusted_certificate_is_permanent_invalid_config_on_http1(tls: TlsFiles):
    """Repro before the fix: ProviderUnavailable("transport error: ClientConnectorCertificateError"), retried
    five times, while SMTP called the same condition permanent."""
    listener = _Listener("tls", tls)
    try:
        with pytest.raises(errors.InvalidConfig, match="certificate is not trusted") as caught:
            run(_request(f"https://127.0.0.1:{listener.port}/x"))  # the test CA is not in the system store
        assert caught.value.marks_failing and not caught.value.retryable
    finally:
        listener.close()


def test_untrusted_certificate_is_permanent_invalid_config_on_http2(tls: TlsFiles, tmp_path):
    other = make_tls(tmp_path)  # a CA that did not sign the listener's certificate
    listener = _Listener("tls", tls)
    try:
        with pytest.raises(errors.InvalidConfig, match="certificate is not trusted"):
            run(_h2(f"https://127.0.0.1:{listener.port}/3/device/x", other.ca_file))
    finally:
        listener.close()


def test_tls_handshake_failure_is_retryable_on_both_transports(tls: TlsFiles):
    listener = _Listener("plain")
    try:
        with pytest.raises(errors.ProviderUnavailable, match="TLS handshake failed"):
            run(_request(f"https://127.0.0.1:{listener.port}/x"))
        with pytest.raises(errors.ProviderUnavailable):
            run(_h2(f"https://127.0.0.1:{listener.port}/3/device/x", tls.ca_file))
    finally:
        listener.close()


def test_hangup_is_retryable(tls: TlsFiles):
    listener = _Listener("hangup")
    try:
        with pytest.raises(errors.ProviderUnavailable, match="connection lost"):
            run(_request(f"http://127.0.0.1:{listener.port}/x"))
        with pytest.raises(errors.ProviderUnavailable):
            run(_h2(f"https://127.0.0.1:{listener.port}/3/device/x", tls.ca_file))
    finally:
        listener.close()


@pytest.mark.parametrize(
    "url", ["http://exa mple.com/x", "http://[zz]/x", "ftp://example.com/x", "http://:80/x"]
)
def test_malformed_url_is_permanent_invalid_config(url: str, tls: TlsFiles):
    """Repro before the fix: a malformed URL surfaced as ProviderUnavailable ("transport error: InvalidURL") and
    was retried until the budget ran out."""
    with pytest.raises(errors.InvalidConfig, match="malformed URL"):
        run(_request(url))
    with pytest.raises(errors.InvalidConfig, match="malformed URL"):
        run(_h2(url.replace("http://", "https://"), tls.ca_file))


def test_refused_connection_is_retryable_on_http2(tls: TlsFiles):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(errors.ProviderUnavailable, match="connection failed"):
        run(_h2(f"https://127.0.0.1:{port}/3/device/x", tls.ca_file))


def test_unknown_name_is_retryable():
    """RFC 6761 reserves .invalid: it never resolves. Retryable (DNS may be fixed), named in the detail."""
    with pytest.raises(errors.ProviderUnavailable, match="connection failed"):
        run(_request("http://herald-test.invalid/x", allow=()))
