"""`/docs` (Swagger UI) and `/redoc` (ReDoc) served from an installed package, never from a CDN.

FastAPI's default pages load their scripts, styles, favicon and ReDoc's fonts from public CDNs, so they are a
blank page offline, behind a strict proxy, or in an air-gapped cluster. The `fastapi-offline` package ships the
Swagger UI and ReDoc bundles; they are served here under `/docs-assets/`, and the pages reference nothing else.
"""

from __future__ import annotations

import logging
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

ASSETS_PATH = "/docs-assets"
DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


def assets_dir() -> str | None:
    try:
        return str(files("fastapi_offline") / "static")
    except ModuleNotFoundError:
        return None


def install(app: FastAPI) -> None:
    """Add the pages and their assets to an app created with `docs_url=None, redoc_url=None`."""
    directory = assets_dir()
    if directory is None:
        # An environment installed before the dependency was added: the API itself must still run.
        log.error("fastapi-offline is not installed: /docs and /redoc are unavailable (pip install -e .)")
        return
    app.mount(ASSETS_PATH, StaticFiles(directory=directory), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_PATH, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
