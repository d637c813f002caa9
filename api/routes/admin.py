"""The management API, one router for `api/app.py` to include: integrations, routes, deliveries, dead
letters, API keys and OAuth connect (each in its own module)."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import dead_letters, deliveries, integrations, keys, oauth, routes

router = APIRouter()
for module in (integrations, routes, deliveries, dead_letters, keys, oauth):
    router.include_router(module.router)
