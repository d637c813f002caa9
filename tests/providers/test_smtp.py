"""SMTP provider against a real aiosmtpd server: STARTTLS and implicit TLS, AUTH, reply classes, recipients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from providers._http import HttpClient
from providers.base import Receipt
from providers.email_smtp import SmtpConfig, SmtpProvider
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
from shared.rendering import RenderedMessage
from tests.fakes.smtp import PASSWORD, USERNAME, FakeSmtp, TlsFiles, make_tls

T = TypeVar("T")
# aiosmtpd warns that implicit TLS with AUTH "does not require TLS": it only counts STARTTLS as TLS.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

MESSAGE = RenderedMessage(
    kind="release",
    event_type="release.created",
    title="checkout 1.4.2 released to prod",
    text="Fixes the <login> crash",
    severity="error",
    fields=[("Project", "checkout"), ("Version", "1.4.2")],
    link="https://admin.example/r/142",
    footer="Herald · checkout",
    lifecycle_key="checkout:prod:1.4.2",
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp(tls: TlsFiles) -> Iterator[FakeSmtp]:
    with FakeSmtp(tls) as server:
        yield server


def config(server: FakeSmtp, **overrides: Any) -> SmtpConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.port,
        "security": "tls" if server.mode == "tls" else "starttls",
        "username": USERNAME,
        "password": PASSWORD,
        "from_address": "Herald <herald@example.com>",
        "to": ["ana@example.com", "bo@example.com"],
        "timeout_s": 5,
    }
    values.update(overrides)
    return SmtpConfig.model_validate(values)


def with_provider(
    tls: TlsFiles, body: Callable[[SmtpProvider], Awaitable[T]], *, allow: tuple[str, ...] = ("127.0.0.1/32",)
) -> T:
    async def run() -> T:
        http = HttpClient.create(allow_cidrs=allow)
        try:
            return await body(SmtpProvider(http, tls_ca_file=tls.ca_file))
        finally:
            await http.close()

    return asyncio.run(run())


def send_once(tls: TlsFiles, cfg: SmtpConfig, progress: dict[str, str] | None = None) -> Receipt:
    async def body(p: SmtpProvider) -> Receipt:
        return await p.send(MESSAGE, cfg, idempotency_key="d-1", previous_ref=None, progress=progress)

    return with_provider(tls, body)


def send_error(tls: TlsFiles, cfg: SmtpConfig, progress: dict[str, str] | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        send_once(tls, cfg, progress)
    return info.value


def test_starttls_auth_multipart_to_every_recipient(smtp: FakeSmtp, tls: TlsFiles):
    receipt = send_once(tls, config(smtp, cc=["cy@example.com"]))
    [got] = smtp.wait_for(1)
    assert got.tls and got.authenticated
    assert got.mail_from == "herald@example.com"
    assert sorted(got.rcpt_tos) == ["ana@example.com", "bo@example.com", "cy@example.com"]
    msg = got.message
    assert msg["Subject"] == "[ERROR] checkout 1.4.2 released to prod"
    assert msg["To"] == "ana@example.com, bo@example.com"
    assert msg["Cc"] == "cy@example.com"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = got.part("plain"), got.part("html")
    assert "Fixes the <login> crash" in text and "Details: https://admin.example/r/142" in text
    assert "Fixes the &lt;login&gt; crash" in html  # autoescaped
    assert 'href="https://admin.example/r/142"' in html
    assert receipt.target_progress == {r: "delivered" for r in got.rcpt_tos}


def test_implicit_tls(tls: TlsFiles):
    with FakeSmtp(tls, mode="tls") as server:
        send_once(tls, config(server))
        [got] = server.wait_for(1)
        assert got.tls and got.authenticated


def test_connection_reused_and_survives_server_closing_it(smtp: FakeSmtp, tls: TlsFiles):
    cfg = config(smtp)

    async def body(p: SmtpProvider) -> None:
        await p.send(MESSAGE, cfg, idempotency_key="d-1", previous_ref=None)
        await p.send(MESSAGE, cfg, idempotency_key="d-2", previous_ref=None)
        smtp.close_connections()  # the server drops the idle session
        await asyncio.sleep(0.3)
        await p.send(MESSAGE, cfg, idempotency_key="d-3", previous_ref=None)

    with_provider(tls, body)
    first, second, third = smtp.wait_for(3)
    assert first.peer_port == second.peer_port  # one connection for both sends
    assert third.peer_port != first.peer_port  # reconnected after the server closed it
    assert smtp.connections == 2


def test_bad_password_is_auth_failed_and_secret_free(smtp: FakeSmtp, tls: TlsFiles):
    err = send_error(tls, config(smtp, password="wrong-password-123"))
    assert isinstance(err, AuthFailed)
    assert err.status_code == 535
    assert "wrong-password-123" not in f"{err} {err.detail} {err.response_excerpt}"
    assert smtp.received == []


@pytest.mark.parametrize(
    ("stage", "reply", "expected"),
    [
        ("DATA", "451 4.3.0 Local error, try later", ProviderUnavailable),
        ("DATA", "554 5.6.0 Message rejected", InvalidPayload),
        ("MAIL", "454 4.7.0 Throttling failure: Maximum sending rate exceeded", RateLimited),
        ("MAIL", "530 5.7.0 Authentication required", AuthFailed),
        ("MAIL", "421 4.3.2 Service shutting down", ProviderUnavailable),
    ],
)
def test_reply_codes_are_classified(smtp: FakeSmtp, tls: TlsFiles, stage: str, reply: str, expected: type):
    smtp.script(stage, reply)
    err = send_error(tls, config(smtp))
    assert type(err) is expected
    assert err.status_code == int(reply[:3])
    assert err.retryable == reply.startswith("4")


def test_transient_recipient_failure_retries_only_that_recipient(smtp: FakeSmtp, tls: TlsFiles):
    smtp.script("RCPT bo@example.com", "450 4.2.1 Mailbox busy")
    err = send_error(tls, config(smtp))
    assert isinstance(err, ProviderUnavailable)
    assert err.target_progress == {"ana@example.com": "delivered", "bo@example.com": "smtp_450"}

    receipt = send_once(tls, config(smtp), progress=err.target_progress)
    first, second = smtp.wait_for(2)
    assert first.rcpt_tos == ["ana@example.com"]
    assert second.rcpt_tos == ["bo@example.com"]
    assert receipt.target_progress == {"bo@example.com": "delivered"}


def test_every_recipient_refused_for_good_is_target_gone(smtp: FakeSmtp, tls: TlsFiles):
    smtp.script("RCPT ana@example.com", "550 5.1.1 No such user")
    smtp.script("RCPT bo@example.com", "550 5.1.1 No such user")
    err = send_error(tls, config(smtp))
    assert isinstance(err, TargetGone)
    assert err.target_progress == {"ana@example.com": "smtp_550", "bo@example.com": "smtp_550"}


def test_nothing_left_to_send_sends_nothing(smtp: FakeSmtp, tls: TlsFiles):
    done = {"ana@example.com": "delivered", "bo@example.com": "delivered"}
    send_once(tls, config(smtp), progress=done)
    assert smtp.connections == 0


def test_server_without_starttls_gets_nothing_in_the_clear(tls: TlsFiles):
    with FakeSmtp(tls, mode="plain") as server:
        err = send_error(tls, config(server))
        assert isinstance(err, AuthFailed)
        assert "TLS" in err.detail
        assert server.received == []


def test_untrusted_certificate_is_refused(smtp: FakeSmtp, tls: TlsFiles, tmp_path: Path):
    other = make_tls(tmp_path / "other")  # a CA that did not sign the server's certificate

    async def body(p: SmtpProvider) -> None:
        await p.send(MESSAGE, config(smtp), idempotency_key="d-1", previous_ref=None)

    # Permanent and marks the integration failing, as over HTTP/1.1 and HTTP/2 (one policy in providers/_http.py).
    with pytest.raises(InvalidConfig, match="certificate is not trusted") as caught:
        with_provider(other, body)
    assert caught.value.marks_failing
    assert smtp.received == []


def test_loopback_refused_without_allow_list(smtp: FakeSmtp, tls: TlsFiles):
    async def body(p: SmtpProvider) -> None:
        await p.send(MESSAGE, config(smtp), idempotency_key="d-1", previous_ref=None)

    with pytest.raises(EgressDenied):
        with_provider(tls, body, allow=())
    assert smtp.connections == 0


def test_config_validation():
    base = {"host": "smtp.example.com", "from_address": "a@example.com", "to": ["b@example.com"]}
    assert SmtpConfig.model_validate(base).implicit_tls is False
    assert SmtpConfig.model_validate({**base, "port": 465}).implicit_tls is True
    for bad in (
        {**base, "to": ["not-an-address"]},
        {**base, "to": []},
        {**base, "from_address": "a@example.com\r\nBcc: x@evil.example"},
        {**base, "username": "u"},  # a username without a password
        {**base, "host": "smtp.example.com\r\nRCPT"},
        {**base, "to": ["b@example.com", "B@example.com"]},
    ):
        with pytest.raises(ValueError):
            SmtpConfig.model_validate(bad)


def test_preview_has_subject_text_html_and_no_password(smtp: FakeSmtp, tls: TlsFiles):
    cfg = config(smtp)
    preview = with_provider(tls, lambda p: _async(p.preview(MESSAGE, cfg)))
    assert preview["subject"] == "[ERROR] checkout 1.4.2 released to prod"
    assert "<table" in preview["html"] and "Version" in preview["text"]
    assert PASSWORD not in str(preview)


async def _async(value: T) -> T:
    return value


def test_failed_login_leaves_the_event_loop_usable(smtp: FakeSmtp, tls: TlsFiles):
    """A connection that fails after TLS (bad password) must be closed through its transport: closing the raw
    socket would leave its fd registered with the loop and break the next connection that gets that fd."""

    async def body(p: SmtpProvider) -> Receipt:
        with pytest.raises(AuthFailed):
            await p.send(
                MESSAGE, config(smtp, password="wrong-password-123"), idempotency_key="a", previous_ref=None
            )
        await asyncio.sleep(0.1)
        return await p.send(MESSAGE, config(smtp), idempotency_key="b", previous_ref=None)

    receipt = with_provider(tls, body)
    assert receipt.target_progress == {"ana@example.com": "delivered", "bo@example.com": "delivered"}


def test_fifty_concurrent_sends_to_a_slow_relay_all_succeed(smtp: FakeSmtp, tls: TlsFiles):
    """50 sends at once to a relay that takes 0.5 s per message, each within its attempt deadline (20 s) and the
    worker's guard (deadline + 1 s): 4 connections need about 7 s, one lock needed 25 s.

    Repro before the fix: one connection per integration behind one asyncio.Lock serialised the sends (50 x 0.5
    s = 25 s), so the sends queued last outlived the worker's allowance and died as internal errors although the
    relay was healthy."""
    smtp.data_delay_s = 0.5
    timeout_s = 20.0

    async def body(p: SmtpProvider) -> list[Receipt]:
        async def one(i: int) -> Receipt:
            deadline = time.monotonic() + timeout_s
            return await asyncio.wait_for(
                p.send(
                    MESSAGE,
                    config(smtp, timeout_s=timeout_s),
                    idempotency_key=f"d-{i}",
                    previous_ref=None,
                    deadline=deadline,
                ),
                timeout_s + 1.0,
            )

        receipts = await asyncio.gather(*(one(i) for i in range(50)))
        assert p.open_connections <= 4  # HERALD_SMTP_CONNECTIONS_PER_RELAY's default
        await p.aclose()
        assert p.open_connections == 0
        return receipts

    receipts = with_provider(tls, body)
    assert all(
        r.target_progress == {"ana@example.com": "delivered", "bo@example.com": "delivered"} for r in receipts
    )
    assert len(smtp.wait_for(50)) == 50
    assert 1 < smtp.peak_in_data <= 4  # side by side, and bounded


def test_waiting_for_a_busy_relay_counts_against_the_deadline(smtp: FakeSmtp, tls: TlsFiles):
    """One connection allowed, held by a slow send: a second send whose deadline passes while it waits is a
    TransportTimeout (retryable, not a failure of the relay) and never reaches the server."""
    smtp.data_delay_s = 1.5

    async def run() -> tuple[Receipt, BaseException | Receipt]:
        http = HttpClient.create(allow_cidrs=("127.0.0.1/32",))
        provider = SmtpProvider(http, tls_ca_file=tls.ca_file, connections_per_relay=1)
        try:
            first = asyncio.ensure_future(
                provider.send(MESSAGE, config(smtp), idempotency_key="d-1", previous_ref=None)
            )
            await _until(lambda: smtp._in_data == 1)
            second = await asyncio.gather(
                provider.send(
                    MESSAGE,
                    config(smtp),
                    idempotency_key="d-2",
                    previous_ref=None,
                    deadline=time.monotonic() + 0.3,
                ),
                return_exceptions=True,
            )
            return await first, second[0]
        finally:
            await provider.aclose()
            await http.close()

    first, second = asyncio.run(run())
    assert first.target_progress == {"ana@example.com": "delivered", "bo@example.com": "delivered"}
    assert isinstance(second, TransportTimeout) and "no free connection" in second.detail
    assert len(smtp.wait_for(1)) == 1


def test_cancelled_send_closes_its_connection(smtp: FakeSmtp, tls: TlsFiles):
    """A send cancelled mid-DATA (the worker gave up on it) must not leave its half-used connection in the pool:
    the next send would read the previous message's late 250 as its own answer."""
    smtp.data_delay_s = 2.0

    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=("127.0.0.1/32",))
        provider = SmtpProvider(http, tls_ca_file=tls.ca_file)
        try:
            task = asyncio.ensure_future(
                provider.send(MESSAGE, config(smtp), idempotency_key="d-1", previous_ref=None)
            )
            await _until(lambda: smtp._in_data == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert provider.open_connections == 0
            smtp.data_delay_s = 0.0
            return await provider.send(MESSAGE, config(smtp), idempotency_key="d-2", previous_ref=None)
        finally:
            await provider.aclose()
            await http.close()

    receipt = asyncio.run(run())
    assert receipt.target_progress == {"ana@example.com": "delivered", "bo@example.com": "delivered"}
    assert smtp.connections == 2  # the cancelled one was not reused


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# transport mechanisms over SMTP: the same policy as HTTP (providers/_http.py transport_error)


class _Listener:
    """127.0.0.1 listener: "hangup" closes at once, "silent" accepts and never speaks, "http" answers in clear
    text (an implicit-TLS client's handshake fails)."""

    def __init__(self, mode: str) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._mode = mode
        self._held: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._mode == "silent":
                self._held.append(conn)
                continue
            if self._mode == "http":
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


def _mechanism_error(tls: TlsFiles, **overrides: Any) -> DeliveryError:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "from_address": "h@example.com",
        "to": ["a@example.com"],
        "timeout_s": 1,
        **overrides,
    }

    async def body(p: SmtpProvider) -> None:
        await p.send(MESSAGE, SmtpConfig.model_validate(values), idempotency_key="d-1", previous_ref=None)

    with pytest.raises(DeliveryError) as caught:
        with_provider(tls, body)
    return caught.value


@pytest.mark.parametrize(
    ("mode", "security", "error", "detail"),
    [
        ("hangup", "starttls", ProviderUnavailable, "connection lost"),
        ("silent", "starttls", TransportTimeout, "timed out"),
        ("http", "tls", ProviderUnavailable, ""),
    ],
)
def test_transport_mechanisms(tls: TlsFiles, mode: str, security: str, error: type, detail: str):
    listener = _Listener(mode)
    try:
        err = _mechanism_error(tls, port=listener.port, security=security)
    finally:
        listener.close()
    assert type(err) is error, err
    assert detail in err.detail


def test_refused_and_unknown_names_are_retryable(tls: TlsFiles):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = _mechanism_error(tls, port=port)
    assert type(refused) is ProviderUnavailable and refused.detail.startswith("connection failed")
    unknown = _mechanism_error(tls, host="herald-test.invalid", port=port)
    assert type(unknown) is ProviderUnavailable and unknown.detail.startswith("connection failed")


def test_lifecycle_states_are_one_thread(smtp: FakeSmtp, tls: TlsFiles):
    """Issue 11: a lifecycle's next state replies to the mail shown before it (In-Reply-To) and its References
    holds the whole chain back to the root (RFC 5322: the parent's References, then the parent's Message-ID);
    the receipt keeps that chain plus its own Message-ID as the reference for the next state. A reference that
    is not one of ours (header injection) is ignored. Before: References named only the previous mail, so the
    third mail of a thread had References = <second> and lost the root."""
    cfg = config(smtp)

    def send(key: str, previous_ref: str | None) -> Receipt:
        async def body(p: SmtpProvider) -> Receipt:
            return await p.send(MESSAGE, cfg, idempotency_key=key, previous_ref=previous_ref)

        return with_provider(tls, body)

    before = len(smtp.received)
    root = send("d-root", None)
    second = send("d-next", root.provider_ref)
    third = send("d-third", second.provider_ref)
    send("d-bad", "<x@y>\r\nBcc: evil@example.com")
    m1, m2, m3, bad = (r.message for r in smtp.wait_for(before + 4)[before:])
    ids = [str(m["Message-ID"]) for m in (m1, m2, m3)]
    assert len(set(ids)) == 3 and m1["In-Reply-To"] is None and m1["References"] is None
    assert (m2["In-Reply-To"], m2["References"]) == (ids[0], ids[0])
    assert (m3["In-Reply-To"], str(m3["References"]).split()) == (ids[1], ids[:2])
    assert [root.provider_ref, second.provider_ref, third.provider_ref] == [
        ids[0],
        " ".join(ids[:2]),
        " ".join(ids),
    ]
    assert bad["In-Reply-To"] is None and bad["References"] is None and bad["Bcc"] is None


def test_message_id_is_the_same_on_every_retry_of_a_delivery(smtp: FakeSmtp, tls: TlsFiles):
    """A relay that took the mail but whose answer was lost gets the retry with the same Message-ID (so the
    receiver can drop the duplicate). Before: a random one per attempt (make_msgid)."""
    cfg = config(smtp)

    async def body(p: SmtpProvider) -> Receipt:
        return await p.send(MESSAGE, cfg, idempotency_key="d-retried", previous_ref=None)

    before = len(smtp.received)
    with_provider(tls, body)
    with_provider(tls, body)
    first, again = smtp.wait_for(before + 2)[before:]
    assert first.message["Message-ID"] == again.message["Message-ID"]
