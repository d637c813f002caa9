"""Keyset pagination over (timestamp, id), newest first: the cursor is the last row's pair (api/routes/_common.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from api.errors import ApiError
from api.routes._common import decode_cursor, encode_cursor

RowT = TypeVar("RowT")
SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])


def newest_first(
    stmt: SelectT,
    ts_col: InstrumentedAttribute[datetime],
    id_col: InstrumentedAttribute[uuid.UUID],
    *,
    limit: int,
    cursor: str | None,
) -> SelectT:
    """`stmt` ordered newest first from after `cursor`, one row more than `limit` (to know if more exist).

    The row comparison `(ts, id) < (cursor_ts, cursor_id)` is what lets a btree on (ts, id), or on
    (filter column, ts, id), start right at the cursor instead of skipping the rows before it."""
    if cursor is not None:
        ts, last_id = decode_cursor(cursor)
        stmt = stmt.where(tuple_(ts_col, id_col) < tuple_(ts, last_id))
    return stmt.order_by(ts_col.desc(), id_col.desc()).limit(limit + 1)


def split_page(rows: Sequence[RowT], limit: int) -> tuple[list[RowT], bool]:
    """The page and whether another follows (the query asked for `limit + 1` rows)."""
    return list(rows[:limit]), len(rows) > limit


def next_cursor(last_ts: datetime | None, last_id: uuid.UUID | None, more: bool) -> str | None:
    if not more or last_ts is None or last_id is None:
        return None
    return encode_cursor(last_ts, last_id)


def check_time_range(since: datetime | None, until: datetime | None) -> None:
    """The one check of a listing's time range: zoned times, `since` before `until` (422 `invalid_field`)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise ApiError(422, "invalid_field", f"{name}: give a time zone (e.g. 2026-01-01T00:00:00Z)")
    if since is not None and until is not None and since >= until:
        raise ApiError(422, "invalid_field", "since: must be before until")
