"""audit: entries, personal data, tree nodes, checkpoints, keys; append-only triggers

Revision ID: audit_0001
Revises:
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "audit_0001"
down_revision = None
branch_labels = ("audit",)
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
APPEND_ONLY = ("audit_entries", "audit_tree_nodes", "audit_checkpoints", "audit_keys")
PII = "audit_pii"
# Proposed setting: the PostgreSQL role the service connects as; when set, that role is granted
# only SELECT, INSERT on the log tables (and DELETE on personal data, for erasure).
SERVICE_ROLE_ENV = "BHXH_DB_SERVICE_ROLE"


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(210), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("pii", sa.String(64), nullable=True),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_pii",
        sa.Column("seq", _SEQ, sa.ForeignKey("audit_entries.seq"), primary_key=True, autoincrement=False),
        sa.Column("salt", sa.LargeBinary(32), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.SmallInteger, nullable=False),
        sa.Column("idx", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_audit_checkpoints_tree_size", "audit_checkpoints", ["tree_size"])
    op.create_table(
        "audit_keys",
        sa.Column("vkey", sa.String(400), primary_key=True),
        sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Appends are serialised by pg_advisory_xact_lock; PRIMARY KEY(seq) and UNIQUE(prev)
        # make a fork impossible to commit even if the lock were bypassed.
        op.create_unique_constraint("uq_audit_entries_prev", "audit_entries", ["prev"])
        _postgres_guards()
        role = os.environ.get(SERVICE_ROLE_ENV)
        if role:
            _grant_service_role(role)
    else:
        _sqlite_guards()


def _sqlite_guards() -> None:
    # Every entry must link to its predecessor (and seq 0 to the 64 zeros): no gap, no fork can
    # commit. A stronger guard than UNIQUE(prev), and it writes no random index pages: a
    # UNIQUE index over random hashes halved durable append throughput (each group commit
    # dirtied one random index page per entry).
    op.execute(
        "CREATE TRIGGER audit_entries_link BEFORE INSERT ON audit_entries "
        "WHEN NEW.prev IS NOT (CASE WHEN NEW.seq = 0 THEN '" + "0" * 64 + "' "
        "ELSE (SELECT hash FROM audit_entries WHERE seq = NEW.seq - 1) END) "
        "BEGIN SELECT RAISE(ABORT, 'audit entry does not link to its predecessor'); END"
    )
    for table in APPEND_ONLY:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
    op.execute(
        f"CREATE TRIGGER {PII}_no_update BEFORE UPDATE ON {PII} "
        f"BEGIN SELECT RAISE(ABORT, '{PII} rows are never changed, only erased'); END"
    )


def _postgres_guards() -> None:
    op.execute(
        """
        CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit table % is append-only (% refused)', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in APPEND_ONLY:
        _pg_trigger(f"{table}_append_only", f"BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW", table)
        _pg_trigger(f"{table}_no_truncate", f"BEFORE TRUNCATE ON {table} FOR EACH STATEMENT", table)
    _pg_trigger(f"{PII}_no_update", f"BEFORE UPDATE ON {PII} FOR EACH ROW", PII)
    _pg_trigger(f"{PII}_no_truncate", f"BEFORE TRUNCATE ON {PII} FOR EACH STATEMENT", PII)


def _pg_trigger(name: str, when: str, table: str) -> None:
    op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION audit_append_only()")
    # ENABLE ALWAYS: the trigger fires even with session_replication_role = replica.
    op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}")


def _grant_service_role(role: str) -> None:
    quoted = '"' + role.replace('"', '""') + '"'
    tables = ", ".join((*APPEND_ONLY, PII))
    op.execute(f"REVOKE ALL ON {tables} FROM {quoted}")
    op.execute(f"GRANT SELECT, INSERT ON {', '.join(APPEND_ONLY)} TO {quoted}")
    op.execute(f"GRANT SELECT, INSERT, DELETE ON {PII} TO {quoted}")
    op.execute(f"GRANT USAGE ON SEQUENCE audit_checkpoints_id_seq TO {quoted}")


def downgrade() -> None:
    for table in ("audit_keys", "audit_checkpoints", "audit_tree_nodes", "audit_pii", "audit_entries"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
