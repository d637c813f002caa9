"""What the console's list pages (events, incidents, dead letters) share: the page size a query string may ask
for, the first/next page links of a keyset-paged list, and the names of the integrations a detail page shows."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.routes._common import MAX_PAGE
from shared.db.models import Integration

PAGE_SIZE = 50


def page_limit(limit: int) -> int:
    """`?limit=` held to what the API itself serves in a page (1 to MAX_PAGE)."""
    return max(1, min(limit, MAX_PAGE))


def paging(
    path: str, query: dict[str, str], next_cursor: str | None, cursor: str | None
) -> dict[str, str | None]:
    """The template's `next_url` (the same filter from the page's next cursor) and `first_url` (back to the top,
    shown only when this is not the first page)."""
    return {
        "next_url": f"{path}?" + urlencode({**query, "cursor": next_cursor}) if next_cursor else None,
        "first_url": f"{path}?" + urlencode(query) if cursor else None,
    }


def integration_names(session: Session, ids: Collection[uuid.UUID]) -> dict[Any, tuple[str, str]]:
    """Name and provider of each integration in `ids` (a timeline shows them beside each delivery)."""
    if not ids:
        return {}
    rows = session.execute(
        select(Integration.id, Integration.name, Integration.provider).where(Integration.id.in_(ids))
    )
    return {i: (n, p) for i, n, p in rows}
