"""receipts: revocations

Revision ID: receipts_0002
Revises: receipts_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "receipts_0002"
down_revision = "receipts_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipt_revocations",
        sa.Column("code", sa.String(32), sa.ForeignKey("receipts.code"), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("revoked_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("audit_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_receipt_revocations"),
    )


def downgrade() -> None:
    op.drop_table("receipt_revocations")
