"""audit: findings that the log was rolled back behind what a witness cosigned

Revision ID: audit_0004
Revises: audit_0003
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "audit_0004"
down_revision = "audit_0003"
branch_labels = None
depends_on = None

ROLLBACKS = "audit_rollbacks"
SERVICE_ROLE_ENV = "BHXH_DB_SERVICE_ROLE"
_OPEN = sa.text("acknowledged_seq IS NULL")
# Columns that say what was found: fixed once the row is written.
_FINDING = ("id", "witness", "witness_size", "log_size", "evidence", "detected_at")


def upgrade() -> None:
    op.create_table(
        ROLLBACKS,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("witness", sa.String(255), nullable=False),
        sa.Column("witness_size", sa.BigInteger, nullable=False),
        sa.Column("log_size", sa.BigInteger, nullable=False),
        sa.Column("evidence", sa.String(20), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_seq", sa.BigInteger, nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_audit_rollbacks_open", ROLLBACKS, ["witness"], unique=True, sqlite_where=_OPEN, postgresql_where=_OPEN
    )
    # A finding is cleared only by an acknowledgement, once, and never deleted: the state can
    # not be lifted without the acknowledging entry in the log.
    if op.get_bind().dialect.name == "postgresql":
        changed = " OR ".join(f"NEW.{col} IS DISTINCT FROM OLD.{col}" for col in _FINDING)
        op.execute(
            f"""
            CREATE FUNCTION audit_rollbacks_acknowledge_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'UPDATE' AND OLD.acknowledged_seq IS NULL AND NEW.acknowledged_seq IS NOT NULL
                        AND NEW.acknowledged_at IS NOT NULL AND NOT ({changed}) THEN
                    RETURN NEW;
                END IF;
                RAISE EXCEPTION 'audit_rollbacks rows are only acknowledged, once (% refused)', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
        for name, when in (
            (f"{ROLLBACKS}_acknowledge_only", f"BEFORE UPDATE OR DELETE ON {ROLLBACKS} FOR EACH ROW"),
            (f"{ROLLBACKS}_no_truncate", f"BEFORE TRUNCATE ON {ROLLBACKS} FOR EACH STATEMENT"),
        ):
            op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION audit_rollbacks_acknowledge_only()")
            op.execute(f"ALTER TABLE {ROLLBACKS} ENABLE ALWAYS TRIGGER {name}")
        role = os.environ.get(SERVICE_ROLE_ENV)
        if role:
            quoted = '"' + role.replace('"', '""') + '"'
            op.execute(f"REVOKE ALL ON {ROLLBACKS} FROM {quoted}")
            op.execute(f"GRANT SELECT, INSERT, UPDATE ON {ROLLBACKS} TO {quoted}")
            op.execute(f"GRANT USAGE ON SEQUENCE {ROLLBACKS}_id_seq TO {quoted}")
    else:
        changed = " OR ".join(f"NEW.{col} IS NOT OLD.{col}" for col in _FINDING)
        op.execute(
            f"CREATE TRIGGER {ROLLBACKS}_no_delete BEFORE DELETE ON {ROLLBACKS} "
            f"BEGIN SELECT RAISE(ABORT, '{ROLLBACKS} rows are never deleted'); END"
        )
        op.execute(
            f"CREATE TRIGGER {ROLLBACKS}_acknowledge_only BEFORE UPDATE ON {ROLLBACKS} "
            "WHEN OLD.acknowledged_seq IS NOT NULL OR NEW.acknowledged_seq IS NULL OR NEW.acknowledged_at IS NULL "
            f"OR {changed} "
            f"BEGIN SELECT RAISE(ABORT, '{ROLLBACKS} rows are only acknowledged, once'); END"
        )


def downgrade() -> None:
    op.drop_table(ROLLBACKS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_rollbacks_acknowledge_only()")
