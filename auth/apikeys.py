"""API keys for systems: ``bhxh_<client id>_<secret>``, stored as SHA-256 of the secret.

The client id inside the key lets the lookup be an indexed read; the secret is then compared in
constant time (hmac.compare_digest), so a wrong key leaks nothing through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from auth.errors import InvalidApiKey, InvalidClientName, UnknownClient
from auth.scopes import parse_scopes
from auth.tables import api_clients

KEY_PREFIX = "bhxh"
_CLIENT_ID_BYTES = 8
_SECRET_BYTES = 32
_CLIENT_ID = re.compile(f"[0-9a-f]{{{2 * _CLIENT_ID_BYTES}}}")  # secrets.token_hex's alphabet
_MAX_NAME = 200


@dataclass(frozen=True)
class ApiClient:
    client_id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class IssuedKey:
    client: ApiClient
    api_key: str  # shown once, never stored


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _row_to_client(row: Row[Any]) -> ApiClient:
    m = row._mapping
    return ApiClient(
        client_id=m["client_id"],
        name=m["name"],
        scopes=frozenset(m["scopes"].split()),
        created_at=_aware(m["created_at"]),
        revoked_at=None if m["revoked_at"] is None else _aware(m["revoked_at"]),
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def create_client(conn: Connection, name: str, scopes: str | list[str], *, clock: Callable[[], datetime]) -> IssuedKey:
    clean = name.strip()
    if not clean or len(clean) > _MAX_NAME:
        raise InvalidClientName(f"client name must be 1–{_MAX_NAME} characters")
    # Control, format and surrogate code points: invisible in listings and logs, and NUL is
    # refused by PostgreSQL text columns outright.
    if any(unicodedata.category(ch)[0] == "C" for ch in clean):
        raise InvalidClientName("a client name may not hold control or invisible characters")
    wanted = parse_scopes(scopes)
    client_id = secrets.token_hex(_CLIENT_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    now = clock()
    conn.execute(
        insert(api_clients).values(
            client_id=client_id,
            name=clean,
            scopes=" ".join(sorted(wanted)),
            secret_hash=_digest(secret),
            created_at=now,
            revoked_at=None,
        )
    )
    client = ApiClient(client_id, clean, wanted, now, None)
    return IssuedKey(client, f"{KEY_PREFIX}_{client_id}_{secret}")


def authenticate(conn: Connection, api_key: str) -> ApiClient:
    """The active client holding ``api_key``; ``InvalidApiKey`` for anything else."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not _CLIENT_ID.fullmatch(parts[1]):
        raise InvalidApiKey("malformed API key")
    row = conn.execute(select(api_clients).where(api_clients.c.client_id == parts[1])).first()
    # Compare against a dummy digest when the id is unknown so both paths cost the same.
    stored = row._mapping["secret_hash"] if row is not None else b"\0" * 32
    if not hmac.compare_digest(bytes(stored), _digest(parts[2])) or row is None:
        raise InvalidApiKey("unknown API key")
    client = _row_to_client(row)
    if not client.active:
        raise InvalidApiKey("revoked API key")
    return client


def list_clients(conn: Connection) -> list[ApiClient]:
    rows = conn.execute(select(api_clients).order_by(api_clients.c.created_at, api_clients.c.client_id))
    return [_row_to_client(r) for r in rows]


def revoke_client(conn: Connection, client_id: str, *, clock: Callable[[], datetime]) -> ApiClient:
    if not _CLIENT_ID.fullmatch(client_id):
        # Not an id this module issues; never sent to the database (PostgreSQL refuses NUL).
        raise UnknownClient(f"no API client {client_id!r}")
    conn.execute(
        update(api_clients)
        .where(api_clients.c.client_id == client_id, api_clients.c.revoked_at.is_(None))
        .values(revoked_at=clock())
    )
    row = conn.execute(select(api_clients).where(api_clients.c.client_id == client_id)).first()
    if row is None:
        raise UnknownClient(f"no API client {client_id!r}")
    return _row_to_client(row)
