"""The API keys page in a real browser: create (shown once, copy button; the key works), bad input answered
with the API's message and the typed values kept, rotate (old refused, new works, same scopes), revoke, and
a read key that changes nothing."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.console.conftest import ConsoleServer

pytestmark = pytest.mark.integration


def _status(console: ConsoleServer, key: str) -> int:
    return httpx.get(
        f"{console.url}/v1/keys", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).status_code


def test_create_rotate_revoke(logged_in_page, console, axe_check, screenshot):
    name = f"ci-{uuid.uuid4().hex[:6]}"
    page = logged_in_page("admin")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    page.get_by_role("link", name="API keys").click()
    axe_check(page, "keys")
    page.get_by_label("Name").fill(name)
    page.get_by_role("checkbox", name="read").check()
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#api-key").inner_text()
    assert key.startswith("hk_")
    page.get_by_role("button", name="Copy").click()
    status = page.locator("#api-key-status")
    status.filter(has_text=re.compile(".")).wait_for()  # whatever it says, so a refusal shows in the failure
    assert status.inner_text() == "Copied to the clipboard."
    assert page.evaluate("navigator.clipboard.readText()") == key
    axe_check(page, "key-created")
    screenshot(page, "key-created")
    assert _status(console, key) == 200
    page.goto("/console/keys")
    assert key not in page.content() and key[:10] in page.content()
    screenshot(page, "keys")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name=f"Rotate {name}").click()
    rotated = page.locator("#api-key").inner_text()
    assert rotated != key
    assert _status(console, rotated) == 200
    assert _status(console, key) == 401
    with console.api() as api:
        keys = [k for k in api.get("/v1/keys").json()["data"] if k["name"] == name]
    assert [k["scopes"] for k in keys] == [["read"]]
    page.goto("/console/keys")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name=f"Revoke {name}").click()
    assert f"Revoked the key {name}" in page.locator(".flashes").inner_text()
    assert _status(console, rotated) == 401


def test_bad_input_shows_the_api_message_and_keeps_what_was_typed(logged_in_page, console):
    page = logged_in_page("admin")
    page.goto("/console/keys")
    page.get_by_label("Name").fill("bound-admin")
    page.get_by_role("checkbox", name="admin").check()
    page.get_by_label("Project (ingest keys only, optional)").fill("web")
    page.get_by_role("button", name="Create key").click()
    alert = page.get_by_role("alert").inner_text()
    assert "project binding is for ingest-only keys" in alert
    with console.api() as api:
        r = api.post("/v1/keys", json={"name": "bound-admin", "scopes": ["admin"], "project": "web"})
    assert r.status_code == 422 and r.json()["error"] in alert
    assert page.get_by_label("Name").input_value() == "bound-admin"
    assert page.get_by_role("checkbox", name="admin").is_checked()
    assert page.get_by_label("Project (ingest keys only, optional)").input_value() == "web"
    # no scope at all: the field-level message sits under the scopes
    page.get_by_role("checkbox", name="admin").uncheck()
    page.get_by_label("Project (ingest keys only, optional)").fill("")
    page.get_by_role("button", name="Create key").click()
    assert re.search(r"Field required|at least 1", page.locator("#k-scopes-error").inner_text())


def test_a_read_key_changes_nothing(logged_in_page, console):
    page = logged_in_page("read")
    page.goto("/console/keys")
    assert page.get_by_role("button", name="Create key").is_disabled()
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    r = page.request.post(
        "/console/keys", form={"csrf_token": token, "name": "x", "scopes": "admin"}, max_redirects=0
    )
    assert r.status == 403
    with console.api() as api:
        assert not [k for k in api.get("/v1/keys").json()["data"] if k["name"] == "x"]
