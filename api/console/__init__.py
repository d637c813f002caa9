"""The browser console under `/console` (issue 14): server-rendered pages (Jinja2) over the same service code as
the JSON API, with our own CSS and JS (progressive enhancement; no CDN, nothing fetched at run time).

Each page lives in its own module with its own `router`; `PAGE_ROUTERS` lists them, one line per router.
`install(app)` mounts the router and the static files and renders console errors as pages.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.console import channels, dead_letters, events, incidents, integrations, keys, notifications, session
from api.console.pages import HERE, ConsoleError, LoginRequired, error_page

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


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.add_api_route(
        "/console", lambda: RedirectResponse("/console/", status_code=307), include_in_schema=False
    )
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _: LoginRequired) -> Response:
        if request.method != "GET" or request.headers.get("x-csrf-token"):
            # a script's fetch or a form post: no redirect to follow, say so
            return HTMLResponse("Your console session has ended; sign in again.", status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?next={quote(target, safe='/')}", status_code=303)

    @app.exception_handler(ConsoleError)
    async def _console_error(request: Request, exc: ConsoleError) -> HTMLResponse:
        return error_page(request, exc)
