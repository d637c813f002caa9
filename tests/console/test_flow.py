"""The issue's flow, clicked end to end: connect Slack through the fake OAuth server, route a project on the
Notifications page, post an event and see it delivered in Recent deliveries; break the fake and watch the
delivery retry and dead-letter; paste fresh credentials and see the dead letters drain."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.discord import DiscordFake
from tests.fakes.slack import SlackFake, server_error
from tests.integration.stack import release_event

pytestmark = pytest.mark.integration
MAX_RELOADS = 150


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackFake]:
    with SlackFake() as fake:
        yield fake


def post_release(console, project: str, version: str) -> str:
    r = httpx.post(
        f"{console.url}/v1/events/release",
        headers={"Authorization": f"Bearer {console.keys['ingest']}"},
        json=release_event(project, version=version),
        timeout=10,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["data"]["event_id"])


def reload_until(page, selector: str) -> None:
    """Reload the page (as a user would) until `selector` is on it."""
    for _ in range(MAX_RELOADS):
        if page.locator(selector).count():
            return
        page.wait_for_timeout(100)  # a user's pause between reloads, not an assertion
        page.reload()
    raise AssertionError(f"{selector} never appeared on {page.url}")


def test_connect_route_deliver_break_dead_letter_fix_and_drain(
    logged_in_page, console, slack, axe_check, screenshot
):
    project = f"ios-{uuid.uuid4().hex[:6]}"
    channel = f"#ios-releases-{uuid.uuid4().hex[:4]}"
    console.oauth.webhook_url, console.oauth.channel = slack.webhook_url("FLOW1"), channel
    page = logged_in_page("admin")

    # 1. connect Slack through OAuth: the fake vendor approves and sends the browser back to the console
    page.locator("#tile-slack").get_by_role("button", name="Continue to Slack").click()
    page.wait_for_url(re.compile(r"/console/integrations\?connected="))
    assert f"Connected Slack: {channel}" in page.locator(".flashes").inner_text()
    row = page.locator("tr", has=page.get_by_role("link", name=channel, exact=True))
    assert "Enabled" in row.locator(".status").inner_text()
    integration_url = row.get_by_role("link", name=channel, exact=True).get_attribute("href")

    # 2. route the project's releases to it on the Notifications page
    page.get_by_role("link", name="Notifications").click()
    add = page.locator("section", has=page.get_by_role("heading", name="Add notification"))
    add.get_by_label(channel).check()
    add.get_by_label("Project").fill(project)
    add.get_by_label("Created (Releases)").check()
    add.get_by_role("button", name="Save notification").click()
    assert "Added 1 notification" in page.locator(".flashes").inner_text()
    assert page.locator("#routes tbody tr", has_text=project).count() == 1

    # 3. an event for the project is delivered, and shows in Recent deliveries with its attempt
    post_release(console, project, "1.0.0")
    page.goto(integration_url)
    reload_until(page, "li.delivery[data-state=delivered]")
    delivered = page.locator("li.delivery[data-state=delivered]").first
    assert "release.created" in delivered.inner_text()
    assert delivered.locator("table.attempts tbody tr").count() == 1
    assert "delivered" in delivered.locator("table.attempts").inner_text()
    slack.wait_for(slack.webhook_path("FLOW1"), 1)

    # 4. break the vendor: every attempt answers 500; the delivery retries, then dead-letters
    slack.script(slack.webhook_path("FLOW1"), *[server_error() for _ in range(6)])
    post_release(console, project, "1.0.1")
    reload_until(page, "li.delivery[data-state=dead]")
    dead = page.locator("li.delivery[data-state=dead]").first
    attempts = dead.locator("table.attempts tbody tr")
    assert attempts.count() == 6  # the first attempt and 5 retries
    assert "provider_unavailable" in dead.locator("table.attempts").inner_text()
    assert "500" in attempts.first.inner_text()
    assert int(page.locator("[data-health=dead_letters]").inner_text()) >= 1
    axe_check(page, "integration")
    screenshot(page, "integration")

    # 5. fix the credentials (a fresh webhook URL) and save: the dead letter drains and is delivered
    page.get_by_label("Webhook URL").fill(slack.webhook_url("FLOW2"))
    page.get_by_role("button", name="Save").click()
    assert "1 dead letter re-queued" in page.locator(".flashes").inner_text()
    reload_until(page, "li.delivery[data-state=delivered] >> nth=1")
    assert page.locator("li.delivery[data-state=dead]").count() == 0
    slack.wait_for(slack.webhook_path("FLOW2"), 1)
    with console.api() as api:
        integration_id = integration_url.rsplit("/", 1)[-1]
        r = api.get("/v1/dead-letters", params={"integration_id": integration_id})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["items"] == []


def test_discord_connect_and_a_cancelled_connect(logged_in_page, console):
    page = logged_in_page("admin")
    project = f"and-{uuid.uuid4().hex[:6]}"
    discord = DiscordFake().start()
    try:
        console.oauth.webhook_url = discord.webhook_url("ANDROID")
    finally:
        discord.stop()  # only the URL's shape matters here: nothing is sent
    token = console.oauth.webhook_url.rsplit("/", 1)[1]
    tile = page.locator("#tile-discord")
    tile.get_by_label("Route releases from project").fill(project)
    tile.get_by_role("button", name="Continue to Discord").click()
    page.wait_for_url(re.compile(r"/console/integrations\?"))
    assert "connected=" in page.url, (page.url, page.locator(".flashes").inner_text())
    assert "Connected Discord" in page.locator(".flashes").inner_text()
    assert token not in page.content()
    integration_id = page.url.split("connected=", 1)[1]
    with console.api() as api:
        [route] = api.get("/v1/routes", params={"integration_id": integration_id}).json()["data"]
        assert route["project"] == project
    # the user presses Cancel at the vendor: back on the console with the reason, nothing stored
    console.oauth.deny = True
    try:
        with console.api() as api:
            count = len(api.get("/v1/integrations").json()["data"])
        page.locator("#tile-slack").get_by_role("button", name="Continue to Slack").click()
        page.wait_for_url(re.compile(r"/console/integrations\?oauth_error=oauth_denied"))
        assert "cancelled at the vendor" in page.locator(".flashes").inner_text()
        with console.api() as api:
            assert len(api.get("/v1/integrations").json()["data"]) == count
    finally:
        console.oauth.deny = False
