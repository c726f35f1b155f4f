"""receipts: daily sequences, registry, stored PDFs, idempotency keys

Revision ID: receipts_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "receipts_0001"
down_revision = None
branch_labels = ("receipts",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipt_sequences",
        sa.Column("unit_code", sa.String(16), nullable=False),
        sa.Column("receipt_day", sa.Date, nullable=False),
        sa.Column("last_value", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("unit_code", "receipt_day", name="pk_receipt_sequences"),
        sa.CheckConstraint("last_value >= 1 AND last_value <= 9999", name="ck_receipt_sequences_range"),
    )
    op.create_table(
        "receipts",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("unit_code", sa.String(16), nullable=False),
        sa.Column("receipt_day", sa.Date, nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("signer_certificate_sha256", sa.String(64), nullable=False),
        sa.Column("pades_level", sa.String(8), nullable=False),
        sa.Column("procedure_code", sa.String(64), nullable=False),
        sa.Column("issued_by", sa.String(200), nullable=False),
        sa.Column("official_name", sa.String(200), nullable=False),
        sa.Column("official_title", sa.String(200), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("audit_seq", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("unit_code", "receipt_day", "sequence", name="uq_receipts_unit_day_sequence"),
    )
    op.create_index("ix_receipts_sha256", "receipts", ["sha256"])
    op.create_table(
        "receipt_pdfs",
        sa.Column(
            "code",
            sa.String(32),
            sa.ForeignKey("receipts.code", deferrable=True, initially="DEFERRED"),
            primary_key=True,
        ),
        sa.Column("pdf", sa.LargeBinary, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # The PDF's streams are already Flate-compressed: keep TOAST from trying pglz on them.
        op.execute("ALTER TABLE receipt_pdfs ALTER COLUMN pdf SET STORAGE EXTERNAL")
    op.create_table(
        "receipt_idempotency_keys",
        sa.Column("issued_by", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("code", sa.String(32), sa.ForeignKey("receipts.code"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("issued_by", "idempotency_key", name="pk_receipt_idempotency_keys"),
    )


def downgrade() -> None:
    op.drop_table("receipt_idempotency_keys")
    op.drop_table("receipt_pdfs")
    op.drop_index("ix_receipts_sha256", table_name="receipts")
    op.drop_table("receipts")
    op.drop_table("receipt_sequences")
