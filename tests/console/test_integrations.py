"""The Integrations page in a real browser against the real API, worker and fake vendors: the form generated
from a provider's schema (422 under the field, typed values kept, secrets not), masked secrets, the Enabled
toggle, the Test button's result on the row, and a read key's disabled buttons."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.console.conftest import sign_in
from tests.fakes.slack import SlackFake, webhook_error
from tests.fakes.webhook import webhook_receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver() -> Iterator:
    with webhook_receiver() as server:
        yield server


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackFake]:
    with SlackFake() as fake:
        yield fake


def add_webhook(page, name: str, url: str, *, header: str | None = None) -> None:
    page.goto("/console/integrations")
    page.get_by_role("link", name="Add Custom webhook").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("URL", exact=True).fill(url)
    if header is not None:
        page.get_by_label("Headers", exact=True).fill(header)
    page.get_by_role("button", name="Save").click()


def test_integrations_page_lists_a_tile_per_provider(logged_in_page, axe_check, screenshot):
    page = logged_in_page("admin")
    for label in ("Slack", "Discord", "Custom webhook", "PagerDuty", "Email (SMTP)", "Microsoft Teams"):
        assert page.locator(".tile h3", has_text=label).first.is_visible()
    # Slack and Discord connect through OAuth (configured against the fake vendor here)
    assert page.get_by_role("button", name="Continue to Slack").is_visible()
    assert page.get_by_role("button", name="Continue to Discord").is_visible()


def test_a_bad_config_shows_the_apis_field_message_and_keeps_what_was_typed(
    logged_in_page, console, axe_check, screenshot
):
    page = logged_in_page("admin")
    page.goto("/console/integrations/new/webhook")
    page.get_by_label("Name", exact=True).fill("QA team webhook")
    page.get_by_label("URL", exact=True).fill("ftp://example.com/hook")
    page.get_by_label("Signing secret", exact=True).fill("whsec-typed-secret-value")
    page.get_by_label("Timeout (seconds)").fill("7")
    page.get_by_role("button", name="Save").click()
    url_error = page.locator("#err-url")
    # the JSON API's 422 for the same body names the same field with the same message
    with console.api() as api:
        r = api.post(
            "/v1/integrations",
            json={
                "name": "QA team webhook",
                "provider": "webhook",
                "config": {"url": "ftp://example.com/hook"},
            },
        )
    assert r.status_code == 422
    api_message = r.json()["error"]
    assert api_message.startswith("config.url: ")
    assert url_error.inner_text() == api_message.removeprefix("config.url: ")
    assert page.get_by_label("URL", exact=True).get_attribute("aria-invalid") == "true"
    # what was typed is kept, except secrets
    assert page.get_by_label("Name", exact=True).input_value() == "QA team webhook"
    assert page.get_by_label("Timeout (seconds)").input_value() == "7"
    assert page.get_by_label("Signing secret", exact=True).input_value() == ""
    assert "whsec-typed-secret-value" not in page.content()
    axe_check(page, "integration-form-error")
    screenshot(page, "integration-form-error")


def test_saved_secrets_are_masked_and_an_empty_secret_keeps_the_stored_one(logged_in_page, console, receiver):
    page = logged_in_page("admin")
    name = f"hook-{uuid.uuid4().hex[:6]}"
    secret_path = f"/hook/{uuid.uuid4().hex}"
    add_webhook(page, name, receiver.url(secret_path), header='{"Authorization": "Bearer tok-s3cret-header"}')
    page.wait_for_url(re.compile(r"/console/integrations/[0-9a-f-]{36}$"))
    assert f"Saved {name}" in page.locator(".flashes").inner_text()
    content = page.content()
    assert secret_path not in content and "tok-s3cret-header" not in content
    assert page.get_by_label("URL", exact=True).input_value() == ""
    assert "********" in (page.get_by_label("URL", exact=True).get_attribute("placeholder") or "")
    # re-save with the secret left empty: the stored URL is kept (the API's merge rule)
    page.get_by_label("Name", exact=True).fill(name + "-renamed")
    page.get_by_role("button", name="Save").click()
    assert "Saved" in page.locator(".flashes").inner_text()
    integration_id = page.url.rsplit("/", 1)[-1]
    with console.api() as api:
        data = api.get(f"/v1/integrations/{integration_id}").json()["data"]
        assert data["name"] == name + "-renamed"
        r = api.post(f"/v1/integrations/{integration_id}/test")
        assert r.status_code == 202
    receiver.wait_for(secret_path, 1)


def test_enabled_toggle_and_test_button_show_on_the_row(
    logged_in_page, console, slack, axe_check, screenshot
):
    page = logged_in_page("admin")
    page.goto("/console/integrations/new/slack")
    name = f"#ops-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Webhook URL").fill(slack.webhook_url("TOGGLE1"))
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"/console/integrations/[0-9a-f-]{36}$"))
    page.goto("/console/integrations")
    row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
    row.get_by_role("button", name=f"Test {name}").click()
    # the result (JS polls the delivery) appears on the row
    result = row.locator(".row-result")
    result.filter(has_text="Delivered").wait_for()
    assert "HTTP 200" in result.inner_text()
    slack.wait_for(slack.webhook_path("TOGGLE1"), 1)
    # the Enabled toggle: disable, the badge says so; enable again
    row.get_by_role("button", name=f"Enabled: {name}").click()
    row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
    assert row.locator(".status").inner_text().strip().startswith("Disabled")
    assert row.get_by_role("button", name=f"Enabled: {name}").get_attribute("aria-pressed") == "false"
    axe_check(page, "integrations")
    screenshot(page, "integrations")
    row.get_by_role("button", name=f"Enabled: {name}").click()
    row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
    assert "Enabled" in row.locator(".status").inner_text()


def test_the_test_button_works_without_javascript(browser, console, slack):
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, base_url=console.url, java_script_enabled=False
    )
    try:
        page = context.new_page()
        sign_in(page, console.admin_key)
        page.goto("/console/integrations/new/slack")
        name = f"#nojs-{uuid.uuid4().hex[:6]}"
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Webhook URL").fill(slack.webhook_url("NOJS1"))
        page.get_by_role("button", name="Save").click()
        page.goto("/console/integrations")
        row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
        row.get_by_role("button", name=f"Test {name}").click()
        page.wait_for_url(re.compile(r"tested="))
        for _ in range(100):
            row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
            if "Delivered" in row.locator(".row-result").inner_text():
                break
            page.wait_for_timeout(100)  # a user's pause before pressing Reload, not an assertion
            row.get_by_role("link", name="Reload").click()
            page.wait_for_load_state()
        assert "Delivered" in row.locator(".row-result").inner_text()
    finally:
        context.close()


def test_a_read_key_sees_integrations_with_every_write_disabled(logged_in_page, console, screenshot):
    page = logged_in_page("read")
    assert page.get_by_role("button", name="Continue to Slack").is_disabled()
    tests = page.get_by_role("button", name=re.compile(r"^Test "))
    if tests.count():
        assert tests.first.is_disabled()
    # a write forged with the page's own CSRF token is still refused: a 403 page, nothing changed
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    with console.api() as api:
        r = api.post(
            "/v1/integrations",
            json={"name": "ro-target", "provider": "webhook", "config": {"url": "https://example.com/h"}},
        )
        integration_id = r.json()["data"]["id"]
    response = page.request.post(
        f"/console/integrations/{integration_id}/enabled",
        form={"csrf_token": token, "enabled": "false"},
        max_redirects=0,
    )
    assert response.status == 403
    assert "read key" in response.text()
    # a script's fetch (the Test button's) gets the API's envelope with a machine-readable code
    fetched = page.request.post(
        f"/console/integrations/{integration_id}/test",
        headers={"Accept": "application/json", "X-CSRF-Token": token},
    )
    assert fetched.status == 403
    assert fetched.json()["error_code"] == "read_only"
    with console.api() as api:
        assert api.get(f"/v1/integrations/{integration_id}").json()["data"]["enabled"] is True
    page.goto(f"/console/integrations/{integration_id}")
    assert page.get_by_role("button", name="Save").is_disabled()
    screenshot(page, "integration-read-only")


def test_a_vendor_error_shows_on_the_row_and_the_badge_says_failing_with_the_reason(
    logged_in_page, console, slack
):
    page = logged_in_page("admin")
    name = f"#gone-{uuid.uuid4().hex[:6]}"
    with console.api() as api:
        r = api.post(
            "/v1/integrations",
            json={"name": name, "provider": "slack", "config": {"webhook_url": slack.webhook_url("GONE1")}},
        )
        assert r.status_code == 201, r.text
    # the webhook was revoked: Slack answers 404 `no_service` (TargetGone: dead at once, integration failing)
    slack.script(slack.webhook_path("GONE1"), webhook_error("no_service", 404))
    before = int(page.locator("[data-health=failing_integrations]").inner_text())
    page.reload()
    row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
    row.get_by_role("button", name=f"Test {name}").click()
    result = row.locator(".row-result")
    result.filter(has_text="Failed").wait_for()
    assert "no_service" in result.inner_text()  # the vendor's own error
    page.reload()
    row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
    status = row.locator(".status").inner_text()
    assert status.startswith("Failing") and "no_service" in status
    assert int(page.locator("[data-health=failing_integrations]").inner_text()) == before + 1
    # the header's figure is the /metrics gauge's (one helper behind both)
    metrics = httpx.get(f"{console.url}/metrics", timeout=10).text
    [gauge] = [line for line in metrics.splitlines() if line.startswith("herald_integrations_failing ")]
    assert float(gauge.split()[1]) == before + 1


def test_recent_deliveries_are_paged_on_the_server(logged_in_page, console, slack):
    page = logged_in_page("admin")
    name = f"#paged-{uuid.uuid4().hex[:6]}"
    with console.api() as api:
        r = api.post(
            "/v1/integrations",
            json={"name": name, "provider": "slack", "config": {"webhook_url": slack.webhook_url("PAGED")}},
        )
        integration_id = r.json()["data"]["id"]
        for _ in range(21):
            assert api.post(f"/v1/integrations/{integration_id}/test").status_code == 202
    page.goto(f"/console/integrations/{integration_id}")
    assert page.locator("li.delivery").count() == 20
    page.get_by_role("link", name="Older deliveries").click()
    assert page.locator("li.delivery").count() == 1
    assert page.get_by_role("link", name="Older deliveries").count() == 0


def test_names_are_shown_as_text_never_as_markup(logged_in_page, console):
    name = f'<img src=x class="injected-{uuid.uuid4().hex[:6]}">'
    with console.api() as api:
        r = api.post(
            "/v1/integrations",
            json={"name": name, "provider": "webhook", "config": {"url": "https://example.com/hook"}},
        )
        assert r.status_code == 201, r.text
    page = logged_in_page("admin")
    assert page.get_by_role("link", name=name, exact=True).is_visible()
    assert page.locator("img[src=x]").count() == 0
