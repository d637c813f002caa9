"""The browser console under `/console` (issue 14): server-rendered pages (Jinja2) over the same service code as
the JSON API, with our own CSS and JS (progressive enhancement; no CDN, nothing fetched at run time).

Each page lives in its own module with its own `router`; `PAGE_ROUTERS` lists them, one line per router.
`install(app)` mounts the router and the static files and renders console errors as pages (or, for a script's
fetch with `Accept: application/json`, as the API's envelope with an `error_code`).

Writing a page (api/console/integrations.py is the example):
- `user: Viewer` on a GET, `user: Editor` on anything that changes state (admin key + `require_csrf`);
- call the JSON API's own functions (api/routes/*.py) for every rule: no second implementation;
- answer `render(request, user, "page.html", {...})` (templates extend base.html: blocks `title`, `content`;
  every form that changes state carries `<input type="hidden" name="csrf_token" value="{{ csrf_token }}">`,
  and disables its buttons when `not user.can_write`), or `redirect(url, flash=("ok", "..."))` after a POST;
- a 422 from the API: re-render the form with `field_errors(exc)` and what was typed (never secrets);
- `ConsoleError(status, title, message, user=user)` for an error page;
- scripts use `Herald.fetchJSON` (static/console.js: sends the CSRF header), `data-async` forms that answer
  `{message, level, poll_url}`, and `data-poll-url` elements whose URL answers `{done, message, level}`.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.console import channels, dead_letters, events, incidents, integrations, keys, notifications, session
from api.console.pages import HERE, ConsoleError, LoginRequired, error_page
from api.errors import envelope

PAGE_ROUTERS: list[APIRouter] = [
    session.router,
    integrations.router,
    notifications.router,
    dead_letters.router,
    events.router,
    incidents.router,
    channels.router,
    keys.router,
]

router = APIRouter(prefix="/console", include_in_schema=False)
for page_router in PAGE_ROUTERS:
    router.include_router(page_router)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.add_api_route(
        "/console", lambda: RedirectResponse("/console/", status_code=307), include_in_schema=False
    )
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _: LoginRequired) -> Response:
        if _wants_json(request):
            message = "your console session has ended; sign in again"
            return JSONResponse(envelope(error=message, error_code="login_required"), status_code=401)
        if request.method != "GET":
            return HTMLResponse("Your console session has ended; sign in again.", status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?next={quote(target, safe='/')}", status_code=303)

    @app.exception_handler(ConsoleError)
    async def _console_error(request: Request, exc: ConsoleError) -> Response:
        if _wants_json(request):
            # a script's fetch (the Test button): the API's envelope, so the page can show the message
            body = envelope(error=exc.message, error_code=exc.error_code)
            return JSONResponse(
                body | {"message": exc.message, "level": "error"}, status_code=exc.status_code
            )
        return error_page(request, exc)
