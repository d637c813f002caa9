"""Small SQL helpers for the hot paths.

`any_of(column, values)` renders `column = ANY(:param)` with one array parameter: the statement text is the
same whatever the number of values, so SQLAlchemy's compiled cache and psycopg's parsed and prepared statements
are reused (an `IN (...)` list renders new SQL for every length and is parsed again each time).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, String, any_, bindparam
from sqlalchemy.dialects.postgresql import UUID


def uuid_array(values: Iterable[uuid.UUID]) -> Any:
    return bindparam(None, list(values), type_=ARRAY(UUID(as_uuid=True)))


def text_array(values: Iterable[str]) -> Any:
    return bindparam(None, list(values), type_=ARRAY(String()))


def any_of(column: Any, values: Iterable[Any], *, uuids: bool = True) -> ColumnElement[bool]:
    array = uuid_array(values) if uuids else text_array(values)
    result: ColumnElement[bool] = column == any_(array)
    return result
