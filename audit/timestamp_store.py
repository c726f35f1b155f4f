"""Storage of checkpoint time-stamps: the RFC 3161 answer a TSA gave over each checkpoint.

A table apart from ``audit_checkpoints``, because checkpoints are append-only in the database and
a time-stamp arrives after its checkpoint was committed (never inside the append path). Rows are
append-only too: one per checkpoint, kept as received.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Column, Connection, DateTime, ForeignKey, Integer, LargeBinary, String, Table, select
from sqlalchemy.exc import IntegrityError

from audit.store import StoredCheckpoint
from audit.tables import audit_checkpoints, metadata

audit_checkpoint_timestamps = Table(
    "audit_checkpoint_timestamps",
    metadata,
    Column("checkpoint_id", Integer, ForeignKey("audit_checkpoints.id"), primary_key=True, autoincrement=False),
    Column("response", LargeBinary, nullable=False),  # the TimeStampResp DER as the TSA returned it
    Column("gen_time", DateTime(timezone=True), nullable=False),  # the TSA's genTime (informational)
    Column("tsa", String(500), nullable=False),  # subject of the TSA certificate (informational)
    Column("stored_at", DateTime(timezone=True), nullable=False),
)

TIMESTAMPS_TABLE = "audit_checkpoint_timestamps"
# Bound parameters per query: far below SQLite's and PostgreSQL's limits.
_IDS_PER_QUERY = 500


def add_timestamp(
    conn: Connection, checkpoint_id: int, response: bytes, gen_time: datetime, tsa: str, at: datetime
) -> bool:
    """Store a checkpoint's time-stamp; False when one is already stored (another instance
    got there first: the first one is kept)."""
    row = {
        "checkpoint_id": checkpoint_id,
        "response": response,
        "gen_time": gen_time.astimezone(UTC),
        "tsa": tsa[:500],
        "stored_at": at.astimezone(UTC),
    }
    try:
        with conn.begin_nested():
            conn.execute(audit_checkpoint_timestamps.insert().values(**row))
    except IntegrityError:
        return False
    return True


def timestamps_of(conn: Connection, checkpoint_ids: Iterable[int]) -> dict[int, bytes]:
    """The stored time-stamp responses of the given checkpoints (absent: none stored)."""
    ids = list(checkpoint_ids)
    t = audit_checkpoint_timestamps.c
    found: dict[int, bytes] = {}
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        for row in conn.execute(select(t.checkpoint_id, t.response).where(t.checkpoint_id.in_(chunk))):
            found[row.checkpoint_id] = bytes(row.response)
    return found


def untimestamped(conn: Connection, limit: int) -> list[StoredCheckpoint]:
    """The newest ``limit`` checkpoints without a time-stamp, newest first."""
    c, t = audit_checkpoints.c, audit_checkpoint_timestamps.c
    query = (
        select(audit_checkpoints)
        .outerjoin(audit_checkpoint_timestamps, t.checkpoint_id == c.id)
        .where(t.checkpoint_id.is_(None))
        .order_by(c.tree_size.desc(), c.id.desc())
        .limit(limit)
    )
    return [
        StoredCheckpoint(row.id, row.tree_size, row.root_hash, row.note, _aware(row.signed_at))
        for row in conn.execute(query)
    ]


def _aware(moment: datetime) -> datetime:
    # SQLite keeps no offset: every timestamp is written in UTC, so naive means UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
