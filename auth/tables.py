"""Tables owned by ``auth`` (SQLAlchemy Core). Migrations: integrity/migrations, branch "auth"."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()

# API clients (other BHXH systems). Only a SHA-256 of the key's secret part is stored: the key
# carries 256 random bits, so a fast hash is enough (no password stretching needed).
api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("secret_hash", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
