"""signing: keystore (keys, state, certificate chains, encrypted private keys)

Revision ID: signing_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "signing_0001"
down_revision = None
branch_labels = ("signing",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("public_key_pem", sa.Text, nullable=False),
        sa.Column("certificate_chain_pem", sa.Text, nullable=True),
        sa.Column("private_key_pem", sa.Text, nullable=True),
        sa.CheckConstraint("state IN ('active', 'retired', 'revoked')", name="ck_signing_keys_state"),
    )
    op.create_index(
        "uq_signing_keys_one_active",
        "signing_keys",
        ["algorithm", "owner"],
        unique=True,
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    )


def downgrade() -> None:
    op.drop_index("uq_signing_keys_one_active", table_name="signing_keys")
    op.drop_table("signing_keys")
