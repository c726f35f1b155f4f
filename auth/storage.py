"""What the account stores share: datetimes read back as UTC, and an insert that a unique index
may refuse without ending the surrounding transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import overload

from sqlalchemy import Connection, Table, insert
from sqlalchemy.exc import IntegrityError as DbIntegrityError


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    """A stored moment as an aware UTC datetime: SQLite hands back naive ones, and everything
    stored is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def insert_unique(conn: Connection, table: Table, values: Mapping[str, object]) -> bool:
    """Insert one row; False when a unique index already holds its key. The insert runs in a
    savepoint, so a refusal leaves the caller's transaction usable, and the index decides, so
    two concurrent inserts of one key cannot both succeed."""
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(**values))
    except DbIntegrityError:
        return False
    return True
