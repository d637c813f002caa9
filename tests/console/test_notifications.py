"""The Notifications page (seed 003) in a real browser: add a notification for several recipients with
pipeline filters, the API's 422 under the field with what was typed kept, filters, bulk modify events and
recipients, bulk delete, and the dry run rendering each destination's message."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.fakes.webhook import webhook_receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver() -> Iterator:
    with webhook_receiver() as server:
        yield server


@pytest.fixture
def two_hooks(console, receiver) -> list[dict[str, str]]:
    hooks = []
    with console.api() as api:
        for _ in range(2):
            name = f"hook-{uuid.uuid4().hex[:6]}"
            r = api.post(
                "/v1/integrations",
                json={
                    "name": name,
                    "provider": "webhook",
                    "config": {"url": receiver.url(f"/hook/{uuid.uuid4().hex}")},
                },
            )
            assert r.status_code == 201, r.text
            hooks.append({"id": r.json()["data"]["id"], "name": name})
    return hooks


def routes_of(console, integration_id: str) -> list[dict]:
    with console.api() as api:
        data: list[dict] = api.get("/v1/routes", params={"integration_id": integration_id}).json()["data"]
        return data


def add_panel(page):
    return page.locator("section", has=page.get_by_role("heading", name="Add notification"))


def test_add_for_two_recipients_with_pipeline_filters(
    logged_in_page, console, two_hooks, axe_check, screenshot
):
    page = logged_in_page("admin")
    project = f"web-{uuid.uuid4().hex[:6]}"
    page.goto("/console/notifications")
    add = add_panel(page)
    for hook in two_hooks:
        add.get_by_label(hook["name"]).check()
    add.get_by_label("Project").fill(project)
    add.get_by_label("Applications").fill("api, web")
    add.get_by_label("Clusters").fill("eu-1")
    add.get_by_label("All current and future pipelines matching").uncheck()
    add.get_by_label("Pipelines", exact=True).fill("deploy-prod")
    add.get_by_label("Trigger (Pipelines)").check()
    add.get_by_label("Failure (Pipelines)").check()
    add.get_by_role("button", name="Save notification").click()
    assert "Added 2 notifications" in page.locator(".flashes").inner_text()
    for hook in two_hooks:
        [route] = routes_of(console, hook["id"])
        assert route["project"] == project
        assert route["apps"] == ["api", "web"] and route["clusters"] == ["eu-1"]
        assert route["pipelines"] == ["deploy-prod"]
        assert route["event_types"] == ["pipeline.trigger", "pipeline.failure"]
    # the filter bar: by application and pipeline, both rows; another project: none of them
    page.get_by_label("Application", exact=True).fill("api")
    page.locator("#filter-pipeline").fill("deploy-prod")
    page.locator("#filter-project").fill(project)
    page.get_by_role("button", name="Filter").click()
    assert page.locator("#routes tbody tr[data-route]").count() == 2
    axe_check(page, "notifications")
    screenshot(page, "notifications")
    page.locator("#filter-project").fill("another-project")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("#routes tbody tr[data-route]", has_text=project).count() == 0


def test_a_bad_filter_shows_the_apis_message_and_keeps_what_was_typed(logged_in_page, console, two_hooks):
    page = logged_in_page("admin")
    page.goto("/console/notifications")
    add = add_panel(page)
    add.get_by_label(two_hooks[0]["name"]).check()
    add.get_by_label("Project").fill("p" * 101)  # over the schema's 100
    add.get_by_label("Environments").fill("production, staging")
    add.get_by_label("Success (Pipelines)").check()
    add.get_by_role("button", name="Save notification").click()
    add = add_panel(page)
    with console.api() as api:
        r = api.post("/v1/routes", json={"integration_id": two_hooks[0]["id"], "project": "p" * 101})
    assert r.status_code == 422
    assert add.locator("#err-add-project").inner_text() == r.json()["error"].removeprefix("project: ")
    assert add.get_by_label("Environments").input_value() == "production, staging"
    assert add.get_by_label("Success (Pipelines)").is_checked()
    assert add.get_by_label(two_hooks[0]["name"]).is_checked()
    assert routes_of(console, two_hooks[0]["id"]) == []


def test_bulk_modify_events_recipients_and_delete(logged_in_page, console, two_hooks):
    page = logged_in_page("admin")
    project = f"bulk-{uuid.uuid4().hex[:6]}"
    with console.api() as api:
        for hook in two_hooks:
            r = api.post("/v1/routes", json={"integration_id": hook["id"], "project": project})
            assert r.status_code == 201, r.text
    page.goto(f"/console/notifications?project={project}")
    rows = page.locator("#routes tbody tr[data-route]", has_text=project)
    assert rows.count() == 2
    # modify events of both rows at once
    for i in range(2):
        rows.nth(i).get_by_role("checkbox").check()
    events = page.locator("#modify-events")
    events.locator("summary").click()
    events.get_by_label("Promoted (Releases)").check()
    events.get_by_label("Severity").select_option("warning")
    events.get_by_role("button", name="Apply events").click()
    assert "Events changed on 2" in page.locator(".flashes").inner_text()
    for hook in two_hooks:
        [route] = routes_of(console, hook["id"])
        assert (route["event_types"], route["min_severity"]) == (["release.promoted"], "warning")
    # modify recipients of the first hook's row: send it to both hooks
    page.goto(f"/console/notifications?project={project}")
    first = page.locator(
        "#routes tbody tr[data-route]", has=page.get_by_role("link", name=two_hooks[0]["name"])
    )
    first.get_by_role("checkbox").check()
    recipients = page.locator("#modify-recipients")
    recipients.locator("summary").click()
    for hook in two_hooks:
        recipients.get_by_label(hook["name"]).check()
    recipients.get_by_role("button", name="Save recipients").click()
    assert "Recipients changed on 1" in page.locator(".flashes").inner_text()
    assert len(routes_of(console, two_hooks[1]["id"])) == 2  # its own row and the copy, same filters
    assert all(r["event_types"] == ["release.promoted"] for r in routes_of(console, two_hooks[1]["id"]))
    # delete every row of the project at once (the confirm dialog accepted)
    page.goto(f"/console/notifications?project={project}")
    page.get_by_label("Select all rows").check()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete selected").click()
    assert "Deleted 3 notification(s)" in page.locator(".flashes").inner_text()
    assert routes_of(console, two_hooks[0]["id"]) == routes_of(console, two_hooks[1]["id"]) == []


def test_edit_one_notification(logged_in_page, console, two_hooks, axe_check, screenshot):
    page = logged_in_page("admin")
    project = f"edit-{uuid.uuid4().hex[:6]}"
    with console.api() as api:
        route_id = api.post(
            "/v1/routes", json={"integration_id": two_hooks[0]["id"], "project": project}
        ).json()["data"]["id"]
    page.goto(f"/console/notifications?project={project}")
    page.locator(f'tr[data-route="{route_id}"]').get_by_role("link", name="Edit").click()
    page.get_by_label("Environments").fill("production")
    page.get_by_label("Failure (Pipelines)").check()
    axe_check(page, "notification-edit")
    screenshot(page, "notification-edit")
    page.get_by_role("button", name="Save").click()
    assert "Notification saved" in page.locator(".flashes").inner_text()
    [route] = routes_of(console, two_hooks[0]["id"])
    assert (route["environments"], route["event_types"]) == (["production"], ["pipeline.failure"])


def test_dry_run_renders_what_each_destination_would_get(
    logged_in_page, console, two_hooks, axe_check, screenshot
):
    page = logged_in_page("read")  # a read key may run the dry run: nothing is stored or sent
    project = f"dry-{uuid.uuid4().hex[:6]}"
    with console.api() as api:
        api.post("/v1/routes", json={"integration_id": two_hooks[0]["id"], "project": project})
        api.post("/v1/routes", json={"integration_id": two_hooks[1]["id"], "project": "someone-else"})
    page.goto("/console/notifications?sample=pipeline")
    event = page.get_by_label("Sample event (JSON)")
    event.fill(event.input_value().replace('"ios-app"', f'"{project}"'))
    page.get_by_role("button", name="Run dry run").click()
    result = page.locator("#dry-run-result")
    matched = result.locator(f'.explain-route[data-integration="{two_hooks[0]["name"]}"]')
    assert matched.get_attribute("data-matched") == "yes"
    preview = matched.locator("pre.preview").inner_text()
    assert "pipeline.failure" in preview and project in preview
    other = result.locator(f'.explain-route[data-integration="{two_hooks[1]["name"]}"]')
    assert other.get_attribute("data-matched") == "no"
    assert "is not 'someone-else'" in other.inner_text()
    axe_check(page, "notifications-dry-run")
    screenshot(page, "notifications-dry-run")
    # bad JSON: the message, and the text kept
    event = page.get_by_label("Sample event (JSON)")
    event.fill('{"project": ')
    page.get_by_role("button", name="Run dry run").click()
    assert "not valid JSON" in page.locator("#explain-error").inner_text()
    assert page.get_by_label("Sample event (JSON)").input_value() == '{"project": '
