"""The Dead letters page in a real browser: filters and counts by reason, bulk redrive of everything the filter
matches (delivered by the real worker once the vendor is fixed), a large purge run as the API's background job
with its progress on the page, a read key that changes nothing, and bad filter input answered in place."""

from __future__ import annotations

import re
import time
import uuid

import psycopg
import pytest

from bench.console_data import Shape, fill
from tests.console.conftest import ConsoleServer
from tests.fakes.server import FakeServer, Reply
from tests.fakes.webhook import webhook_receiver
from tests.integration.stack import create_webhook, post_release, wait_for_deliveries

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver():
    with webhook_receiver() as server:
        yield server


def _dead(console: ConsoleServer, receiver: FakeServer, project: str, n: int, reply: Reply) -> str:
    path = f"/dlq/{project}"
    receiver.script(path, *([reply] * n))
    with console.api() as api:
        integration_id = create_webhook(api, receiver.url(path), project=project)
        for i in range(n):
            [d] = wait_for_deliveries(api, post_release(api, project, version=f"9.{i}"))
            assert d["state"] == "dead", d
    return integration_id


def test_filter_count_and_redrive_everything_that_matches(
    logged_in_page, console, receiver, axe_check, screenshot
):
    project = f"dl-{uuid.uuid4().hex[:6]}"
    # three dead (400, permanent) to one integration, and one to another that must be left alone
    integration_id = _dead(console, receiver, project, 3, Reply(400, b'{"error":"bad"}'))
    other = _dead(console, receiver, project + "-x", 1, Reply(400, b"no"))
    page = logged_in_page("admin")
    page.get_by_role("link", name="Dead letters").first.click()
    page.get_by_label("Integration").select_option(integration_id)
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"integration="))
    counts = page.locator("#counts-by-reason")
    assert "invalid_payload: 3" in counts.inner_text()
    assert page.locator("#dead-letters tbody tr").count() == 3
    axe_check(page, "dead-letters")
    screenshot(page, "dead-letters")
    # the vendor is fixed: redrive all 3 (page size is irrelevant: it is the filter that is redriven)
    page.goto(f"/console/dead-letters?integration={integration_id}&limit=1")
    assert page.locator("#dead-letters tbody tr").count() == 1
    page.get_by_role("button", name=re.compile(r"Redrive all 3 matching")).click()
    assert "Redrove 3 of 3" in page.locator(".flashes").inner_text()
    receiver.wait_for(f"/dlq/{project}", 6)  # 3 refused, then 3 accepted
    with console.api() as api:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = api.get("/v1/dead-letters", params={"integration_id": integration_id}).json()["data"]
            if left["total"] == 0:
                break
            time.sleep(0.1)
        assert left["total"] == 0
        # the other integration's dead letter is untouched
        assert api.get("/v1/dead-letters", params={"integration_id": other}).json()["data"]["total"] == 1
    page.reload()
    assert "Nothing matches" in page.locator("main").inner_text()


def test_bad_filter_input_is_answered_in_place(logged_in_page, console):
    page = logged_in_page("admin")
    page.goto("/console/dead-letters?since=2026-05-02T10:00&until=2026-05-01T10:00&reason=auth_failed")
    alert = page.get_by_role("alert")
    assert "since: must be before until" in alert.inner_text()
    # what was typed stays in the form
    assert page.get_by_label("Dead since (UTC)").input_value() == "2026-05-02T10:00"
    assert page.get_by_label("Reason").input_value() == "auth_failed"


def test_a_large_purge_runs_in_the_background_with_progress(logged_in_page, console, axe_check, screenshot):
    with console.api() as api:
        integration_id = api.post(
            "/v1/integrations",
            json={"name": "bulk", "provider": "webhook", "config": {"url": "https://example.com/hook"}},
        ).json()["data"]["id"]
    # more dead letters than the API handles inline (dlq_inline_limit = 1000), made in SQL in a second
    dsn = console.stack.env["HERALD_DATABASE_URL"].replace("+psycopg", "")
    with psycopg.connect(dsn, autocommit=True) as conn:
        fill(
            conn,
            [uuid.UUID(integration_id)],
            Shape(events=1500, fanout=1, dead_every=1, incidents=0, things=0),
        )
    page = logged_in_page("admin")
    page.goto(f"/console/dead-letters?integration={integration_id}")
    page.once("dialog", lambda dialog: dialog.accept())  # "Delete all 1500 ... for good?"
    page.get_by_role("button", name=re.compile(r"Purge all 1500 matching")).click()
    page.wait_for_url(re.compile(r"job="))
    progress = page.locator("#job-progress")
    progress.filter(has_text=re.compile(r"Purge: 1500 of 1500 processed \(done\)")).wait_for(timeout=60_000)
    axe_check(page, "dead-letters-job")
    screenshot(page, "dead-letters-job")
    page.get_by_role("link", name="Show the dead letters as they are now").click()
    assert "Nothing matches" in page.locator("main").inner_text()


def test_a_read_key_sees_dead_letters_but_cannot_redrive(logged_in_page, console, receiver):
    project = f"dr-{uuid.uuid4().hex[:6]}"
    integration_id = _dead(console, receiver, project, 1, Reply(400, b"bad"))
    page = logged_in_page("read")
    page.goto(f"/console/dead-letters?integration={integration_id}")
    button = page.get_by_role("button", name=re.compile(r"Redrive all 1 matching"))
    assert button.is_disabled()
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    r = page.request.post(
        "/console/dead-letters/redrive",
        form={"csrf_token": token, "integration": integration_id, "state": "dead"},
        max_redirects=0,
    )
    assert r.status == 403 and "read key" in r.text()
    with console.api() as api:
        assert (
            api.get("/v1/dead-letters", params={"integration_id": integration_id}).json()["data"]["total"]
            == 1
        )


def test_without_javascript_a_redrive_still_works(browser, console, receiver):
    """Progressive enhancement: the filter form and the bulk buttons are plain forms (no confirm, no poller)."""
    from tests.console.conftest import VIEWPORT, sign_in

    project = f"nj-{uuid.uuid4().hex[:6]}"
    integration_id = _dead(console, receiver, project, 2, Reply(400, b"bad"))
    context = browser.new_context(viewport=VIEWPORT, base_url=console.url, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, console.keys["admin"])
        page.wait_for_url("**/console/integrations")
        page.goto("/console/dead-letters")
        page.get_by_label("Integration").select_option(integration_id)
        page.get_by_role("button", name="Apply filters").click()
        page.get_by_role("button", name=re.compile(r"Redrive all 2 matching")).click()
        assert "Redrove 2 of 2" in page.locator(".flashes").inner_text()
    finally:
        context.close()


def test_the_filters_are_reachable_by_keyboard(logged_in_page, console, receiver):
    project = f"kb-{uuid.uuid4().hex[:6]}"
    integration_id = _dead(console, receiver, project, 1, Reply(400, b"bad"))
    page = logged_in_page("admin")
    page.goto("/console/dead-letters")
    page.get_by_label("Integration").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-provider"
    page.get_by_label("Integration").select_option(integration_id)  # a select is operated by its own keys
    page.get_by_label("State").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # "Apply filters"
    page.wait_for_url(re.compile(r"integration="))
    assert page.locator("#dead-letters tbody tr").count() == 1
