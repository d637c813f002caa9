"""Console sign-in in a real browser: bad key, read key (sees, cannot change), admin key, CSRF, sign-out."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.console.conftest import sign_in
from tests.integration.stack import ADMIN_KEY

pytestmark = pytest.mark.integration


def test_login_page_is_accessible(page, axe_check, screenshot):
    page.goto("/console/integrations")
    # not signed in: sent to the login form, which brings the user back afterwards
    page.wait_for_url(re.compile(r"/console/login\?next=/console/integrations"))
    axe_check(page, "login")
    screenshot(page, "login")


def test_a_bad_key_gets_a_clear_message_and_no_session(page, console, axe_check, screenshot):
    sign_in(page, "hk_not_a_key_at_all")
    alert = page.get_by_role("alert")
    assert "not a valid API key" in alert.inner_text()
    assert "hk_not_a_key_at_all" not in page.content()
    assert page.get_by_label("API key").input_value() == ""
    assert not [c for c in page.context.cookies() if c["name"] == "herald_console"]
    axe_check(page, "login-error")
    screenshot(page, "login-error")


def test_an_ingest_key_cannot_sign_in(page, console):
    sign_in(page, console.keys["ingest"])
    assert "neither the admin nor the read scope" in page.get_by_role("alert").inner_text()


def test_admin_session_cookie_is_httponly_lax_and_the_key_never_reaches_a_page(logged_in_page, console):
    page = logged_in_page("admin")
    assert ADMIN_KEY not in page.content()
    [cookie] = [c for c in page.context.cookies() if c["name"] == "herald_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert not cookie["secure"]  # public_base_url is http here
    assert ADMIN_KEY not in cookie["value"]
    # the row holds the token's hash only
    engine = create_engine(console.stack.env["HERALD_DATABASE_URL"])
    with engine.connect() as conn:
        hashes = [r[0] for r in conn.execute(text("SELECT token_hash FROM console_session"))]
    engine.dispose()
    assert cookie["value"] not in hashes and len(hashes) >= 1
    assert page.get_by_role("navigation", name="Main").is_visible()
    assert page.locator("[data-health=queue_depth]").is_visible()


def test_read_key_sees_pages_marked_read_only(logged_in_page, console):
    page = logged_in_page("read")
    assert "read-only" in page.locator(".whoami").inner_text()
    page.get_by_role("link", name="Notifications").click()
    assert page.get_by_role("button", name="Save notification").is_disabled()
    assert page.get_by_role("button", name="Delete selected").is_disabled()


def test_a_refused_write_is_an_accessible_error_page(logged_in_page, console, axe_check, screenshot):
    page = logged_in_page("read")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    # a read key's form post, as a browser would send it (the button is disabled on the page itself)
    with page.expect_navigation():
        page.evaluate(
            """token => {
            const f = document.createElement("form");
            f.method = "post"; f.action = "/console/notifications";
            const t = document.createElement("input");
            t.type = "hidden"; t.name = "csrf_token"; t.value = token;
            f.appendChild(t); document.body.appendChild(f); f.submit();
        }""",
            token,
        )
    assert page.get_by_role("heading", name="Read-only key").is_visible()
    assert page.get_by_role("navigation", name="Main").is_visible()
    axe_check(page, "error-read-only")
    screenshot(page, "error-read-only")


def test_a_post_without_the_csrf_token_is_refused(logged_in_page, console):
    page = logged_in_page("admin")
    response = page.request.post("/console/logout", form={}, max_redirects=0)
    assert response.status == 403
    assert "CSRF" in response.text()
    # still signed in
    page.goto("/console/integrations")
    assert page.url.endswith("/console/integrations")


def test_sign_out_deletes_the_session(logged_in_page, console):
    page = logged_in_page("admin")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "herald_console"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    assert "Signed out" in page.locator(".flashes").inner_text()
    # the old cookie, replayed, is worthless now
    r = httpx.get(
        f"{console.url}/console/integrations",
        cookies={"herald_console": cookie["value"]},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")


def test_revoking_the_key_ends_its_console_sessions(page, console):
    with console.api() as api:
        r = api.post("/v1/keys", json={"name": "short-lived", "scopes": ["read"]})
        key, key_id = r.json()["data"]["key"], r.json()["data"]["id"]
        sign_in(page, key)
        page.wait_for_url("**/console/integrations")
        assert api.delete(f"/v1/keys/{key_id}").status_code == 204
    page.goto("/console/integrations")
    page.wait_for_url(re.compile(r"/console/login"))


def test_the_key_never_reaches_a_log(page, console, caplog):
    caplog.set_level(logging.DEBUG)
    # uvicorn's own loggers do not propagate: listen to them directly (the access log names every request)
    uvicorn_loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    for logger in uvicorn_loggers:
        logger.addHandler(caplog.handler)
    try:
        sign_in(page, console.admin_key)
        page.wait_for_url("**/console/integrations")
        sign_in(page, console.admin_key + "-wrong")
        page.get_by_role("alert").wait_for()
    finally:
        for logger in uvicorn_loggers:
            logger.removeHandler(caplog.handler)
    assert any("/console/login" in r.getMessage() for r in caplog.records)  # the sign-ins were logged
    assert console.admin_key not in caplog.text


def test_keyboard_first_stop_is_the_skip_link_and_it_moves_focus_to_the_content(logged_in_page):
    page = logged_in_page("admin")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # the nav is next in tab order after the brand link, each link focusable
    page.keyboard.press("Shift+Tab")
    focusable = page.evaluate("[...document.querySelectorAll('nav a')].every(a => a.tabIndex >= 0)")
    assert focusable


def test_the_cookie_is_secure_when_the_public_url_is_https(console):
    with console.stack.client(public_base_url="https://herald.example") as client:
        r = client.post("/console/login", data={"api_key": console.admin_key}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("herald_console=")
    assert (
        "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    )


def test_an_expired_session_sends_the_user_back_to_sign_in(logged_in_page, console):
    page = logged_in_page("read")
    engine = create_engine(console.stack.env["HERALD_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE console_session SET expires_at = now() - interval '1 second'"))
    engine.dispose()
    page.goto("/console/notifications")
    page.wait_for_url(re.compile(r"/console/login\?next=/console/notifications"))


def test_a_login_form_posted_from_another_site_is_refused(console):
    r = httpx.post(
        f"{console.url}/console/login",
        data={"api_key": console.admin_key},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers
