"""The Notifications page (seed 003): the routes matrix, bulk edits and the dry-run panel."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.console.pages import render
from api.console.session import Viewer

router = APIRouter(prefix="/notifications")


@router.get("", response_class=HTMLResponse)
def notifications_page(request: Request, user: Viewer) -> HTMLResponse:
    return render(request, user, "notifications.html", {})
