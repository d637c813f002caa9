"""Provider name -> its fake for the contract suite (tests/integration/test_provider_contract.py).

The suite runs every registered provider through the same cases and expects the same outcome from each:

    success       -> delivered on attempt 1
    rate_limited  -> 429 + Retry-After (or the vendor's equivalent): attempt 1 `rate_limited`, delivered after the hint
    unavailable   -> 500: attempt 1 `provider_unavailable`, delivered on attempt 2
    invalid       -> 400: dead `invalid_payload` after one attempt
    auth          -> 401/403: dead `auth_failed`, integration marked failing
    gone          -> 404/410: dead `target_gone`, integration marked failing
    timeout       -> no answer within the config's timeout_s: attempt 1 `timeout`, delivered on attempt 2
    refused       -> nothing listening: `provider_unavailable` until the budget is used up

Adding a provider: write a `ContractFake` for it (for an HTTP vendor, an `HttpContract` is enough: a path per
slot, a config pointing at the fake, and the vendor's answer for each failing case) and append ONE `Entry` at
the end of `CATALOG`. A fake that is not HTTP (SMTP) implements the `ContractFake` protocol itself.

Every HTTP fake here (HTTP/1.1 and APNs' HTTP/2) sends each reply body in SPLIT_WRITES writes with pauses, so
the whole matrix also proves bodies are read whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tests.fakes import apns as apns_fake
from tests.fakes import discord as discord_fake
from tests.fakes import fcm as fcm_fake
from tests.fakes import pagerduty as pagerduty_fake
from tests.fakes import ses as ses_fake
from tests.fakes import slack as slack_fake
from tests.fakes import smtp as smtp_fake
from tests.fakes import teams as teams_fake
from tests.fakes.server import FakeServer, Reply
from tests.fakes.webhook import retry_after, webhook_receiver

Case = Literal["success", "rate_limited", "unavailable", "invalid", "auth", "gone", "timeout", "refused"]
CASES: tuple[Case, ...] = (
    "success",
    "rate_limited",
    "unavailable",
    "invalid",
    "auth",
    "gone",
    "timeout",
    "refused",
)
#: the Retry-After every HTTP entry's rate_limited answer carries
RETRY_AFTER_S = 1
#: how long a `timeout` answer is held back, well past any contract config's timeout_s
SLOW_ANSWER_S = 8.0
#: every HTTP fake of the contract suite sends each reply body in this many writes (tests/fakes/server.py): a
#: client that keeps only the first chunk loses the message reference or retries a success
SPLIT_WRITES = 2


class ContractFake(Protocol):
    """One running fake shared by all cases; each case gets its own `slot` so they can run at once."""

    #: the rate-limit hint the `rate_limited` case carries (seconds), or None if the vendor sends none
    retry_after_s: float | None

    def config(self, slot: str, *, timeout_s: float, port: int | None = None) -> dict[str, Any]:
        """An integration config whose sends land in `slot`; `port` overrides the fake's (a closed port)."""

    def script(self, slot: str, case: Case) -> None:
        """Make the NEXT send to `slot` answer the way this vendor says `case`; later sends succeed."""

    def received(self, slot: str) -> list[float]:
        """Arrival times (time.time()) of the sends that reached `slot`."""

    def stop(self) -> None: ...


@dataclass
class HttpContract:
    """A ContractFake for an HTTP vendor whose fake is a `FakeServer`."""

    server: FakeServer
    #: slot -> the request path a send to that slot arrives on
    path: Callable[[str], str]
    #: (slot, base URL "http://127.0.0.1:<port>", timeout_s) -> integration config
    config_for: Callable[[str, str, float], dict[str, Any]]
    #: the vendor's answer for each failing case (timeout and refused need none)
    replies: Mapping[Case, Reply]
    retry_after_s: float | None = RETRY_AFTER_S

    def __post_init__(self) -> None:
        self.server.split_writes = SPLIT_WRITES

    def config(self, slot: str, *, timeout_s: float, port: int | None = None) -> dict[str, Any]:
        return self.config_for(slot, f"http://127.0.0.1:{port or self.server.port}", timeout_s)

    def script(self, slot: str, case: Case) -> None:
        if case == "timeout":
            self.server.script(self.path(slot), Reply(200, b"", delay_s=SLOW_ANSWER_S))
        elif case in self.replies:
            self.server.script(self.path(slot), self.replies[case])

    def received(self, slot: str) -> list[float]:
        return [r.arrived_at for r in self.server.requests(self.path(slot))]

    def stop(self) -> None:
        self.server.stop()


@dataclass(frozen=True)
class Entry:
    provider: str  # the registry name
    start: Callable[[], ContractFake]


def _webhook() -> ContractFake:
    server = webhook_receiver().start()
    return HttpContract(
        server,
        path=lambda slot: f"/contract/{slot}",
        config_for=lambda slot, base, timeout_s: {"url": f"{base}/contract/{slot}", "timeout_s": timeout_s},
        replies={
            "rate_limited": retry_after(RETRY_AFTER_S),
            "unavailable": Reply(500, b'{"error":"boom"}', content_type="application/json"),
            "invalid": Reply(400, b'{"error":"bad field"}', content_type="application/json"),
            "auth": Reply(401, b"unauthorized"),
            "gone": Reply(410, b"gone"),
        },
    )


def _slack() -> ContractFake:
    server = slack_fake.SlackFake().start()
    return HttpContract(
        server,
        path=server.webhook_path,
        config_for=lambda slot, base, timeout_s: {
            "webhook_url": base + server.webhook_path(slot),
            "timeout_s": timeout_s,
        },
        replies={
            "rate_limited": slack_fake.rate_limited(RETRY_AFTER_S),
            "unavailable": slack_fake.server_error(),
            "invalid": slack_fake.webhook_error("invalid_payload", 400),
            "auth": slack_fake.webhook_error("action_prohibited", 403),
            "gone": slack_fake.webhook_error("channel_is_archived", 410),
        },
    )


def _slack_bot() -> ContractFake:
    server = slack_fake.SlackFake().start()
    return HttpContract(
        server,
        path=lambda slot: f"/{slot}/api/chat.postMessage",
        config_for=lambda slot, base, timeout_s: {
            "token": server.token,
            "channel": slack_fake.CHANNEL_ID,
            "api_base_url": f"{base}/{slot}/api",
            "timeout_s": timeout_s,
        },
        replies={
            "rate_limited": slack_fake.rate_limited(RETRY_AFTER_S, api=True),
            "unavailable": slack_fake.server_error(),
            # The Web API answers HTTP 200 with ok=false for all of these
            "invalid": slack_fake.api_error("invalid_blocks"),
            "auth": slack_fake.api_error("token_revoked"),
            "gone": slack_fake.api_error("is_archived"),
        },
    )


def _discord() -> ContractFake:
    server = discord_fake.DiscordFake().start()
    return HttpContract(
        server,
        path=server.webhook_path,
        config_for=lambda slot, base, timeout_s: {
            "webhook_url": base + server.webhook_path(slot),
            "timeout_s": timeout_s,
        },
        replies={
            "rate_limited": discord_fake.rate_limited(float(RETRY_AFTER_S)),
            "unavailable": discord_fake.error(502, 0, "502 Bad Gateway"),
            "invalid": discord_fake.error(400, 50035, "Invalid Form Body"),
            "auth": discord_fake.error(401, 50027, "Invalid Webhook Token"),
            "gone": discord_fake.unknown_webhook(),
        },
    )


def _teams() -> ContractFake:
    server = teams_fake.TeamsFake().start()
    return HttpContract(
        server,
        path=server.workflows_path,
        config_for=lambda slot, base, timeout_s: {
            "webhook_url": base + server.workflows_target(slot),
            "flavor": "workflows",
            "timeout_s": timeout_s,
        },
        replies={
            "rate_limited": teams_fake.workflows_error(
                429, "WorkflowRequestsThrottled", {"Retry-After": str(RETRY_AFTER_S)}
            ),
            "unavailable": teams_fake.workflows_error(500, "ServiceUnavailable"),
            "invalid": teams_fake.workflows_error(400, "InvalidTemplate"),
            "auth": teams_fake.workflows_error(401, "DirectApiAuthorizationRequired"),
            "gone": teams_fake.workflows_error(404, "WorkflowNotFound"),
        },
    )


def _pagerduty() -> ContractFake:
    server = pagerduty_fake.PagerDutyFake().start()
    return HttpContract(
        server,
        path=server.enqueue_path,
        config_for=lambda slot, base, timeout_s: {
            "routing_key": "R0UT1NGKEY0000000000000000000001",
            "events_url": base + server.enqueue_path(slot),
            "timeout_s": timeout_s,
        },
        replies={
            "rate_limited": pagerduty_fake.rate_limited(RETRY_AFTER_S),
            "unavailable": Reply(500, b"Internal Server Error"),
            "invalid": pagerduty_fake.invalid("'payload.summary' is missing or longer than 1024 characters"),
            # The Events API says a wrong key with 400 naming routing_key (it has no 401)
            "auth": pagerduty_fake.invalid("Invalid routing_key: no integration with this key"),
            "gone": Reply(404, b'{"status":"not found"}', content_type="application/json"),
        },
    )


# One entry per registered provider; append yours at the end.
CATALOG: list[Entry] = [
    Entry("webhook", _webhook),
    Entry("slack", _slack),
    Entry("slack_bot", _slack_bot),
    Entry("discord", _discord),
    Entry("teams", _teams),
    Entry("pagerduty", _pagerduty),
    Entry("smtp", smtp_fake.contract),
    Entry("ses", ses_fake.contract),
    Entry("apns", apns_fake.contract),
    Entry("fcm", fcm_fake.contract),
]


def entries() -> dict[str, Entry]:
    return {entry.provider: entry for entry in CATALOG}
