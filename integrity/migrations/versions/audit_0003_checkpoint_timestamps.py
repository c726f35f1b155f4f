"""audit: RFC 3161 time-stamps of checkpoints

Revision ID: audit_0003
Revises: audit_0002
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "audit_0003"
down_revision = "audit_0002"
branch_labels = None
depends_on = None

TIMESTAMPS = "audit_checkpoint_timestamps"
SERVICE_ROLE_ENV = "BHXH_DB_SERVICE_ROLE"


def upgrade() -> None:
    op.create_table(
        TIMESTAMPS,
        sa.Column(
            "checkpoint_id", sa.Integer, sa.ForeignKey("audit_checkpoints.id"), primary_key=True, autoincrement=False
        ),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("gen_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tsa", sa.String(500), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    )
    # A time-stamp is evidence like the checkpoint it covers: appended, never changed.
    if op.get_bind().dialect.name == "postgresql":
        for name, when in (
            (f"{TIMESTAMPS}_append_only", f"BEFORE UPDATE OR DELETE ON {TIMESTAMPS} FOR EACH ROW"),
            (f"{TIMESTAMPS}_no_truncate", f"BEFORE TRUNCATE ON {TIMESTAMPS} FOR EACH STATEMENT"),
        ):
            op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION audit_append_only()")
            op.execute(f"ALTER TABLE {TIMESTAMPS} ENABLE ALWAYS TRIGGER {name}")
        role = os.environ.get(SERVICE_ROLE_ENV)
        if role:
            quoted = '"' + role.replace('"', '""') + '"'
            op.execute(f"REVOKE ALL ON {TIMESTAMPS} FROM {quoted}")
            op.execute(f"GRANT SELECT, INSERT ON {TIMESTAMPS} TO {quoted}")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {TIMESTAMPS}_no_{verb.lower()} BEFORE {verb} ON {TIMESTAMPS} "
                f"BEGIN SELECT RAISE(ABORT, '{TIMESTAMPS} is append-only'); END"
            )


def downgrade() -> None:
    op.drop_table(TIMESTAMPS)
