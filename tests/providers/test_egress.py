"""The egress guard over real sockets: disguised and embedded loopback hosts never reach a loopback server.

Every transport (aiohttp, HTTP/2, SMTP) goes through providers/_egress.py. The servers here listen on 127.0.0.1
and count every TCP connection they accept; the allow-list is EMPTY unless a test says otherwise.

Repro before the fix: `http://①②⑦.0.0.1:P/` and `http://127。0。0。1:P/` reached the loopback server with an empty
allow-list (the check read `urlsplit(url).hostname`, yarl normalised the host to 127.0.0.1 afterwards and aiohttp
connected to that literal without asking the resolver); `http://2130706434:P/` and `http://127.2:P/` failed
as a retryable `provider_unavailable` rather than `egress_denied`, and `[64:ff9b::7f00:1]` passed the policy
(NAT64 counts as global).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from providers import registry
from providers._http import HttpClient
from providers._http2 import Http2Client
from providers.email_smtp import SmtpConfig, SmtpProvider
from providers.slack import SlackBotConfig, SlackWebhookConfig
from providers.webhook import WebhookConfig
from shared.errors import EgressDenied, ProviderUnavailable
from tests.fakes.smtp import TlsFiles, make_tls
from tests.providers.test_smtp import MESSAGE


class CountingListener:
    """A TCP listener on 127.0.0.1 that accepts, counts and closes every connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    server = CountingListener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("egress-tls"))


DISGUISED_HOSTS = [
    "①②⑦.0.0.1",  # circled digits: UTS-46 maps them to 127.0.0.1
    "127。0。0。1",  # ideographic full stops
    "127\uff0e0\uff0e0\uff0e1",  # fullwidth full stops (escaped: ruff flags the literal character)
    "127｡0｡0｡1",  # halfwidth ideographic full stops
    "2130706434",  # 127.0.0.2 as one decimal number
    "127.2",  # 127.0.0.2, the short form inet_aton accepts
    "0x7f.1",  # hex
    "0177.0.0.1",  # octal
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
    "[2002:7f00:1::1]",  # 6to4 embedding 127.0.0.1
    "localhost",  # a name whose addresses are loopback
]


def _http(url: str, allow: tuple[str, ...] = ()) -> None:
    async def run() -> None:
        client = HttpClient.create(allow_cidrs=allow)
        try:
            await client.request("POST", url, provider="webhook", body=b"{}", timeout_s=3)
        finally:
            await client.close()

    asyncio.run(run())


def _http2(url: str, tls: TlsFiles, allow: tuple[str, ...] = ()) -> None:
    async def run() -> None:
        client = HttpClient.create(allow_cidrs=allow)
        h2 = Http2Client(client.policy, ca_file=tls.ca_file)
        try:
            await h2.request("POST", url, provider="apns", body=b"{}", timeout_s=3)
        finally:
            await h2.close()
            await client.close()

    asyncio.run(run())


@pytest.mark.parametrize("host", DISGUISED_HOSTS)
def test_http1_never_reaches_loopback(listener: CountingListener, host: str):
    with pytest.raises(EgressDenied):
        _http(f"http://{host}:{listener.port}/hook")
    assert listener.accepted == 0


@pytest.mark.parametrize("host", DISGUISED_HOSTS)
def test_http2_never_reaches_loopback(listener: CountingListener, tls: TlsFiles, host: str):
    with pytest.raises(EgressDenied):
        _http2(f"https://{host}:{listener.port}/3/device/abc", tls)
    assert listener.accepted == 0


@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "64:ff9b::7f00:1", "localhost", "127.0.0.1"])
def test_smtp_never_reaches_loopback(listener: CountingListener, tls: TlsFiles, host: str):
    config = SmtpConfig.model_validate(
        {"host": host, "port": listener.port, "from_address": "h@example.com", "to": ["a@example.com"]}
    )

    async def run() -> None:
        client = HttpClient.create(allow_cidrs=())
        provider = SmtpProvider(client, tls_ca_file=tls.ca_file)
        try:
            await provider.send(MESSAGE, config, idempotency_key="d-1", previous_ref=None)
        finally:
            await provider.aclose()
            await client.close()

    with pytest.raises(EgressDenied):
        asyncio.run(run())
    assert listener.accepted == 0


@pytest.mark.parametrize("host", ["2130706434", "127.2", "①②⑦.0.0.1", "0x7f.0.0.1"])
def test_disguised_hosts_are_refused_even_when_loopback_is_allow_listed(
    listener: CountingListener, host: str
):
    """Non-canonical numeric hosts are refused outright (permanent `egress_denied`, never retried), whatever the
    allow-list says: no real destination needs them, and they hide from whoever reviews the config."""
    with pytest.raises(EgressDenied) as caught:
        _http(f"http://{host}:{listener.port}/hook", allow=("127.0.0.0/8",))
    assert not caught.value.retryable and caught.value.code == "egress_denied"
    assert "non-canonical" in caught.value.detail
    assert listener.accepted == 0


def test_canonical_allow_listed_loopback_is_reached(listener: CountingListener):
    """The control: the same listener is reachable when written canonically and allow-listed."""
    with pytest.raises(ProviderUnavailable):  # the listener hangs up at once
        _http(f"http://127.0.0.1:{listener.port}/hook", allow=("127.0.0.1/32",))
    assert listener.accepted >= 1


# save-time refusals: the config validators (the API answers 422 with the message)


@pytest.mark.parametrize(
    "url",
    [
        "http://169。254。169。254/latest/meta-data",
        "http://①②⑦.0.0.1/",
        "http://2130706434/",
        "http://127.2:8080/",
        "http://0x7f.1/",
    ],
)
def test_validators_refuse_disguised_numeric_hosts_always(url: str):
    for model, field in (
        (WebhookConfig, "url"),
        (SlackWebhookConfig, "webhook_url"),
    ):
        with pytest.raises(ValidationError, match="egress_denied"):
            model.model_validate({field: url})
    with pytest.raises(ValidationError, match="egress_denied"):
        SlackBotConfig.model_validate({"token": "xoxb-1-2-abc", "channel": "C0123ABCD", "api_base_url": url})


@pytest.mark.parametrize(
    ("provider", "config"),
    [
        ("webhook", {"url": "http://169.254.169.254/latest/meta-data"}),
        ("webhook", {"url": "http://[::ffff:10.0.0.1]/"}),
        ("slack", {"webhook_url": "http://10.1.2.3/services/T/B/x"}),
        (
            "slack_bot",
            {"token": "xoxb-1-2-abc", "channel": "C0123ABCD", "api_base_url": "http://127.0.0.1/api"},
        ),
        ("discord", {"webhook_url": "http://[64:ff9b::a9fe:a9fe]/api/webhooks/123456789012/tokentokentoken"}),
        ("teams", {"webhook_url": "http://192.168.1.10/workflows/x"}),
        ("pagerduty", {"routing_key": "R" * 32, "events_url": "http://0.0.0.0/v2/enqueue"}),
        ("smtp", {"host": "127.0.0.1", "from_address": "h@example.com", "to": ["a@example.com"]}),
    ],
)
def test_api_input_refuses_literals_the_allow_list_refuses(provider: str, config: dict[str, object]):
    with pytest.raises(ValidationError, match="egress_denied"):
        registry.validate_input_config(provider, config, egress_allow_cidrs=[])
    # allow-listed, the same input is fine; stored configs load without the policy (the send checks again)
    registry.validate_input_config(provider, config, egress_allow_cidrs=["0.0.0.0/0", "::/0"])
    registry.load_stored_config(provider, config)


def test_malformed_url_is_refused_with_a_machine_readable_code():
    with pytest.raises(ValidationError, match="invalid_url"):
        WebhookConfig.model_validate({"url": "http://exa mple.com/"})
