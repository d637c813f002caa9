"""OAuth connect for Slack and Discord against fake vendor OAuth servers, end to end: start -> the vendor's
authorize page -> callback -> code exchange -> encrypted integration -> a real delivery to the granted webhook."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.fakes import oauth
from tests.fakes.discord import DiscordFake
from tests.fakes.slack import SlackFake
from tests.integration.stack import AUTH, Stack, post_release, wait_for_deliveries
from tests.integration.test_management import error_of, sql

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vendor() -> Iterator[oauth.OAuthFake]:
    with oauth.OAuthFake() as fake:
        yield fake


@pytest.fixture
def connected(stack: Stack, vendor: oauth.OAuthFake) -> Iterator[TestClient]:
    with stack.client(
        slack_client_id=oauth.CLIENT_ID,
        slack_client_secret=oauth.CLIENT_SECRET,
        slack_authorize_url=vendor.url(oauth.SLACK_AUTHORIZE_PATH),
        slack_token_url=vendor.url(oauth.SLACK_TOKEN_PATH),
        discord_client_id=oauth.CLIENT_ID,
        discord_client_secret=oauth.CLIENT_SECRET,
        discord_authorize_url=vendor.url(oauth.DISCORD_AUTHORIZE_PATH),
        discord_token_url=vendor.url(oauth.DISCORD_TOKEN_PATH),
        public_base_url="http://herald.test",
    ) as client:
        yield client


def authorize(api: TestClient, vendor_name: str, **params: str) -> str:
    """Start, then let the fake vendor approve; return the callback path with its query."""
    r = api.get(f"/v1/oauth/{vendor_name}/start", headers=AUTH, params=params, follow_redirects=False)
    assert r.status_code == 302, r.text
    consent = httpx.get(r.headers["location"], follow_redirects=False)
    assert consent.status_code == 302, consent.text
    back = urlsplit(consent.headers["location"])
    assert f"{back.scheme}://{back.netloc}" == "http://herald.test"
    return f"{back.path}?{back.query}"


def test_slack_connect_stores_an_encrypted_webhook_that_delivers(connected, stack, vendor, project):
    with SlackFake() as slack:
        vendor.webhook_url, vendor.channel = slack.webhook_url(project), "#ios-releases"
        callback = authorize(connected, "slack", project=project)
        r = connected.get(callback)
        assert r.status_code == 201, r.text
        integration = r.json()["data"]
        assert (integration["provider"], integration["name"], integration["project"]) == (
            "slack",
            "#ios-releases",
            project,
        )
        assert (
            integration["config"]["webhook_url"]
            == f"http://127.0.0.1:{urlsplit(vendor.webhook_url).port}/********"
        )
        assert "s3cr3tW3bh00kP4th" not in r.text and "xoxb" not in r.text
        blob = sql(stack, "SELECT config_ciphertext FROM integration WHERE id = :i", i=integration["id"])[0][
            0
        ]
        assert b"s3cr3tW3bh00kP4th" not in bytes(blob)
        # connected with its route, as the seed's "Route releases from" picker does
        [route] = connected.get(
            "/v1/routes", headers=AUTH, params={"integration_id": integration["id"]}
        ).json()["data"]
        assert route["project"] == project

        [delivery] = wait_for_deliveries(connected, post_release(connected, project))
        assert delivery["state"] == "delivered"
        [request] = slack.requests(slack.webhook_path(project))
        assert b"1.4.2" in request.body

        # The state was single-use: replaying the callback is refused before any exchange, nothing is stored.
        before = sql(stack, "SELECT count(*) FROM integration")[0][0]
        assert error_of(connected.get(callback)) == (400, "invalid_state")
        assert sql(stack, "SELECT count(*) FROM integration")[0][0] == before


def test_discord_connect_with_a_name(connected, vendor, project):
    with DiscordFake() as discord:
        vendor.webhook_url = discord.webhook_url(project)
        r = connected.get(authorize(connected, "discord", name="Deploys", project=project))
        assert r.status_code == 201, r.text
        integration = r.json()["data"]
        assert (integration["provider"], integration["name"]) == ("discord", "Deploys")
        _, token = discord.add_webhook(project)
        assert token not in r.text
        [delivery] = wait_for_deliveries(connected, post_release(connected, project))
        assert delivery["state"] == "delivered"


def test_state_is_bound_to_the_vendor_and_expires(connected, stack, vendor, project):
    vendor.webhook_url = "https://hooks.slack.com/services/T1/B1/abc"
    callback = authorize(connected, "slack", project=project)
    state = parse_qs(urlsplit(callback).query)["state"][0]
    assert error_of(connected.get(callback.replace(state, state[:-1] + "x"))) == (400, "invalid_state")
    other_vendor = callback.replace("/slack/", "/discord/")
    assert error_of(connected.get(other_vendor)) == (400, "invalid_state")
    with stack.client(
        slack_client_id=oauth.CLIENT_ID,
        slack_client_secret=oauth.CLIENT_SECRET,
        slack_authorize_url=vendor.url(oauth.SLACK_AUTHORIZE_PATH),
        slack_token_url=vendor.url(oauth.SLACK_TOKEN_PATH),
        oauth_state_ttl_s=0.5,
        public_base_url="http://herald.test",
    ) as short_lived:
        expiring = authorize(short_lived, "slack", project=project)
        time.sleep(1.1)  # past the state's lifetime (not proving an absence)
        assert error_of(short_lived.get(expiring)) == (400, "invalid_state")
    assert error_of(connected.get("/v1/oauth/slack/callback", params={"state": "x", "code": "y"})) == (
        400,
        "invalid_state",
    )


def test_a_replayed_state_is_refused(connected, stack, vendor, project):
    """Repro (issue 10): the signed state could be replayed for 600 s; each replay with a fresh code created
    another integration and route."""
    with SlackFake() as slack:
        vendor.webhook_url = slack.webhook_url(project)
        callback = authorize(connected, "slack", project=project)
        assert connected.get(callback).status_code == 201
        # A second code from the vendor for the same state (the attacker re-ran the consent): still refused.
        consent = httpx.get(
            vendor.url(oauth.SLACK_AUTHORIZE_PATH),
            params={
                "client_id": oauth.CLIENT_ID,
                "scope": "incoming-webhook",
                "redirect_uri": "http://herald.test/v1/oauth/slack/callback",
                "state": parse_qs(urlsplit(callback).query)["state"][0],
            },
            follow_redirects=False,
        )
        back = urlsplit(consent.headers["location"])
        before = sql(stack, "SELECT count(*) FROM integration")[0][0]
        assert error_of(connected.get(f"{back.path}?{back.query}")) == (400, "invalid_state")
        assert sql(stack, "SELECT count(*) FROM integration")[0][0] == before


def test_a_state_from_another_browser_is_refused(connected, stack, vendor, project):
    """Repro (issue 10): the state was not bound to the browser that started the connect, so a callback URL
    sent to a victim (login CSRF) attached the attacker's webhook to the victim's Herald."""
    with SlackFake() as slack:
        vendor.webhook_url = slack.webhook_url(project)
        callback = authorize(connected, "slack", project=project)
        before = sql(stack, "SELECT count(*) FROM integration")[0][0]
        with stack.client(
            slack_client_id=oauth.CLIENT_ID,
            slack_client_secret=oauth.CLIENT_SECRET,
            slack_token_url=vendor.url(oauth.SLACK_TOKEN_PATH),
            public_base_url="http://herald.test",
        ) as other_browser:
            assert error_of(other_browser.get(callback)) == (400, "invalid_state")
        assert sql(stack, "SELECT count(*) FROM integration")[0][0] == before
        # not consumed by the refused attempt: the browser that started it still completes the connect
        assert connected.get(callback).status_code == 201


def test_no_route_unless_the_start_named_a_project(connected, vendor):
    """Repro (issue 10): a connect without a project created a catch-all route: every project's events went
    to the newly connected channel."""
    with SlackFake() as slack:
        vendor.webhook_url = slack.webhook_url("any")
        r = connected.get(authorize(connected, "slack"))
        assert r.status_code == 201, r.text
        integration = r.json()["data"]
        assert integration["project"] is None
        routes = connected.get("/v1/routes", headers=AUTH, params={"integration_id": integration["id"]})
        assert routes.json()["data"] == []


def test_denied_consent_and_configuration_errors(connected, api, vendor):
    vendor.deny = True
    try:
        assert error_of(connected.get(authorize(connected, "discord"))) == (400, "oauth_denied")
    finally:
        vendor.deny = False
    assert error_of(api.get("/v1/oauth/slack/start", headers=AUTH, follow_redirects=False)) == (
        409,
        "oauth_not_configured",
    )
    assert error_of(connected.get("/v1/oauth/slack/start", follow_redirects=False)) == (401, "unauthorized")
    assert error_of(connected.get("/v1/oauth/teams/start", headers=AUTH, follow_redirects=False))[0] == 422


def test_a_webhook_the_provider_refuses_is_not_stored(connected, stack, vendor):
    vendor.webhook_url = "https://discord.com/not/a/webhook"
    before = sql(stack, "SELECT count(*) FROM integration")[0][0]
    r = connected.get(authorize(connected, "discord"))
    assert error_of(r) == (502, "oauth_invalid_webhook")
    assert sql(stack, "SELECT count(*) FROM integration")[0][0] == before
