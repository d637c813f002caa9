"""The Channels page in a real browser: create (generated password shown once, copy button), the password works
on the gateway and is not on any later page, bad input gets the API's field message with the typed values
kept (never the password), rotate (old password refused, new one accepted), delete, and a read key."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.console.conftest import ConsoleServer

pytestmark = pytest.mark.integration


def _message(console: ConsoleServer, channel_id: str, password: str) -> int:
    r = httpx.post(
        f"{console.url}/message",
        json={"channel_id": channel_id, "password": password, "title": "hello"},
        timeout=10,
    )
    return r.status_code if r.status_code != 200 else (200 if r.json()["success"] else 401)


def test_create_copy_rotate_delete(logged_in_page, console, axe_check, screenshot):
    project = f"ch-{uuid.uuid4().hex[:6]}"
    page = logged_in_page("admin")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    page.get_by_role("link", name="Channels").click()
    axe_check(page, "channels")
    page.get_by_label("Name").fill("ci-bot")
    page.get_by_label("Project", exact=True).fill(project)
    page.get_by_role("button", name="Create channel").click()
    channel_id = page.locator("#channel-id").inner_text()
    password = page.locator("#channel-password").inner_text()
    assert len(password) >= 8
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == password
    axe_check(page, "channel-created")
    screenshot(page, "channel-created")
    assert _message(console, channel_id, password) == 200
    # shown once: the list does not carry it
    page.goto("/console/channels")
    assert password not in page.content() and channel_id in page.content()
    screenshot(page, "channels")
    # rotate: a new password, the old one refused
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Rotate the password of ci-bot").click()
    new_password = page.locator("#channel-password").inner_text()
    assert new_password != password
    assert _message(console, channel_id, password) != 200
    assert _message(console, channel_id, new_password) == 200
    # delete
    page.goto("/console/channels")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete ci-bot").click()
    assert f"Deleted channel {channel_id}" in page.locator(".flashes").inner_text()
    assert _message(console, channel_id, new_password) != 200


def test_bad_input_shows_the_api_message_and_keeps_what_was_typed(logged_in_page, console):
    page = logged_in_page("admin")
    page.goto("/console/channels")
    page.get_by_label("Name").fill("keep-name")
    page.get_by_label("Project", exact=True).fill("keep-project")
    page.get_by_label("Channel id (optional)").fill("bad id!")
    page.get_by_label("Password (optional)").fill("s3cret-typed-password")
    page.get_by_role("button", name="Create channel").click()
    field = page.get_by_label("Channel id (optional)")
    assert field.get_attribute("aria-invalid") == "true"
    assert "String should match pattern" in page.locator("#c-channel_id-error").inner_text()
    # the same message as the JSON API's 422
    with console.api() as api:
        r = api.post("/v1/channels", json={"name": "x", "project": "y", "channel_id": "bad id!"})
    assert r.status_code == 422 and r.json()["error"] in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Name").input_value() == "keep-name"
    assert page.get_by_label("Project", exact=True).input_value() == "keep-project"
    assert field.input_value() == "bad id!"
    assert page.get_by_label("Password (optional)").input_value() == ""
    assert "s3cret-typed-password" not in page.content()


def test_a_read_key_changes_nothing(logged_in_page, console):
    project = f"chr-{uuid.uuid4().hex[:6]}"
    with console.api() as api:
        r = api.post("/v1/channels", json={"name": "ro", "project": project})
        channel_id, password = r.json()["data"]["channel_id"], r.json()["data"]["password"]
    page = logged_in_page("read")
    page.goto("/console/channels")
    assert page.get_by_role("button", name="Rotate the password of ro").first.is_disabled()
    assert page.get_by_role("button", name="Create channel").is_disabled()
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    r = page.request.post(
        f"/console/channels/{channel_id}/rotate", form={"csrf_token": token}, max_redirects=0
    )
    assert r.status == 403
    assert _message(console, channel_id, password) == 200
