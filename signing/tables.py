"""Tables owned by ``signing`` (SQLAlchemy Core). Migrations: integrity/migrations, branch
"signing". The keystore's state lives here so that every service instance agrees on which key
is active, retired or revoked."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, Index, MetaData, String, Table, Text, text

from signing.purposes import KeyPurpose

metadata = MetaData()
PURPOSE_CHECK = "purpose IN ({})".format(", ".join(f"'{p.value}'" for p in KeyPurpose))

# One row per key. Private keys are stored only as encrypted PKCS#8 PEM (the passphrase never
# reaches the database); ``owner`` is "" for the service's own keys and "user:<name>" for a
# person's key, which only personal signing (after step-up) may use.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),  # RFC 7638 JWK thumbprint, base64url
    Column("algorithm", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("owner", String(200), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("public_key_pem", Text, nullable=False),
    Column("certificate_chain_pem", Text, nullable=True),  # leaf first
    Column("private_key_pem", Text, nullable=True),  # encrypted PKCS#8
    Column("token_object_id", String(64), nullable=True),  # CKA_ID (hex) of a key held on the PKCS#11 token
    # What the key signs (signing.purposes.KeyPurpose); set once, never changed.
    Column("purpose", String(16), nullable=False),
    CheckConstraint("state IN ('active', 'retired', 'revoked')", name="ck_signing_keys_state"),
    CheckConstraint(PURPOSE_CHECK, name="ck_signing_keys_purpose"),
    # At most one active key per algorithm, owner and purpose, enforced by the database so that
    # two instances rotating at once cannot both win.
    Index(
        "uq_signing_keys_one_active",
        "algorithm",
        "owner",
        "purpose",
        unique=True,
        sqlite_where=text("state = 'active'"),
        postgresql_where=text("state = 'active'"),
    ),
)
