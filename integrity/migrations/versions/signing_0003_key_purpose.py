"""signing: every key has one purpose (receipt, data-message, exchange, checkpoint, personal)

Existing keys get a purpose by what they are: a person's key (owner "user:…") is personal; a
service key with a certificate is the one-stop signing key that the service brought into the
keystore at start-up, so it is the receipt key; a service key without a certificate was made by
``keys generate`` for data messages. A service key that an operator had imported with a
certificate for data messages is therefore marked receipt too: it then refuses to sign data
messages (the safe side) until a data-message key is imported. The one-active-key rule becomes
one active key per algorithm, owner and purpose, so the receipt key and the data-message key
can both be active.

Revision ID: signing_0003
Revises: signing_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "signing_0003"
down_revision = "signing_0002"
branch_labels = None
depends_on = None

# The values of signing.purposes.KeyPurpose when this revision was written (a migration does
# not follow later changes of the code).
_PURPOSES = ("receipt", "data-message", "exchange", "checkpoint", "personal")
_ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    op.drop_index("uq_signing_keys_one_active", table_name="signing_keys")
    op.add_column("signing_keys", sa.Column("purpose", sa.String(16), nullable=True))
    op.execute("UPDATE signing_keys SET purpose = 'personal' WHERE owner <> ''")
    op.execute("UPDATE signing_keys SET purpose = 'receipt' WHERE owner = '' AND certificate_chain_pem IS NOT NULL")
    op.execute("UPDATE signing_keys SET purpose = 'data-message' WHERE purpose IS NULL")
    with op.batch_alter_table("signing_keys") as batch:
        batch.alter_column("purpose", existing_type=sa.String(16), nullable=False)
        batch.create_check_constraint(
            "ck_signing_keys_purpose", "purpose IN ({})".format(", ".join(f"'{p}'" for p in _PURPOSES))
        )
    op.create_index(
        "uq_signing_keys_one_active",
        "signing_keys",
        ["algorithm", "owner", "purpose"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    # Fails while a receipt key and a data-message key of one algorithm are both active: the
    # older schema cannot hold them both.
    op.drop_index("uq_signing_keys_one_active", table_name="signing_keys")
    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_constraint("ck_signing_keys_purpose", type_="check")
        batch.drop_column("purpose")
    op.create_index(
        "uq_signing_keys_one_active",
        "signing_keys",
        ["algorithm", "owner"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
