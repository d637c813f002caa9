"""APNs provider against a fake HTTP/2 (TLS, ALPN h2) server that verifies the ES256 JWT and the headers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import jwt
import pytest

from providers._http import HttpClient
from providers.apns import ApnsConfig, ApnsProvider
from providers.apns.payload import MAX_PAYLOAD_BYTES, collapse_id
from providers.base import Receipt
from shared.errors import (
    AuthFailed,
    DeliveryError,
    EgressDenied,
    InvalidPayload,
    ProviderUnavailable,
    RateLimited,
    TargetGone,
)
from tests.fakes.apns import KEY_ID, TEAM_ID, FakeApns, device_token, generated_p8
from tests.fakes.smtp import TlsFiles, make_tls
from tests.providers.test_smtp import MESSAGE

T = TypeVar("T")
P8, PUBLIC_KEY = generated_p8()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("apns-tls"))


@pytest.fixture
def apns(tls: TlsFiles) -> Iterator[FakeApns]:
    with FakeApns(tls, PUBLIC_KEY) as server:
        yield server


def config(server: FakeApns, tokens: list[str], **overrides: Any) -> ApnsConfig:
    values: dict[str, Any] = {
        "team_id": TEAM_ID,
        "key_id": KEY_ID,
        "private_key": P8,
        "topic": server.topic,
        "endpoint_url": server.endpoint_url,
        "device_tokens": tokens,
        "timeout_s": 5,
    }
    values.update(overrides)
    return ApnsConfig.model_validate(values)


def with_provider(
    tls: TlsFiles, body: Callable[[ApnsProvider], Awaitable[T]], allow: tuple[str, ...] = ("127.0.0.1/32",)
) -> T:
    async def run() -> T:
        http = HttpClient.create(allow_cidrs=allow)
        provider = ApnsProvider(http, tls_ca_file=tls.ca_file)
        try:
            return await body(provider)
        finally:
            await provider.aclose()
            await http.close()

    return asyncio.run(run())


def send(tls: TlsFiles, cfg: ApnsConfig, progress: dict[str, str] | None = None, message=MESSAGE) -> Receipt:
    return with_provider(
        tls, lambda p: p.send(message, cfg, idempotency_key="d-1", previous_ref=None, progress=progress)
    )


def send_error(tls: TlsFiles, cfg: ApnsConfig, progress: dict[str, str] | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        send(tls, cfg, progress)
    return info.value


def test_alert_over_http2_with_verified_jwt_and_headers(apns: FakeApns, tls: TlsFiles):
    token = device_token()
    receipt = send(tls, config(apns, [token]))
    [req] = apns.wait_for(1)
    assert req.status == 200 and req.http_version == "2"
    assert req.token == token
    header = jwt.get_unverified_header(req.jwt)
    claims = jwt.decode(req.jwt, PUBLIC_KEY, algorithms=["ES256"])
    assert header["kid"] == KEY_ID and header["alg"] == "ES256"
    assert claims["iss"] == TEAM_ID and isinstance(claims["iat"], int)
    assert req.headers["apns-topic"] == "com.example.app"
    assert req.headers["apns-push-type"] == "alert"
    assert req.headers["apns-priority"] == "10"
    assert req.headers["apns-collapse-id"] == "checkout:prod:1.4.2"
    assert int(req.headers["apns-expiration"]) > 0
    assert req.payload["aps"]["alert"] == {"title": MESSAGE.title, "body": MESSAGE.text}
    assert req.payload["herald"]["link"] == MESSAGE.link
    assert receipt.target_progress == {token: "delivered"}


def test_jwt_is_reused_across_sends(apns: FakeApns, tls: TlsFiles):
    tokens = [device_token(), device_token()]
    cfg = config(apns, tokens)

    async def body(p: ApnsProvider) -> None:
        await p.send(MESSAGE, cfg, idempotency_key="d-1", previous_ref=None)
        await p.send(MESSAGE, cfg, idempotency_key="d-2", previous_ref=None)

    with_provider(tls, body)
    requests = apns.wait_for(4)
    assert len({r.jwt for r in requests}) == 1
    assert len({r.headers["apns-id"] for r in requests}) == 4  # one id per (delivery, token)


def test_expired_provider_token_is_refreshed_in_the_same_attempt(apns: FakeApns, tls: TlsFiles):
    token = device_token()
    apns.expire_next_jwt = True
    receipt = send(tls, config(apns, [token]))
    first, second = apns.wait_for(2)
    assert first.reason == "ExpiredProviderToken"
    assert second.status == 200 and second.jwt != first.jwt
    assert receipt.target_progress == {token: "delivered"}


def test_unregistered_token_removed_others_still_delivered(apns: FakeApns, tls: TlsFiles):
    good, gone = device_token(), device_token()
    apns.unregistered.add(gone)
    receipt = send(tls, config(apns, [good, gone]))
    assert sorted(apns.delivered_to()) == [good]
    assert receipt.removed_targets == (gone,)
    assert receipt.target_progress == {good: "delivered", gone: "apns_Unregistered"}


def test_bad_device_token_keeps_the_token_and_flags_the_integration(apns: FakeApns, tls: TlsFiles):
    """BadDeviceToken is also Apple's answer for a token of the other environment (a sandbox token sent to
    production): removing it would empty a misconfigured integration of every token.

    Repro before the fix: the send returned a Receipt with `removed_targets == (bad,)` and the worker deleted
    the token from the config; nothing told the operator the environment was wrong."""
    good, bad = device_token(), device_token()
    apns.bad_tokens.add(bad)
    err = send_error(tls, config(apns, [good, bad]))
    assert isinstance(err, TargetGone) and err.marks_failing
    assert "check the APNs environment (sandbox vs production)" in err.detail
    assert err.removed_targets == ()
    assert err.target_progress == {good: "delivered", bad: "apns_BadDeviceToken"}
    assert sorted(apns.delivered_to()) == [good]


def test_every_token_gone_is_target_gone(apns: FakeApns, tls: TlsFiles):
    gone = device_token()
    apns.unregistered.add(gone)
    err = send_error(tls, config(apns, [gone]))
    assert isinstance(err, TargetGone)
    assert err.removed_targets == (gone,)
    assert err.status_code == 410


def test_partial_retryable_failure_resends_only_to_the_rest(apns: FakeApns, tls: TlsFiles):
    ok, busy = device_token(), device_token()
    apns.script(busy, (503, "ServiceUnavailable"))
    cfg = config(apns, [ok, busy])
    err = send_error(tls, cfg)
    assert isinstance(err, ProviderUnavailable)
    assert err.target_progress == {ok: "delivered", busy: "apns_ServiceUnavailable"}

    receipt = send(tls, cfg, progress=err.target_progress)
    assert [r.token for r in apns.requests[2:]] == [busy]
    assert receipt.target_progress == {busy: "delivered"}
    assert sorted(apns.delivered_to()) == sorted([ok, busy])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ((429, "TooManyRequests"), RateLimited),
        ((500, "InternalServerError"), ProviderUnavailable),
        ((403, "InvalidProviderToken"), AuthFailed),
        ((400, "DeviceTokenNotForTopic"), InvalidPayload),
        ((413, "PayloadTooLarge"), InvalidPayload),
    ],
)
def test_reasons_are_classified(apns: FakeApns, tls: TlsFiles, reply: tuple[int, str], expected: type):
    token = device_token()
    apns.script(token, reply)
    err = send_error(tls, config(apns, [token]))
    assert type(err) is expected
    assert err.status_code == reply[0]
    assert err.removed_targets == ()


def test_wrong_key_is_auth_failed(apns: FakeApns, tls: TlsFiles):
    other_p8, _ = generated_p8()
    err = send_error(tls, config(apns, [device_token()], private_key=other_p8))
    assert isinstance(err, AuthFailed)
    assert "InvalidProviderToken" in err.detail


def test_long_body_truncated_to_4096_bytes_and_long_key_hashed(apns: FakeApns, tls: TlsFiles):
    token = device_token()
    long_message = dataclasses.replace(MESSAGE, text="é" * 5000, lifecycle_key="k" * 100)
    send(tls, config(apns, [token]), message=long_message)
    [req] = apns.wait_for(1)
    assert req.status == 200
    body = req.payload["aps"]["alert"]["body"]
    assert body.endswith("…") and len(body) > 1000
    assert (
        len(json.dumps(req.payload, ensure_ascii=False, separators=(",", ":")).encode()) <= MAX_PAYLOAD_BYTES
    )
    assert req.headers["apns-collapse-id"] == collapse_id("k" * 100)
    assert len(req.headers["apns-collapse-id"]) == 64


def test_background_push(apns: FakeApns, tls: TlsFiles):
    send(tls, config(apns, [device_token()], push_type="background"))
    [req] = apns.wait_for(1)
    assert req.headers["apns-push-type"] == "background" and req.headers["apns-priority"] == "5"
    assert req.payload["aps"] == {"content-available": 1}


def test_loopback_refused_without_allow_list(apns: FakeApns, tls: TlsFiles):
    cfg = config(apns, [device_token()])
    with pytest.raises(EgressDenied):
        with_provider(tls, lambda p: p.send(MESSAGE, cfg, idempotency_key="d", previous_ref=None), allow=())
    assert apns.requests == []


def test_without_targets_and_validation(apns: FakeApns):
    a, b = device_token(), device_token()
    cfg = config(apns, [a, b])
    reduced = ApnsProvider.without_targets(cfg, [b])
    assert reduced is not None and reduced.device_tokens == [a]
    for bad in ({"device_tokens": ["xyz"]}, {"private_key": "not a key"}, {"team_id": "short"}):
        with pytest.raises(ValueError):
            config(apns, [a], **bad)


def test_preview_is_the_payload_without_the_key(apns: FakeApns, tls: TlsFiles):
    cfg = config(apns, [device_token()])

    async def body(p: ApnsProvider) -> dict[str, Any]:
        return p.preview(MESSAGE, cfg)

    preview = with_provider(tls, body)
    assert preview["payload"]["aps"]["alert"]["title"] == MESSAGE.title
    assert "authorization" not in preview["headers"]
    assert "PRIVATE KEY" not in json.dumps(preview)


def test_error_body_in_several_http2_data_frames_is_read_whole(tls: TlsFiles):
    """The HTTP/2 seam reads every DATA frame of a body (up to the cap): `{"reason": "Unregistered", ...}` sent
    in two frames still removes the token (a cut body would leave only the HTTP status: a plain 410)."""
    gone, good = device_token(), device_token()
    with FakeApns(tls, PUBLIC_KEY, split_writes=2) as server:
        server.unregistered.add(gone)
        receipt = send(tls, config(server, [good, gone]))
    assert receipt.removed_targets == (gone,)
    assert receipt.target_progress == {good: "delivered", gone: "apns_Unregistered"}
