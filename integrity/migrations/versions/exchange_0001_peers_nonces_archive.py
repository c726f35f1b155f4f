"""exchange: peer registry, replay guard (nonces) and message archive

Revision ID: exchange_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "exchange_0001"
down_revision = None
branch_labels = ("exchange",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchange_peers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("keyid", sa.String(128), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("public_key_pem", sa.Text, nullable=False),
        sa.Column("certificate_pem", sa.Text, nullable=True),
        sa.Column("base_url", sa.String(2048), nullable=True),
        sa.Column("routes", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("keyid", name="uq_exchange_peers_keyid"),
    )
    op.create_table(
        "exchange_nonces",
        sa.Column("keyid", sa.String(128), primary_key=True),
        sa.Column("nonce", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_exchange_nonces_expires_at", "exchange_nonces", ["expires_at"])
    op.create_table(
        "exchange_archive",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("peer", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("target_uri", sa.Text, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("audit_seq", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_exchange_archive_message_id", "exchange_archive", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_exchange_archive_message_id", table_name="exchange_archive")
    op.drop_table("exchange_archive")
    op.drop_index("ix_exchange_nonces_expires_at", table_name="exchange_nonces")
    op.drop_table("exchange_nonces")
    op.drop_table("exchange_peers")
