"""audit: witness cosignatures of checkpoints and the size each witness last cosigned

Revision ID: audit_0002
Revises: audit_0001
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "audit_0002"
down_revision = "audit_0001"
branch_labels = None
depends_on = None

COSIGNATURES = "audit_cosignatures"
SIZES = "audit_witness_sizes"
SERVICE_ROLE_ENV = "BHXH_DB_SERVICE_ROLE"


def upgrade() -> None:
    op.create_table(
        COSIGNATURES,
        sa.Column("checkpoint_id", sa.Integer, sa.ForeignKey("audit_checkpoints.id"), nullable=False),
        sa.Column("witness", sa.String(255), nullable=False),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column("key_id", sa.String(8), nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("checkpoint_id", "key_name", "key_id"),
    )
    op.create_table(
        SIZES,
        sa.Column("witness", sa.String(255), primary_key=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # A cosignature is evidence like the checkpoint it signs: appended, never changed.
    if op.get_bind().dialect.name == "postgresql":
        for name, when in (
            (f"{COSIGNATURES}_append_only", f"BEFORE UPDATE OR DELETE ON {COSIGNATURES} FOR EACH ROW"),
            (f"{COSIGNATURES}_no_truncate", f"BEFORE TRUNCATE ON {COSIGNATURES} FOR EACH STATEMENT"),
        ):
            op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION audit_append_only()")
            op.execute(f"ALTER TABLE {COSIGNATURES} ENABLE ALWAYS TRIGGER {name}")
        role = os.environ.get(SERVICE_ROLE_ENV)
        if role:
            quoted = '"' + role.replace('"', '""') + '"'
            op.execute(f"REVOKE ALL ON {COSIGNATURES}, {SIZES} FROM {quoted}")
            op.execute(f"GRANT SELECT, INSERT ON {COSIGNATURES} TO {quoted}")
            op.execute(f"GRANT SELECT, INSERT, UPDATE ON {SIZES} TO {quoted}")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {COSIGNATURES}_no_{verb.lower()} BEFORE {verb} ON {COSIGNATURES} "
                f"BEGIN SELECT RAISE(ABORT, '{COSIGNATURES} is append-only'); END"
            )


def downgrade() -> None:
    op.drop_table(COSIGNATURES)
    op.drop_table(SIZES)
