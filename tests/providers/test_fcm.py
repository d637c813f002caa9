"""FCM HTTP v1 provider against a fake with its own OAuth token endpoint verifying the RS256 assertion."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from providers._http import HttpClient
from providers.base import Receipt
from providers.fcm import FcmConfig, FcmProvider
from providers.fcm._oauth import SCOPE
from shared.errors import (
    AuthFailed,
    DeliveryError,
    InvalidPayload,
    ProviderUnavailable,
    RateLimited,
    TargetGone,
)
from tests.fakes.fcm import TOKEN_PATH, FakeFcm, fcm_error, registration_token
from tests.providers.test_smtp import MESSAGE

T = TypeVar("T")


@pytest.fixture
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm() as server:
        yield server


def config(server: FakeFcm, tokens: list[str], **overrides: Any) -> FcmConfig:
    values: dict[str, Any] = {
        "service_account": server.service_account() if server.public_key is None else overrides.pop("sa"),
        "device_tokens": tokens,
        "api_base_url": server.api_base_url,
        "timeout_s": 5,
    }
    values.update(overrides)
    return FcmConfig.model_validate(values)


def with_provider(body: Callable[[FcmProvider], Awaitable[T]]) -> T:
    async def run() -> T:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await body(FcmProvider(http))
        finally:
            await http.close()

    return asyncio.run(run())


def send(cfg: FcmConfig, progress: dict[str, str] | None = None) -> Receipt:
    return with_provider(
        lambda p: p.send(MESSAGE, cfg, idempotency_key="d-1", previous_ref=None, progress=progress)
    )


def send_error(cfg: FcmConfig, progress: dict[str, str] | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        send(cfg, progress)
    return info.value


def test_oauth_grant_then_send_to_tokens_and_topic(fcm: FakeFcm):
    a, b = registration_token(), registration_token()
    receipt = send(config(fcm, [a, b], topics=["/topics/releases"]))
    assert sorted(fcm.delivered_to()) == sorted([a, b, "topic:releases"])
    [claims] = fcm.assertions  # one token fetched, shared by the three sends
    assert claims["scope"] == SCOPE and claims["aud"] == fcm.token_uri
    assert claims["exp"] - claims["iat"] == 3600
    message = next(m for m in fcm.delivered if m.get("token") == a)
    assert message["notification"] == {"title": MESSAGE.title, "body": MESSAGE.text}
    assert message["data"]["link"] == MESSAGE.link
    assert message["android"]["collapse_key"] == "checkout:prod:1.4.2"
    assert receipt.target_progress == {a: "delivered", b: "delivered", "topic:releases": "delivered"}


def test_access_token_cached_across_sends(fcm: FakeFcm):
    cfg = config(fcm, [registration_token()])

    async def body(p: FcmProvider) -> None:
        for key in ("d-1", "d-2", "d-3"):
            await p.send(MESSAGE, cfg, idempotency_key=key, previous_ref=None)

    with_provider(body)
    assert len(fcm.delivered) == 3
    assert len(fcm.assertions) == 1
    assert len(fcm.requests(TOKEN_PATH)) == 1


def test_401_refreshes_the_token_once_within_the_attempt(fcm: FakeFcm):
    token = registration_token()
    cfg = config(fcm, [token])

    async def body(p: FcmProvider) -> Receipt:
        await p.send(MESSAGE, cfg, idempotency_key="d-1", previous_ref=None)
        fcm.revoke_access_tokens()  # the cached token dies early
        return await p.send(MESSAGE, cfg, idempotency_key="d-2", previous_ref=None)

    receipt = with_provider(body)
    assert receipt.target_progress == {token: "delivered"}
    assert len(fcm.assertions) == 2
    assert len(fcm.delivered) == 2


def test_unregistered_token_removed_others_delivered(fcm: FakeFcm):
    good, gone = registration_token(), registration_token()
    fcm.unregistered.add(gone)
    receipt = send(config(fcm, [good, gone]))
    assert fcm.delivered_to() == [good]
    assert receipt.removed_targets == (gone,)
    assert receipt.target_progress == {good: "delivered", gone: "fcm_UNREGISTERED"}


def test_every_token_unregistered_is_target_gone(fcm: FakeFcm):
    gone = registration_token()
    fcm.unregistered.add(gone)
    err = send_error(config(fcm, [gone]))
    assert isinstance(err, TargetGone) and err.removed_targets == (gone,)


def test_partial_quota_failure_resends_only_to_the_rest(fcm: FakeFcm):
    ok, slow = registration_token(), registration_token()
    reply = fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
    reply.headers["Retry-After"] = "30"
    fcm.script_target(slow, reply)
    cfg = config(fcm, [ok, slow])
    err = send_error(cfg)
    assert isinstance(err, RateLimited) and err.retry_after_s == 30
    assert err.target_progress == {ok: "delivered", slow: "fcm_QUOTA_EXCEEDED"}

    receipt = send(cfg, progress=err.target_progress)
    assert fcm.delivered_to() == [ok, slow]  # ok only once
    assert receipt.target_progress == {slow: "delivered"}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"), ProviderUnavailable),
        (fcm_error(500, "INTERNAL", "INTERNAL"), ProviderUnavailable),
        (fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), InvalidPayload),
        (fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), InvalidPayload),
        (fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"), AuthFailed),
    ],
)
def test_error_codes_are_classified(fcm: FakeFcm, reply, expected: type):
    token = registration_token()
    fcm.script_target(token, reply, reply)  # a 401 is refreshed once: script it twice
    err = send_error(config(fcm, [token]))
    assert type(err) is expected
    assert err.removed_targets == ()


def test_wrong_key_is_auth_failed_before_any_send(fcm: FakeFcm):
    cfg = config(fcm, [registration_token()])
    other = FakeFcm()  # a second key pair, never registered with this fake
    sa = {**cfg.service_account.model_dump(), "private_key": other.service_account()["private_key"]}
    err = send_error(config(fcm, [registration_token()], sa=sa))
    assert isinstance(err, AuthFailed) and "invalid_grant" in err.detail
    assert fcm.delivered == []
    assert "PRIVATE KEY" not in f"{err} {err.response_excerpt}"


def test_long_topic_message_fits_2048_bytes(fcm: FakeFcm):
    cfg = config(fcm, [], topics=["releases"])
    long_message = dataclasses.replace(MESSAGE, text="x" * 5000)
    with_provider(lambda p: p.send(long_message, cfg, idempotency_key="d", previous_ref=None))
    [message] = fcm.delivered
    assert message["notification"]["body"].endswith("…")
    compact = json.dumps({"message": message}, separators=(",", ":"), ensure_ascii=False)
    assert len(compact.encode()) <= 2048


def test_validation_and_without_targets(fcm: FakeFcm):
    a, b = registration_token(), registration_token()
    cfg = config(fcm, [a, b])
    reduced = FcmProvider.without_targets(cfg, [a])
    assert reduced is not None and reduced.device_tokens == [b]
    sa = cfg.service_account.model_dump()
    sa["private_key"] = cfg.service_account.private_key.get_secret_value()
    for bad in ({"device_tokens": ["short"]}, {"topics": ["bad topic"]}, {"api_base_url": "ftp://x"}):
        with pytest.raises(ValueError):
            config(fcm, [a], sa=sa, **bad)


def test_preview_has_no_key(fcm: FakeFcm):
    cfg = config(fcm, [registration_token()])

    async def body(p: FcmProvider) -> dict[str, Any]:
        return p.preview(MESSAGE, cfg)

    preview = with_provider(body)
    assert preview["request"]["message"]["notification"]["title"] == MESSAGE.title
    assert "PRIVATE KEY" not in json.dumps(preview)
