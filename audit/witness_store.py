"""Storage of the log's side of witnessing (C2SP tlog-witness): the cosignatures each witness
returned for a checkpoint, and the size each witness last cosigned.

Both live in the database, not in a process, so every instance of the service shares them: any
instance may submit the latest checkpoint, and the next one starts from the size a witness
holds. Cosignatures are append-only like the checkpoints they belong to; the witness sizes are
a hint the witness itself corrects (a 409 answer carries its real size).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from audit.checkpoint import NoteSignature
from audit.tables import metadata

# One row per cosignature line (a witness with an Ed25519 and an ML-DSA-44 key returns two).
audit_cosignatures = Table(
    "audit_cosignatures",
    metadata,
    Column("checkpoint_id", Integer, ForeignKey("audit_checkpoints.id"), nullable=False),
    Column("witness", String(255), nullable=False),  # the configured witness it came from
    Column("key_name", String(255), nullable=False),
    Column("key_id", String(8), nullable=False),  # hex
    Column("line", Text, nullable=False),  # the signature line, without its newline
    Column("stored_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("checkpoint_id", "key_name", "key_id"),
)

# The tree size each witness last cosigned for this log.
audit_witness_sizes = Table(
    "audit_witness_sizes",
    metadata,
    Column("witness", String(255), primary_key=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

COSIGNATURES_TABLE = "audit_cosignatures"
WITNESS_SIZES_TABLE = "audit_witness_sizes"


@dataclass(frozen=True)
class StoredCosignature:
    checkpoint_id: int
    witness: str
    line: str


def witness_size(conn: Connection, witness: str) -> int:
    """The size ``witness`` last cosigned (0: never, as for a witness that never saw the log)."""
    size = conn.execute(
        select(audit_witness_sizes.c.tree_size).where(audit_witness_sizes.c.witness == witness)
    ).scalar_one_or_none()
    return int(size) if size is not None else 0


def witness_sizes(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(audit_witness_sizes.c.witness, audit_witness_sizes.c.tree_size))
    return {row.witness: int(row.tree_size) for row in rows}


def set_witness_size(conn: Connection, witness: str, size: int, at: datetime) -> None:
    """Record the size ``witness`` holds now (an upsert: every instance writes the same row)."""
    values = {"witness": witness, "tree_size": size, "updated_at": at.astimezone(UTC)}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(audit_witness_sizes).values(**values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[audit_witness_sizes.c.witness],
            set_={"tree_size": size, "updated_at": values["updated_at"]},
        )
    )


def add_cosignatures(
    conn: Connection, checkpoint_id: int, witness: str, signatures: Sequence[NoteSignature], at: datetime
) -> None:
    """Store verified cosignature lines of one checkpoint; a line already stored (by another
    instance that submitted the same checkpoint) is kept as it is."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for sig in signatures:
        row = {
            "checkpoint_id": checkpoint_id,
            "witness": witness,
            "key_name": sig.name,
            "key_id": sig.key_id.hex(),
            "line": sig.to_line().rstrip("\n"),
            "stored_at": at.astimezone(UTC),
        }
        conn.execute(dialect.insert(audit_cosignatures).values(**row).on_conflict_do_nothing())


def cosignatures_of(conn: Connection, checkpoint_ids: Iterable[int]) -> dict[int, list[StoredCosignature]]:
    """The stored cosignatures of the given checkpoints, in the order they were stored."""
    ids = list(checkpoint_ids)
    found: dict[int, list[StoredCosignature]] = {}
    if not ids:
        return found
    c = audit_cosignatures.c
    rows = conn.execute(
        select(c.checkpoint_id, c.witness, c.line)
        .where(c.checkpoint_id.in_(ids))
        .order_by(c.checkpoint_id, c.stored_at, c.witness, c.key_name)
    )
    for row in rows:
        found.setdefault(row.checkpoint_id, []).append(StoredCosignature(row.checkpoint_id, row.witness, row.line))
    return found


def cosigned_witnesses(conn: Connection, checkpoint_id: int) -> set[str]:
    """The configured witnesses with at least one stored cosignature on a checkpoint."""
    c = audit_cosignatures.c
    return set(conn.execute(select(c.witness).where(c.checkpoint_id == checkpoint_id).distinct()).scalars())


def with_stored(note: str, cosignatures: Sequence[StoredCosignature]) -> str:
    """A checkpoint note with its stored cosignatures appended as extra signature lines
    (signed-note: a verifier ignores lines by keys it does not know). A line the note already
    carries is not repeated."""
    if not cosignatures:
        return note
    present = set(note.splitlines())
    extra = [c.line for c in cosignatures if c.line not in present]
    return note + "".join(line + "\n" for line in dict.fromkeys(extra))


def cosigned_notes(conn: Connection, checkpoints: Sequence[tuple[int, str]]) -> list[str]:
    """The notes of ``(checkpoint id, note)`` pairs, each with its stored cosignatures."""
    stored = cosignatures_of(conn, (cid for cid, _ in checkpoints))
    return [with_stored(note, stored.get(cid, [])) for cid, note in checkpoints]


def sizes_lag(latest_size: int, sizes: Mapping[str, int], witnesses: Sequence[str]) -> dict[str, int]:
    """Per configured witness, how many entries of the latest checkpoint it has not cosigned."""
    return {name: max(0, latest_size - sizes.get(name, 0)) for name in witnesses}
