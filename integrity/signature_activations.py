"""Storage of signature activations (SQLAlchemy Core, its own MetaData; migrations on the
Alembic branch ``personal_signing``).

An activation is the service's half of the signature activation data of EN 419 241-1: it binds
one person, one of their keys, one format and the SHA-256 of one document, for a few minutes,
for one use. The document itself is never stored. ``claim`` spends it with one conditional
UPDATE, so of two concurrent activations exactly one goes on to sign.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)

from integrity.clock import stored_utc

metadata = MetaData()

ID_BYTES = 16  # 128 random bits: an id cannot be guessed, and is useless without the person anyway
USERNAME_LENGTH = 200
KID_LENGTH = 64
FORMAT_LENGTH = 8

signature_activations = Table(
    "signature_activations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(USERNAME_LENGTH), nullable=False),
    Column("key_id", String(KID_LENGTH), nullable=False),
    Column("format", String(FORMAT_LENGTH), nullable=False),
    Column("sha256", String(64), nullable=False),  # hex digest of the document
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("expires_at > created_at", name="ck_signature_activations_expiry"),
    Index("ix_signature_activations_username", "username"),
)


@dataclass(frozen=True)
class ActivationRecord:
    id: str
    username: str
    key_id: str
    format: str
    sha256: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def new_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def add(conn: Connection, record: ActivationRecord) -> None:
    conn.execute(
        insert(signature_activations).values(
            id=record.id,
            username=record.username,
            key_id=record.key_id,
            format=record.format,
            sha256=record.sha256,
            created_at=record.created_at,
            expires_at=record.expires_at,
            used_at=record.used_at,
        )
    )


def find(conn: Connection, activation_id: str) -> ActivationRecord | None:
    row = conn.execute(select(signature_activations).where(signature_activations.c.id == activation_id)).first()
    if row is None:
        return None
    return ActivationRecord(
        id=row.id,
        username=row.username,
        key_id=row.key_id,
        format=row.format,
        sha256=row.sha256,
        created_at=stored_utc(row.created_at),
        expires_at=stored_utc(row.expires_at),
        used_at=None if row.used_at is None else stored_utc(row.used_at),
    )


def claim(conn: Connection, activation_id: str, username: str, now: datetime) -> bool:
    """Spend the activation: True for the one caller whose UPDATE found it unused and unexpired."""
    t = signature_activations
    done = conn.execute(
        update(t)
        .where(t.c.id == activation_id, t.c.username == username, t.c.used_at.is_(None), t.c.expires_at > now)
        .values(used_at=now)
    )
    return done.rowcount == 1
