"""A real SMTP server for tests (aiosmtpd), with a generated TLS certificate, AUTH and scripted replies.

Also home of the tests' TLS material: a throwaway CA and a leaf certificate for 127.0.0.1/localhost, written
to a directory, shared with the APNs fake. Nothing here is a real credential.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import email
import email.policy
import functools
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USERNAME = "herald-test"
#: a scripted reply that holds the answer back this long, then accepts (a server that stops answering)
SLOW = "SLOW"
SLOW_ANSWER_S = 8.0
PASSWORD = "smtp-pass-" + "0f3c9a7e21"  # generated for tests, never a real one


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str
    cert_file: str
    key_file: str

    def server_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx


def make_tls(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost, valid for a day."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_file=str(directory / "ca.pem"),
        cert_file=str(directory / "server.pem"),
        key_file=str(directory / "server.key"),
    )
    Path(files.ca_file).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(files.cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(files.key_file).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer_port: int  # the client's source port: equal for messages sent over one connection
    tls: bool
    authenticated: bool

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        content: str = body.get_content()
        return content


@dataclass
class _Handler:
    server: FakeSmtp

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ):
        session.host_name = hostname
        self.server._remember(server)
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ):
        login = _login(session)
        self.server._arrived(login)
        scripted = self.server._next("MAIL", login)
        if scripted == SLOW:
            await asyncio.sleep(SLOW_ANSWER_S)
        elif scripted:
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ):
        scripted = self.server._next(f"RCPT {address.lower()}", _login(session))
        if scripted:
            return scripted
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        scripted = self.server._next("DATA", _login(session))
        if scripted:
            return scripted
        if self.server.data_delay_s:
            with self.server._lock:
                self.server._in_data += 1
                self.server.peak_in_data = max(self.server.peak_in_data, self.server._in_data)
            try:
                await asyncio.sleep(self.server.data_delay_s)
            finally:
                with self.server._lock:
                    self.server._in_data -= 1
        self.server._record(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                raw=envelope.original_content or envelope.content,
                peer_port=session.peer[1],
                tls=session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 2.0.0 Message accepted for delivery"


def _login(session: Any) -> str:
    data = getattr(session, "auth_data", None)
    login = getattr(data, "login", b"") or b""
    return login.decode() if isinstance(login, bytes) else str(login)


@dataclass
class FakeSmtp:
    """`mode`: "starttls" (STARTTLS required before AUTH/MAIL), "tls" (implicit TLS), "plain" (no TLS offered)."""

    tls: TlsFiles
    mode: str = "starttls"
    username: str = USERNAME
    password: str = PASSWORD
    port: int = 0
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    #: any username is accepted with the right password (the contract suite gives each case its own login)
    any_login: bool = False
    #: logins whose AUTH fails with 535
    auth_fail: set[str] = field(default_factory=set)
    #: every accepted message is held this long before its 250 (a slow relay); sessions still run side by side
    data_delay_s: float = 0.0
    #: most messages in DATA at once so far (how many sends a client ran side by side)
    peak_in_data: int = 0
    _in_data: int = 0
    _auth_failed_sessions: set[int] = field(default_factory=set)
    #: login -> arrival times of each transaction (MAIL) or failed AUTH
    arrivals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _scripts: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    _protocols: list[Any] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _controller: Controller | None = None

    def start(self) -> FakeSmtp:
        self.port = free_port()
        kwargs: dict[str, Any] = {
            "hostname": "127.0.0.1",
            "port": self.port,
            "authenticator": self._authenticate,
            "auth_required": True,
            # implicit TLS is TLS from the start, but aiosmtpd only counts STARTTLS as "TLS" for AUTH
            "auth_require_tls": self.mode == "starttls",
        }
        if self.mode == "starttls":
            kwargs |= {"tls_context": self.tls.server_context(), "require_starttls": True}
        elif self.mode == "tls":
            kwargs["ssl_context"] = self.tls.server_context()
        self._controller = Controller(_Handler(self), **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def __enter__(self) -> FakeSmtp:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # scripting
    def script(self, stage: str, *replies: str, login: str = "") -> None:
        """Replies for the next commands at `stage`: "MAIL", "DATA" or "RCPT <address>" (for `login` only,
        if given). SLOW holds the answer back SLOW_ANSWER_S, then accepts."""
        with self._lock:
            self._scripts[f"{login}\0{stage}"].extend(replies)

    def close_connections(self) -> None:
        """Drop every open session from the server side, as a server does with idle connections."""
        assert self._controller is not None and self._controller.loop is not None
        with self._lock:
            protocols, self._protocols = self._protocols, []
        for proto in protocols:
            transport = getattr(proto, "transport", None)
            if transport is not None:
                self._controller.loop.call_soon_threadsafe(transport.close)

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise AssertionError(f"{len(self.received)} of {count} arrived within {timeout_s} s")
            return list(self.received)

    # handler callbacks (server thread)
    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode(errors="replace")
        ok = (self.any_login or login == self.username) and auth_data.password == self.password.encode()
        with self._lock:
            if login in self.auth_fail:
                # Refused for good: clients try each offered mechanism in turn, so fail them all, and count
                # the session once.
                if id(session) not in self._auth_failed_sessions:
                    self._auth_failed_sessions.add(id(session))
                    self.arrivals[login].append(time.time())
                ok = False
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def _next(self, stage: str, login: str = "") -> str | None:
        with self._lock:
            for key in (f"{login}\0{stage}", f"\0{stage}"):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
            return None

    def _arrived(self, login: str) -> None:
        with self._lock:
            self.arrivals[login].append(time.time())

    def _remember(self, protocol: Any) -> None:
        with self._lock:
            if protocol not in self._protocols:
                self._protocols.append(protocol)
                self.connections += 1

    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)
            self._lock.notify_all()


@contextlib.contextmanager
def smtp_server(tls: TlsFiles, mode: str = "starttls"):
    server = FakeSmtp(tls, mode=mode).start()
    try:
        yield server
    finally:
        server.stop()


@functools.cache
def session_tls() -> TlsFiles:
    """One CA and server certificate per test process: the integration stacks' workers trust this CA
    (HERALD_TLS_CA_FILE), so every TLS fake (SMTP, APNs) run against them serves this certificate."""
    directory = Path(tempfile.mkdtemp(prefix="herald-test-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return make_tls(directory)


class SmtpContract:
    """tests/fakes/catalog.py's ContractFake for SMTP: each slot is its own login and recipient."""

    retry_after_s: float | None = None  # SMTP replies carry no retry hint

    def __init__(self) -> None:
        self.server = FakeSmtp(session_tls(), any_login=True).start()

    def config(self, slot: str, *, timeout_s: float, port: int | None = None) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": port or self.server.port,
            "security": "starttls",
            "username": slot,
            "password": PASSWORD,
            "from_address": "Herald <herald@example.com>",
            "to": [f"{slot}@example.com"],
            "timeout_s": timeout_s,
        }

    def script(self, slot: str, case: str) -> None:
        replies = {
            "rate_limited": ("MAIL", "454 4.7.0 Throttling failure: Maximum sending rate exceeded"),
            "unavailable": ("DATA", "451 4.3.0 Local error in processing"),
            "invalid": ("DATA", "554 5.6.0 Message rejected"),
            "gone": (f"RCPT {slot.lower()}@example.com", "550 5.1.1 No such user"),
            "timeout": ("MAIL", SLOW),
        }
        if case == "auth":
            with self.server._lock:
                self.server.auth_fail.add(slot)
        elif case in replies:
            stage, reply = replies[case]
            self.server.script(stage, reply, login=slot)

    def received(self, slot: str) -> list[float]:
        with self.server._lock:
            return list(self.server.arrivals.get(slot, []))

    def stop(self) -> None:
        self.server.stop()


def contract() -> SmtpContract:
    return SmtpContract()
