"""exchange: a peer's previous key, still accepted until the end of its rotation overlap

Revision ID: exchange_0002
Revises: exchange_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "exchange_0002"
down_revision = "exchange_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot add a UNIQUE constraint to an existing table in place.
    with op.batch_alter_table("exchange_peers") as batch:
        batch.add_column(sa.Column("previous_keyid", sa.String(128), nullable=True))
        batch.add_column(sa.Column("previous_public_key_pem", sa.Text, nullable=True))
        batch.add_column(sa.Column("previous_certificate_pem", sa.Text, nullable=True))
        batch.add_column(sa.Column("previous_until", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint("uq_exchange_peers_previous_keyid", ["previous_keyid"])


def downgrade() -> None:
    with op.batch_alter_table("exchange_peers") as batch:
        batch.drop_constraint("uq_exchange_peers_previous_keyid", type_="unique")
        batch.drop_column("previous_until")
        batch.drop_column("previous_certificate_pem")
        batch.drop_column("previous_public_key_pem")
        batch.drop_column("previous_keyid")
