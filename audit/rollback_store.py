"""Storage of the log's rolled-back state: what a witness showed that this log no longer holds.

A witness keeps the latest checkpoint it cosigned for the log (C2SP tlog-witness). When it
holds a larger tree than the log, or another root at a size the log holds, the log was put back
to an older state (a restore) and the entries the witness counted since are gone. Each such
finding is one row; while any row is not acknowledged, the log takes no appends. An
acknowledgement is an entry of the log itself; its ``seq`` is written into the rows it covers.

Rows are never deleted and only ever acknowledged, once (triggers, see the migration): clearing
the state without an entry in the log is refused by the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    exists,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from audit.tables import audit_checkpoints, metadata
from audit.witness_store import audit_cosignatures

ROLLBACKS_TABLE = "audit_rollbacks"
_OPEN = text("acknowledged_seq IS NULL")
# Asked before every append: plain SQL, as audit.store's append path (a fifth of the time of
# the Core statement on SQLite).
_ANY_OPEN_SQL = f"SELECT 1 FROM {ROLLBACKS_TABLE} WHERE acknowledged_seq IS NULL LIMIT 1"


class RollbackEvidence(StrEnum):
    """What the witness showed."""

    AHEAD = "ahead"  # it cosigned a larger tree than the log holds
    OTHER_ROOT = "other-root"  # it cosigned a tree of a size the log holds, with another root


audit_rollbacks = Table(
    ROLLBACKS_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("witness", String(255), nullable=False),  # the configured witness's name
    Column("witness_size", BigInteger, nullable=False),  # the size of the tree it cosigned
    Column("log_size", BigInteger, nullable=False),  # the log's size when this was found
    Column("evidence", String(20), nullable=False),  # RollbackEvidence
    Column("detected_at", DateTime(timezone=True), nullable=False),
    Column("acknowledged_seq", BigInteger, nullable=True),  # the acknowledging entry
    Column("acknowledged_at", DateTime(timezone=True), nullable=True),
    # At most one open finding per witness: every instance may find the same one at once.
    Index(
        "ix_audit_rollbacks_open",
        "witness",
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    ),
)


@dataclass(frozen=True)
class Rollback:
    id: int
    witness: str
    witness_size: int
    log_size: int
    evidence: RollbackEvidence
    detected_at: datetime
    acknowledged_seq: int | None = None


def _rollback(row: object) -> Rollback:
    return Rollback(
        row.id,  # type: ignore[attr-defined]
        row.witness,  # type: ignore[attr-defined]
        int(row.witness_size),  # type: ignore[attr-defined]
        int(row.log_size),  # type: ignore[attr-defined]
        RollbackEvidence(row.evidence),  # type: ignore[attr-defined]
        _utc(row.detected_at),  # type: ignore[attr-defined]
        None if row.acknowledged_seq is None else int(row.acknowledged_seq),  # type: ignore[attr-defined]
    )


def _utc(value: datetime) -> datetime:
    # SQLite gives back naive datetimes; they were stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def record(
    conn: Connection, witness: str, witness_size: int, log_size: int, evidence: RollbackEvidence, at: datetime
) -> bool:
    """Record a finding; False when one of that witness is already open (nothing written)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(audit_rollbacks)
        .values(
            witness=witness,
            witness_size=witness_size,
            log_size=log_size,
            evidence=evidence.value,
            detected_at=at.astimezone(UTC),
        )
        .on_conflict_do_nothing(index_elements=[audit_rollbacks.c.witness], index_where=_OPEN)
    )
    return conn.execute(statement).rowcount == 1


def any_open(conn: Connection) -> bool:
    """Whether a finding is not acknowledged yet (the append path's question)."""
    return conn.exec_driver_sql(_ANY_OPEN_SQL).first() is not None


def first_open(conn: Connection) -> Rollback | None:
    """The earliest finding not yet acknowledged."""
    row = conn.execute(
        select(audit_rollbacks).where(audit_rollbacks.c.acknowledged_seq.is_(None)).order_by(audit_rollbacks.c.id)
    ).first()
    return None if row is None else _rollback(row)


def open_rollbacks(conn: Connection) -> list[Rollback]:
    rows = conn.execute(
        select(audit_rollbacks).where(audit_rollbacks.c.acknowledged_seq.is_(None)).order_by(audit_rollbacks.c.id)
    )
    return [_rollback(row) for row in rows]


def acknowledge(conn: Connection, ids: Sequence[int], seq: int, at: datetime) -> None:
    """Mark the findings ``ids`` as acknowledged by the entry ``seq``."""
    conn.execute(
        update(audit_rollbacks)
        .where(audit_rollbacks.c.id.in_(list(ids)), audit_rollbacks.c.acknowledged_seq.is_(None))
        .values(acknowledged_seq=seq, acknowledged_at=at.astimezone(UTC))
    )


def last_acknowledged(conn: Connection, witness: str) -> Rollback | None:
    """The witness's latest acknowledged finding, or None."""
    row = conn.execute(
        select(audit_rollbacks)
        .where(audit_rollbacks.c.witness == witness, audit_rollbacks.c.acknowledged_seq.is_not(None))
        .order_by(audit_rollbacks.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _rollback(row)


def cosigned_beyond(conn: Connection, witness: str, size: int) -> bool:
    """Whether ``witness`` has a cosignature stored on a checkpoint of a tree larger than ``size``."""
    cosigned = (
        select(audit_cosignatures.c.checkpoint_id)
        .join(audit_checkpoints, audit_checkpoints.c.id == audit_cosignatures.c.checkpoint_id)
        .where(audit_cosignatures.c.witness == witness, audit_checkpoints.c.tree_size > size)
    )
    return bool(conn.execute(select(exists(cosigned))).scalar())


def cosigned_size(conn: Connection, witness: str) -> int:
    """The largest tree of this log the witness has a stored cosignature on (0: none): up to
    there its history and the log's are the same."""
    size = conn.execute(
        select(audit_checkpoints.c.tree_size)
        .join(audit_cosignatures, audit_checkpoints.c.id == audit_cosignatures.c.checkpoint_id)
        .where(audit_cosignatures.c.witness == witness)
        .order_by(audit_checkpoints.c.tree_size.desc())
        .limit(1)
    ).scalar_one_or_none()
    return int(size) if size is not None else 0
