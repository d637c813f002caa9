"""Browser tests of the console: the real API over HTTP (uvicorn in a thread, on a free port) on a Stack (its
own database, Redis db, celery worker, sweeper and beat), fake Slack/Discord OAuth, and Debian's Chromium
driven by Playwright's sync API. One browser per session, one stack and server per module.

Fixtures: `console` (the running server: url, stack, keys, the OAuth fake), `page` (a fresh 1280x800 browser
context), `logged_in_page(role)` ("admin" or "read"), `axe_check(page, name)` (fails on a serious or
critical axe-core violation) and `screenshot(page, name)` (tests/artifacts/console/<name>.png).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.app import create_app
from tests.conftest import admin_exec, sqlalchemy_url
from tests.fakes import oauth
from tests.integration.conftest import claimed_redis_db
from tests.integration.stack import ADMIN_KEY, Stack, free_port, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
# axe-core impacts that fail a page (minor and moderate ones are reported in the failure message only).
FAILING_IMPACTS = ("serious", "critical")


@dataclass
class ConsoleServer:
    url: str
    stack: Stack
    oauth: oauth.OAuthFake
    admin_key: str = ADMIN_KEY
    read_key: str = ""
    keys: dict[str, str] = field(default_factory=dict)

    def api(self) -> httpx.Client:
        """A JSON API client of this server, with the admin key (for set-up and for checking what a page did)."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=10
        )


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test process keeps its own signal handling
        pass


@pytest.fixture(scope="module")
def console(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with oauth.OAuthFake() as vendor, claimed_redis_db() as redis_db:
        stack = Stack(sqlalchemy_url(name), redis_db, tmp_path_factory.mktemp("console"))
        server: _ThreadServer | None = None
        thread: threading.Thread | None = None
        try:
            stack.start_worker()
            stack.start_beat()
            settings = stack.settings(
                public_base_url=base_url,
                slack_client_id=oauth.CLIENT_ID,
                slack_client_secret=oauth.CLIENT_SECRET,
                slack_authorize_url=vendor.url(oauth.SLACK_AUTHORIZE_PATH),
                slack_token_url=vendor.url(oauth.SLACK_TOKEN_PATH),
                discord_client_id=oauth.CLIENT_ID,
                discord_client_secret=oauth.CLIENT_SECRET,
                discord_authorize_url=vendor.url(oauth.DISCORD_AUTHORIZE_PATH),
                discord_token_url=vendor.url(oauth.DISCORD_TOKEN_PATH),
                # the health header reads fresh figures on every page in tests
                metrics_state_ttl_s=0,
            )
            config = uvicorn.Config(
                create_app(settings), host="127.0.0.1", port=port, log_level="info", lifespan="on"
            )
            server = _ThreadServer(config)
            thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
            thread.start()
            wait_until(lambda: server is not None and server.started, 30, "the console server never started")
            running = ConsoleServer(base_url, stack, vendor)
            with running.api() as api:
                for role in ("read", "ingest"):
                    r = api.post("/v1/keys", json={"name": f"console-{role}", "scopes": [role]})
                    assert r.status_code == 201, r.text
                    running.keys[role] = r.json()["data"]["key"]
            running.keys["admin"] = ADMIN_KEY
            running.read_key = running.keys["read"]
            yield running
        finally:
            if server is not None:
                server.should_exit = True
            if thread is not None:
                thread.join(15)
            stack.close()
            admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Per module, not per session: Playwright's sync API keeps an asyncio loop running in this thread while it is
# open, and with the suite spread over pytest-xdist workers, a later non-console test in the same worker that
# calls asyncio.run() would fail ("cannot be called from a running event loop"). Chromium starts in about 1 s.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the console tests need Debian's chromium "
            "(scripts/ensure-services.sh installs it; `apt-get install -y chromium`)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, console: ConsoleServer) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT, base_url=console.url)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def sign_in(tab: Any, key: str) -> None:
    tab.goto("/console/login")
    tab.get_by_label("API key").fill(key)
    tab.get_by_role("button", name="Sign in").click()


@pytest.fixture
def logged_in_page(page: Any, console: ConsoleServer) -> Callable[[str], Any]:
    """`logged_in_page("admin")` or `("read")`: the page, signed in with that key, on the Integrations page."""

    def login(role: str = "admin") -> Any:
        sign_in(page, console.keys[role])
        page.wait_for_url("**/console/integrations")
        return page

    return login


@pytest.fixture(scope="session")
def axe_check() -> Callable[..., None]:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()

    def check(tab: Any, name: str = "") -> None:
        results = axe.run(tab)
        violations = results.response["violations"]
        failing = [v for v in violations if v.get("impact") in FAILING_IMPACTS]
        if failing:
            lines = [
                f"{v['impact']}: {v['id']} ({v['help']}): "
                + "; ".join(n["target"][0] if n["target"] else "?" for n in v["nodes"][:5])
                for v in failing
            ]
            pytest.fail(f"axe-core on {name or tab.url}:\n" + "\n".join(lines), pytrace=False)

    return check


@pytest.fixture(scope="session")
def screenshot() -> Callable[[Any, str], Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shoot(tab: Any, name: str) -> Path:
        tab.set_viewport_size(VIEWPORT)
        tab.evaluate("window.scrollTo(0, 0)")  # the page as it opens, not where the test last clicked
        path = ARTIFACTS / f"{name}.png"
        tab.screenshot(path=str(path))
        return path

    return shoot
