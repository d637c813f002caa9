"""providers/_http.py: status codes and Retry-After into the error taxonomy."""

from __future__ import annotations

import errno
import socket
import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest

from providers._egress import EgressRefused, MalformedUrl, NameNotFound
from providers._http import (
    EgressPolicy,
    HttpResponse,
    Mechanism,
    classify_status,
    excerpt,
    os_error_mechanism,
    parse_retry_after,
    transport_error,
)
from shared import errors


def response(status: int, body: bytes = b"", **headers: str) -> HttpResponse:
    return HttpResponse(status, {k.lower().replace("_", "-"): v for k, v in headers.items()}, body)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status):
    classify_status("webhook", response(status))


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (301, errors.InvalidPayload),
        (302, errors.InvalidPayload),
        (400, errors.InvalidPayload),
        (413, errors.InvalidPayload),
        (422, errors.InvalidPayload),
        (401, errors.AuthFailed),
        (403, errors.AuthFailed),
        (404, errors.TargetGone),
        (410, errors.TargetGone),
        (408, errors.ProviderUnavailable),
        (425, errors.ProviderUnavailable),
        (429, errors.RateLimited),
        (500, errors.ProviderUnavailable),
        (502, errors.ProviderUnavailable),
        (503, errors.ProviderUnavailable),
        (418, errors.InvalidPayload),
    ],
)
def test_status_classes(status, error):
    with pytest.raises(error) as caught:
        classify_status("webhook", response(status, b"why"))
    assert caught.value.status_code == status
    assert caught.value.response_excerpt == "why"
    assert caught.value.retryable == issubclass(error, errors.RetryableError)


def test_429_and_503_carry_retry_after():
    with pytest.raises(errors.RateLimited) as caught:
        classify_status("webhook", response(429, retry_after="7"))
    assert caught.value.retry_after_s == 7
    with pytest.raises(errors.RateLimited) as caught:
        classify_status("webhook", response(503, retry_after="3"))
    assert caught.value.retry_after_s == 3


def test_retry_after_forms():
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after("1.5", now=now) == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5", now=now) == 0


def test_excerpt_redacts_secrets_and_caps_length():
    text = excerpt(b"echo: token=abcd1234secret " + b"x" * 2000, secrets=["abcd1234secret"])
    assert "abcd1234secret" not in text and "[redacted]" in text
    assert len(text) == 500


def test_egress_policy_refuses_private_unless_allowed():
    import ipaddress

    policy = EgressPolicy()
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fd00::1", "0.0.0.0"):
        assert not policy.permits(ipaddress.ip_address(address)), address
    assert policy.permits(ipaddress.ip_address("93.184.216.34"))
    allowed = EgressPolicy(["127.0.0.1/32"])
    assert allowed.permits(ipaddress.ip_address("127.0.0.1"))
    assert not allowed.permits(ipaddress.ip_address("127.0.0.2"))


# transport mechanisms -> the one policy (providers/_http.py)


@pytest.mark.parametrize(
    ("mechanism", "error", "retryable"),
    [
        (Mechanism.CONNECT_REFUSED, errors.ProviderUnavailable, True),
        (Mechanism.CONNECTION_RESET, errors.ProviderUnavailable, True),
        (Mechanism.DNS_NOT_FOUND, errors.ProviderUnavailable, True),
        (Mechanism.DNS_FAILURE, errors.ProviderUnavailable, True),
        (Mechanism.TLS_HANDSHAKE, errors.ProviderUnavailable, True),
        (Mechanism.TIMEOUT, errors.TransportTimeout, True),
        (Mechanism.TLS_UNTRUSTED, errors.InvalidConfig, False),
        (Mechanism.MALFORMED_URL, errors.InvalidConfig, False),
        (Mechanism.EGRESS_DENIED, errors.EgressDenied, False),
    ],
)
def test_one_policy_per_mechanism(mechanism, error, retryable):
    err = transport_error("webhook", mechanism, "the cause")
    assert type(err) is error and err.retryable is retryable
    assert err.detail.endswith(": the cause")
    # permanent transport failures are configuration problems: they mark the integration failing
    assert err.marks_failing is (not retryable)


def _cert_error() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "self-signed certificate"
    return exc


@pytest.mark.parametrize(
    ("exc", "mechanism"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Mechanism.CONNECT_REFUSED),
        (OSError(errno.EHOSTUNREACH, "No route to host"), Mechanism.CONNECT_REFUSED),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), Mechanism.CONNECTION_RESET),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), Mechanism.CONNECTION_RESET),
        (aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"), Mechanism.CONNECTION_RESET),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Mechanism.DNS_NOT_FOUND),
        (NameNotFound(socket.EAI_NONAME, "x.invalid: no address"), Mechanism.DNS_NOT_FOUND),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), Mechanism.DNS_FAILURE),
        (_cert_error(), Mechanism.TLS_UNTRUSTED),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), Mechanism.TLS_HANDSHAKE),
        (TimeoutError(), Mechanism.TIMEOUT),
        (MalformedUrl("the URL cannot be parsed"), Mechanism.MALFORMED_URL),
        (EgressRefused("egress_denied", "10.0.0.1 is private"), Mechanism.EGRESS_DENIED),
    ],
)
def test_low_level_mechanisms(exc, mechanism):
    assert os_error_mechanism(exc)[0] is mechanism


def test_mechanism_found_through_the_cause_chain():
    """Libraries wrap the socket error (httpcore2's ConnectError, aiosmtplib's SMTPConnectError): the mechanism is
    read from the cause, so a wrapped untrusted certificate is still TLS_UNTRUSTED."""
    try:
        try:
            raise _cert_error()
        except ssl.SSLError as inner:
            raise RuntimeError("connect failed") from inner
    except RuntimeError as outer:
        assert os_error_mechanism(outer) == (Mechanism.TLS_UNTRUSTED, "self-signed certificate")


def test_dns_detail_names_the_cause():
    mechanism, cause = os_error_mechanism(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert (
        transport_error("webhook", mechanism, cause).detail == "connection failed: Name or service not known"
    )
