"""personal_signing: signature activations (one person, key, format and document digest; single use)

Revision ID: personal_signing_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "personal_signing_0001"
down_revision = None
branch_labels = ("personal_signing",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signature_activations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("expires_at > created_at", name="ck_signature_activations_expiry"),
    )
    op.create_index("ix_signature_activations_username", "signature_activations", ["username"])


def downgrade() -> None:
    op.drop_index("ix_signature_activations_username", table_name="signature_activations")
    op.drop_table("signature_activations")
