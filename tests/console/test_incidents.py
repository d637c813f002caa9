"""The Incidents page in a real browser: an incident posted through the gateway (create, update, close) is
listed with its state, filters work, and its page shows the current state and the history of every dispatch
with its deliveries; a thing appears under Things."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.fakes.webhook import webhook_receiver
from tests.integration.stack import wait_until
from tests.integration.test_gateway import event_body, make_channel, ok, update_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver():
    with webhook_receiver() as server:
        yield server


def test_an_incident_current_state_and_history(logged_in_page, console, receiver, axe_check, screenshot):
    project = f"inc-{uuid.uuid4().hex[:6]}"
    path = f"/inc/{project}"
    with console.api() as api:
        r = api.post(
            "/v1/integrations",
            json={
                "name": "oncall-hook",
                "provider": "webhook",
                "project": project,
                "config": {"url": receiver.url(path)},
            },
        )
        integration_id = r.json()["data"]["id"]
        assert (
            api.post("/v1/routes", json={"integration_id": integration_id, "project": project}).status_code
            == 201
        )
        channel = make_channel(api, project, password="s3cret-pass")
        creds = {"channel_id": channel["channel_id"], "password": "s3cret-pass"}
        event_id = ok(api.post("/event/create", json=event_body(creds, attrs={"region": "eu-1"})))["event_id"]
        ok(
            api.post(
                "/event/update", json=update_body(creds, event_id, status="mitigating", event_time=1713750100)
            )
        )
        ok(
            api.post(
                "/event/close", json=update_body(creds, event_id, status="resolved", event_time=1713750500)
            )
        )
        thing = ok(
            api.post(
                "/thing/create",
                json={
                    **creds,
                    "title": "backup-job",
                    "attrs": {"health": "healthy"},
                    "observed_at": 1713750000,
                },
            )
        )

        def delivered() -> bool:
            # an update still waiting when the close arrives is superseded (one message, edited in order)
            detail = api.get(f"/v1/incidents/{event_id}").json()["data"]
            states = [d["state"] for x in detail["dispatches"] for d in x["deliveries"]]
            return len(states) == 3 and set(states) <= {"delivered", "superseded"}

        wait_until(delivered, 60, "the incident's dispatches were not all delivered")
    page = logged_in_page("admin")
    page.get_by_role("link", name="Incidents").click()
    page.get_by_label("Project").fill(project)
    page.get_by_label("State").select_option("closed")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"state=closed"))
    rows = page.locator("#lifecycles tbody tr")
    assert rows.count() == 1 and "resolved" in rows.first.inner_text()
    axe_check(page, "incidents")
    screenshot(page, "incidents")
    page.get_by_role("link", name="Database lag").click()
    page.wait_for_url(f"**/console/incidents/incident/{event_id}")
    assert page.locator("#lifecycle-state").inner_text() == "closed"
    state = page.locator("#current-state").inner_text()
    assert "resolved" in state and "high" in state
    assert "eu-1" in page.locator("#attrs").inner_text()
    history = page.locator("#history > li")
    assert history.count() == 3
    assert [history.nth(i).get_attribute("data-sequence") for i in range(3)] == ["1", "2", "3"]
    shown = page.locator("#history .delivery [data-state]")
    assert shown.count() == 3
    assert shown.nth(2).inner_text() == "delivered"  # the close; earlier states may be superseded
    assert {shown.nth(i).inner_text() for i in range(3)} <= {"delivered", "superseded"}
    assert "s3cret-pass" not in page.content()
    axe_check(page, "incident")
    screenshot(page, "incident")
    # an id goes straight to its page; an unknown one is answered in place
    page.goto("/console/incidents")
    page.get_by_label("Incident id").fill(event_id)
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(f"**/console/incidents/incident/{event_id}")
    page.goto("/console/incidents?id=no-such-incident")
    assert "no incident has this id" in page.locator("#e-id").inner_text()
    assert page.get_by_label("Incident id").input_value() == "no-such-incident"
    # things have their own tab
    page.goto(f"/console/incidents?kind=thing&project={project}")
    assert page.locator("#lifecycles tbody tr").count() == 1
    page.get_by_role("link", name="backup-job").click()
    page.wait_for_url(f"**/console/incidents/thing/{thing['thing_id']}")
    assert "active" in page.locator("#lifecycle-state").inner_text()
    assert "healthy" in page.locator("#attrs").inner_text()
    axe_check(page, "thing")
    screenshot(page, "thing")
