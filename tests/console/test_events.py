"""The Events page and an event's delivery timeline in a real browser: search by project and by lifecycle key,
the timeline shows every attempt (a 503 retried, then delivered: status, duration, error class, redacted
excerpt), an event no route matches says why, and bad search input is answered in place."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.fakes.server import Reply
from tests.fakes.webhook import webhook_receiver
from tests.integration.stack import create_webhook, post_release, wait_for_deliveries

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver():
    with webhook_receiver() as server:
        yield server


def test_search_and_the_delivery_timeline(logged_in_page, console, receiver, axe_check, screenshot):
    project = f"ev-{uuid.uuid4().hex[:6]}"
    path = f"/ev/{project}"
    # the vendor fails once (retryable, echoing our Authorization header's secret), then accepts
    secret = "tok-" + uuid.uuid4().hex
    receiver.script(path, Reply(503, b'{"error":"busy","echo":"Bearer ' + secret.encode() + b'"}'))
    with console.api() as api:
        create_webhook(
            api, receiver.url(path), project=project, headers={"Authorization": f"Bearer {secret}"}
        )
        event_id = post_release(api, project, version="7.1.0")
        [d] = wait_for_deliveries(api, event_id)
        wait_for_deliveries(api, post_release(api, project, version="7.2.0"))
        assert d["state"] == "delivered" and len(d["attempts"]) == 2
    page = logged_in_page("admin")
    page.get_by_role("link", name="Events", exact=True).click()
    page.get_by_label("Project").fill(project)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(rf"project={project}"))
    rows = page.locator("#events tbody tr")
    assert rows.count() == 2
    assert "1 delivered" in rows.first.inner_text()
    axe_check(page, "events")
    screenshot(page, "events")
    # a lifecycle key finds exactly that release
    page.get_by_role("searchbox", name="Search").fill(f"release:{project}:7.1.0")
    page.get_by_label("Project").fill("")
    page.get_by_role("button", name="Search").click()
    assert page.locator("#events tbody tr").count() == 1
    page.get_by_role("link", name="release.created").click()
    page.wait_for_url(f"**/console/events/{event_id}")
    attempts = page.locator(".delivery tr.attempt")
    assert attempts.count() == 2
    first, second = attempts.nth(0).inner_text(), attempts.nth(1).inner_text()
    assert "503" in first and "provider_unavailable" in first and " ms" in first and "busy" in first
    assert "200" in second and "delivered" in second
    assert secret not in page.content()  # the excerpt is redacted
    assert page.locator(".delivery [data-state]").inner_text() == "delivered"
    axe_check(page, "event-timeline")
    screenshot(page, "event-timeline")


def test_an_event_without_deliveries_says_why(logged_in_page, console):
    project = f"nr-{uuid.uuid4().hex[:6]}"
    with console.api() as api:
        event_id = post_release(api, project)
        wait_for_deliveries(api, event_id, count=0)
    page = logged_in_page("read")
    page.goto(f"/console/events/{event_id}")
    why = page.locator("#no-deliveries").inner_text()
    assert "no route" in why or "not fanned out" in why


def test_bad_search_input_is_answered_in_place(logged_in_page, console):
    page = logged_in_page("admin")
    page.goto("/console/events?since=2026-03-01T00:00&until=2026-02-01T00:00&project=keep-me")
    assert "since: must be before until" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Project").input_value() == "keep-me"
    page.goto("/console/events/not-an-id")
    assert "No event has this id" in page.get_by_role("alert").inner_text()
