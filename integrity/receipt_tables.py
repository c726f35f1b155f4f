"""Storage of the receipt use case (SQLAlchemy Core, its own MetaData; migrations on the
Alembic branch ``receipts``).

- ``receipt_sequences``: one row per receiving unit and Vietnam day holding the last sequence
  handed out; incremented in the issuing transaction, so a failed issue leaves no gap.
- ``receipts``: the registry, code → SHA-256 of the signed PDF, signer certificate, issuer,
  time and audit ``seq``.
- ``receipt_pdfs``: the signed PDF as issued (kept apart: the registry rows stay small).
- ``receipt_idempotency_keys``: (caller, Idempotency-Key) → the receipt it produced.
- ``receipt_revocations``: the receipts withdrawn after issue, one row each, never deleted.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

UNIT_CODE_LENGTH = 16
CODE_LENGTH = 32
ACTOR_LENGTH = 200
IDEMPOTENCY_KEY_LENGTH = 255

receipt_sequences = Table(
    "receipt_sequences",
    metadata,
    Column("unit_code", String(UNIT_CODE_LENGTH), primary_key=True),
    Column("receipt_day", Date, primary_key=True),
    Column("last_value", Integer, nullable=False),
    # Four digits in the code: the database refuses a 10,000th value as well as the code does.
    CheckConstraint("last_value >= 1 AND last_value <= 9999", name="ck_receipt_sequences_range"),
)

receipts = Table(
    "receipts",
    metadata,
    Column("code", String(CODE_LENGTH), primary_key=True),
    Column("unit_code", String(UNIT_CODE_LENGTH), nullable=False),
    Column("receipt_day", Date, nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("size_bytes", Integer, nullable=False),
    Column("signer_certificate_sha256", String(64), nullable=False),
    Column("pades_level", String(8), nullable=False),
    Column("procedure_code", String(64), nullable=False),
    Column("issued_by", String(ACTOR_LENGTH), nullable=False),
    Column("official_name", String(200), nullable=False),
    Column("official_title", String(200), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("audit_seq", BigInteger, nullable=False),
    UniqueConstraint("unit_code", "receipt_day", "sequence", name="uq_receipts_unit_day_sequence"),
)

receipt_pdfs = Table(
    "receipt_pdfs",
    metadata,
    # Deferred: the PDF is written before the audit entry and the registry row, so the audit
    # log's lock is held for as short a time as possible (see integrity.receipts.issue).
    Column(
        "code",
        String(CODE_LENGTH),
        ForeignKey("receipts.code", deferrable=True, initially="DEFERRED"),
        primary_key=True,
    ),
    Column("pdf", LargeBinary, nullable=False),
)

receipt_idempotency_keys = Table(
    "receipt_idempotency_keys",
    metadata,
    Column("issued_by", String(ACTOR_LENGTH), primary_key=True),
    Column("idempotency_key", String(IDEMPOTENCY_KEY_LENGTH), primary_key=True),
    Column("request_sha256", String(64), nullable=False),
    # NULL while the issuing transaction that claimed the key is still running.
    Column("code", String(CODE_LENGTH), ForeignKey("receipts.code"), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

receipt_revocations = Table(
    "receipt_revocations",
    metadata,
    # The primary key makes a second revocation of one receipt fail, whatever the instance.
    Column("code", String(CODE_LENGTH), ForeignKey("receipts.code"), primary_key=True),
    Column("reason", String(32), nullable=False),
    Column("revoked_by", String(ACTOR_LENGTH), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Column("audit_seq", BigInteger, nullable=False),
)
