"""Storage of the portal ↔ one-stop exchange (SQLAlchemy Core, its own MetaData; migrations on
the Alembic branch ``exchange``).

- ``exchange_peers``: the registry of peers (portal, one-stop, gateway, other BHXH systems):
  RFC 9421 keyid, public key and certificate, the routes each may use, and the base URL the
  gateway forwards to; after a key rotation with an overlap, the previous keyid and key too,
  accepted until ``previous_until``. A keyid names one key: no keyid appears twice in the two
  keyid columns together (the registry checks it under its write lock).
- ``exchange_nonces``: the replay guard, one row per (keyid, nonce) accepted, kept until the
  signature's ``expires`` (epoch seconds) and then purged. The primary key makes the insert
  the atomic "never seen before" test on both back ends.
- ``exchange_archive``: the optional message archive (like X-Road's message log): headers and
  body of each verified or refused message, off unless configured. It holds personal data.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

PEER_NAME_LENGTH = 64
KEYID_LENGTH = 128
NONCE_LENGTH = 128
MESSAGE_ID_LENGTH = 64
URL_LENGTH = 2048

exchange_peers = Table(
    "exchange_peers",
    metadata,
    Column("name", String(PEER_NAME_LENGTH), primary_key=True),
    Column("keyid", String(KEYID_LENGTH), nullable=False),
    Column("algorithm", String(32), nullable=False),
    Column("public_key_pem", Text, nullable=False),
    Column("certificate_pem", Text, nullable=True),
    Column("base_url", String(URL_LENGTH), nullable=True),
    Column("routes", Text, nullable=False),  # JSON list of "METHOD /path-pattern"
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("previous_keyid", String(KEYID_LENGTH), nullable=True),
    Column("previous_public_key_pem", Text, nullable=True),
    Column("previous_certificate_pem", Text, nullable=True),
    Column("previous_until", DateTime(timezone=True), nullable=True),
    UniqueConstraint("keyid", name="uq_exchange_peers_keyid"),
    UniqueConstraint("previous_keyid", name="uq_exchange_peers_previous_keyid"),
)

exchange_nonces = Table(
    "exchange_nonces",
    metadata,
    Column("keyid", String(KEYID_LENGTH), primary_key=True),
    Column("nonce", String(NONCE_LENGTH), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_exchange_nonces_expires_at", "expires_at"),
)

exchange_archive = Table(
    "exchange_archive",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(MESSAGE_ID_LENGTH), nullable=False, index=True),
    Column("direction", String(16), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("peer", String(PEER_NAME_LENGTH), nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("method", String(16), nullable=False),
    Column("target_uri", Text, nullable=False),
    Column("status", Integer, nullable=True),
    Column("headers", Text, nullable=False),  # JSON list of [name, value]
    Column("body", LargeBinary, nullable=False),
    Column("audit_seq", BigInteger, nullable=True),
)
