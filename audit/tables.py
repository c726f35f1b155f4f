"""Tables owned by ``audit`` (SQLAlchemy Core). Migrations: integrity/migrations, branch "audit".

The entries, checkpoints, tree nodes and keys tables are append-only in the database itself
(triggers; on PostgreSQL the service role holds only SELECT, INSERT). ``audit_pii`` is the one
place where a row may be deleted: erasing personal data is the sanctioned removal (docs/audit-log.md).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

# On SQLite "INTEGER PRIMARY KEY" is the rowid itself: no second index to maintain per append.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

# Chain order is the explicit seq computed under the append lock, never a sequence/BIGSERIAL.
# A fork (two entries after the same predecessor) cannot commit: on PostgreSQL UNIQUE(prev),
# on SQLite a BEFORE INSERT trigger requiring prev = hash of entry seq - 1 (see the migration).
audit_entries = Table(
    "audit_entries",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False),
    Column("ts", String(32), nullable=False),
    Column("actor", String(210), nullable=False),
    Column("action", String(100), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("data", Text, nullable=False),  # JCS text of the data object
    Column("pii", String(64), nullable=True),
    Column("prev", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# Personal data apart from the chain: pii = hex(SHA-256(salt ‖ JCS(data))) in the entry.
audit_pii = Table(
    "audit_pii",
    metadata,
    Column("seq", _SEQ, ForeignKey("audit_entries.seq"), primary_key=True, autoincrement=False),
    Column("salt", LargeBinary(32), nullable=False),
    Column("data", Text, nullable=False),  # JCS text of the personal data
)

# Perfect RFC 9162 subtrees of level >= 1 (level 0 is audit_entries.hash): proofs and roots at
# any size read O(log n) rows from here instead of the log.
audit_tree_nodes = Table(
    "audit_tree_nodes",
    metadata,
    Column("level", SmallInteger, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    PrimaryKeyConstraint("level", "idx"),
    sqlite_with_rowid=False,
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", String(64), nullable=False),
    Column("note", Text, nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    Index("ix_audit_checkpoints_tree_size", "tree_size"),
)

# Every verifier key that has signed a checkpoint: after a rotation the old key stays listed, so
# old checkpoints stay verifiable (GET /v1/audit/public-key).
audit_keys = Table(
    "audit_keys",
    metadata,
    Column("vkey", String(400), primary_key=True),
    Column("first_used_at", DateTime(timezone=True), nullable=False),
)

APPEND_ONLY_TABLES = ("audit_entries", "audit_tree_nodes", "audit_checkpoints", "audit_keys")
PII_TABLE = "audit_pii"
