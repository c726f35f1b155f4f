"""Passkeys (W3C WebAuthn Level 3): stored credentials, ceremony challenges, counter rules.

Storage and pure rules only; the ceremonies (options, verification of the browser's answer)
are ``integrity.passkeys``. A challenge is 32 random bytes kept server-side as its SHA-256,
bound to one account and one purpose, spent by one conditional UPDATE whatever the outcome
of the check that follows, so an assertion can never be played twice (WebAuthn L3 §13.4.3).
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, or_, select, update

from auth.errors import InvalidPasskeyName, PasskeyAlreadyRegistered
from auth.storage import insert_unique, utc
from auth.tables import passkey_challenges, passkey_credentials

CHALLENGE_BYTES = 32  # WebAuthn L3 §13.4.3 asks for at least 16 random bytes
CHALLENGE_SECONDS = 300
CEREMONY_TIMEOUT_MS = 120_000  # the browser's hint; the server's TTL above is what counts
NAME_MAX = 64
MAX_PASSKEYS = 20  # per account: enough for every device a person has, bounded for the list
_ID_BYTES = 16
_TRANSPORTS_KEPT = 8  # 8 × (16 + 1) fits the 200-character column
_ALREADY_REGISTERED = "this authenticator's passkey is already registered"


class Purpose(StrEnum):
    """What a challenge may be answered for; an answer made for one is refused for another."""

    REGISTER = "register"
    LOGIN = "login"
    STEP_UP = "step_up"
    ACTIVATE = "activate"


@dataclass(frozen=True)
class Passkey:
    passkey_id: str
    user_id: str
    credential_id: bytes
    name: str
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    flagged_clone: bool


def _row(row: Row[Any]) -> Passkey:
    m = row._mapping
    return Passkey(
        passkey_id=m["passkey_id"],
        user_id=m["user_id"],
        credential_id=bytes(m["credential_id"]),
        name=m["name"],
        public_key=bytes(m["public_key"]),
        sign_count=int(m["sign_count"]),
        transports=tuple(m["transports"].split()),
        created_at=utc(m["created_at"]),
        last_used_at=utc(m["last_used_at"]),
        flagged_clone=bool(m["flagged_clone"]),
    )


# --- pure rules ----------------------------------------------------------------------------


def clean_name(name: str) -> str:
    """The name a person gives a passkey ("Điện thoại của Lan"): NFC, trimmed, 1–64 characters,
    no control characters (it is shown on pages and in lists)."""
    text = unicodedata.normalize("NFC", name).strip()
    if not text or len(text) > NAME_MAX:
        raise InvalidPasskeyName(f"a passkey's name has 1 to {NAME_MAX} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise InvalidPasskeyName("a passkey's name may not hold control or format characters")
    return text


def counter_regressed(stored: int, received: int) -> bool:
    """WebAuthn L3 §6.1.1: an authenticator with a signature counter reports a larger value at
    each use; a value not above the stored one means another copy of the credential signed in
    between (a cloned authenticator). Both zero: the authenticator keeps no counter (most
    synced passkeys), which says nothing."""
    if stored == 0 and received == 0:
        return False
    return received <= stored


def user_handle(user_id: str) -> bytes:
    """The WebAuthn user handle of an account: its random id, never its name (WebAuthn L3
    §14.6.1: the handle must carry no personal data)."""
    return user_id.encode()


def challenge_digest(challenge: bytes) -> bytes:
    return hashlib.sha256(challenge).digest()


def transports_text(transports: list[str] | tuple[str, ...] | None) -> str:
    """The transport hints as stored: known-looking tokens only, space-separated, bounded."""
    kept = [t for t in (transports or []) if t.isascii() and t.replace("-", "").isalnum() and len(t) <= 16]
    return " ".join(list(dict.fromkeys(kept))[:_TRANSPORTS_KEPT])


# --- challenges ----------------------------------------------------------------------------


def new_challenge(
    conn: Connection,
    user_id: str,
    purpose: Purpose,
    now: datetime,
    *,
    challenge: bytes | None = None,
    ttl_seconds: int = CHALLENGE_SECONDS,
) -> bytes:
    """Store a fresh challenge for ``user_id`` and ``purpose``; returns it (never stored as is).
    The account's spent and expired challenges go at the same time, so the table stays small."""
    value = challenge if challenge is not None else secrets.token_bytes(CHALLENGE_BYTES)
    if len(value) < 16:
        raise ValueError("a WebAuthn challenge has at least 16 bytes")
    t = passkey_challenges
    digest = challenge_digest(value)
    # A caller's challenge offered again (a page shown twice) replaces its earlier row.
    stale = or_(t.c.used_at.is_not(None), t.c.expires_at <= now, t.c.challenge_hash == digest)
    conn.execute(delete(t).where(t.c.user_id == user_id, stale))
    conn.execute(
        insert(t).values(
            challenge_hash=digest,
            user_id=user_id,
            purpose=purpose.value,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
            used_at=None,
        )
    )
    return value


def take_challenge(conn: Connection, challenge: bytes, user_id: str, purpose: Purpose, now: datetime) -> bool:
    """Spend the challenge if it is this account's, for this purpose, unused and unexpired:
    exactly one concurrent caller gets True, and never twice."""
    t = passkey_challenges
    return bool(
        conn.execute(
            update(t)
            .where(
                t.c.challenge_hash == challenge_digest(challenge),
                t.c.user_id == user_id,
                t.c.purpose == purpose.value,
                t.c.used_at.is_(None),
                t.c.expires_at > now,
            )
            .values(used_at=now)
        ).rowcount
    )


def revoke_challenges(conn: Connection, user_id: str) -> None:
    conn.execute(delete(passkey_challenges).where(passkey_challenges.c.user_id == user_id))


# --- credentials ---------------------------------------------------------------------------


def add(
    conn: Connection,
    user_id: str,
    credential_id: bytes,
    name: str,
    public_key: bytes,
    sign_count: int,
    transports: str,
    now: datetime,
) -> Passkey:
    """Store a verified credential; ``PasskeyAlreadyRegistered`` if its id is known (the unique
    index decides, so two concurrent registrations of one credential cannot both succeed)."""
    t = passkey_credentials
    if conn.execute(select(t.c.passkey_id).where(t.c.credential_id == credential_id)).first() is not None:
        raise PasskeyAlreadyRegistered(_ALREADY_REGISTERED)
    passkey = Passkey(
        secrets.token_hex(_ID_BYTES),
        user_id,
        credential_id,
        clean_name(name),
        public_key,
        sign_count,
        tuple(transports.split()),
        now,
        None,
        False,
    )
    # The row is the value as stored: the transports as their space-separated text.
    if not insert_unique(conn, t, {**asdict(passkey), "transports": transports}):
        raise PasskeyAlreadyRegistered(_ALREADY_REGISTERED)
    return passkey


def for_user(conn: Connection, user_id: str) -> list[Passkey]:
    t = passkey_credentials
    rows = conn.execute(select(t).where(t.c.user_id == user_id).order_by(t.c.created_at, t.c.passkey_id)).all()
    return [_row(r) for r in rows]


def count(conn: Connection, user_id: str) -> int:
    t = passkey_credentials
    return int(conn.execute(select(func.count()).select_from(t).where(t.c.user_id == user_id)).scalar_one())


def by_credential_id(conn: Connection, user_id: str, credential_id: bytes) -> Passkey | None:
    t = passkey_credentials
    row = conn.execute(select(t).where(t.c.credential_id == credential_id, t.c.user_id == user_id)).first()
    return _row(row) if row is not None else None


def by_id(conn: Connection, user_id: str, passkey_id: str) -> Passkey | None:
    t = passkey_credentials
    row = conn.execute(select(t).where(t.c.passkey_id == passkey_id, t.c.user_id == user_id)).first()
    return _row(row) if row is not None else None


def rename(conn: Connection, user_id: str, passkey_id: str, name: str) -> bool:
    t = passkey_credentials
    done = conn.execute(
        update(t).where(t.c.passkey_id == passkey_id, t.c.user_id == user_id).values(name=clean_name(name))
    )
    return bool(done.rowcount)


def remove(conn: Connection, user_id: str, passkey_id: str) -> bool:
    t = passkey_credentials
    return bool(conn.execute(delete(t).where(t.c.passkey_id == passkey_id, t.c.user_id == user_id)).rowcount)


def remove_all(conn: Connection, user_id: str) -> int:
    """Forget every passkey of the account (an administrator's reset of its second factors)."""
    revoke_challenges(conn, user_id)
    return conn.execute(delete(passkey_credentials).where(passkey_credentials.c.user_id == user_id)).rowcount


def record_use(conn: Connection, passkey: Passkey, sign_count: int, now: datetime) -> bool:
    """Store the counter of a verified assertion: a compare-and-set on the counter read before,
    so of two assertions checked against one stored value only one is accepted."""
    t = passkey_credentials
    done = conn.execute(
        update(t)
        .where(
            t.c.passkey_id == passkey.passkey_id,
            t.c.sign_count == passkey.sign_count,
            t.c.flagged_clone.is_(False),
        )
        .values(sign_count=sign_count, last_used_at=now)
    )
    return bool(done.rowcount)


def flag_clone(conn: Connection, passkey_id: str) -> None:
    t = passkey_credentials
    conn.execute(update(t).where(t.c.passkey_id == passkey_id).values(flagged_clone=True))
