"""The Integrations page (seed 001): provider tiles, the connected-destinations table, Recent deliveries."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.console.pages import render
from api.console.session import Viewer

router = APIRouter(prefix="/integrations")


@router.get("", response_class=HTMLResponse)
def integrations_page(request: Request, user: Viewer) -> HTMLResponse:
    return render(request, user, "integrations.html", {})
