"""signing: keys held on a PKCS#11 token (their object id instead of an encrypted private key)

Revision ID: signing_0002
Revises: signing_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "signing_0002"
down_revision = "signing_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("signing_keys", sa.Column("token_object_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_column("token_object_id")
