"""Sessions and MFA challenges: opaque random tokens, stored only as SHA-256.

A session token carries 256 random bits (OWASP asks for at least 64 of entropy; the issue for
128), so a fast hash suffices to store it. Sessions end after ``idle_seconds`` without use and
``absolute_seconds`` after login, whichever comes first. A half-logged-in user (password right,
second factor pending) holds an MFA challenge instead: another table, another prefix, single
use, a few minutes long, and never accepted where a session is expected.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from auth.storage import utc
from auth.tables import mfa_challenges, sessions

SESSION_PREFIX = "ses_"
MFA_PREFIX = "mfa_"
TOKEN_BYTES = 32
MAX_IDLE_SECONDS = 3600
MAX_ABSOLUTE_SECONDS = 12 * 3600
MFA_CHALLENGE_SECONDS = 300
MFA_CHALLENGE_MAX_ATTEMPTS = 3
STEP_UP_SECONDS = 300  # a second factor this recent lets a session sign (step-up)
# Refresh last_seen_at at most this often: a write per request would serialise SQLite.
_TOUCH_GRANULARITY = timedelta(seconds=30)

FULL = "full"
ENROL = "enrol"  # may only enrol TOTP, see its status, and log out
_KINDS = frozenset({FULL, ENROL})


@dataclass(frozen=True)
class SessionPolicy:
    idle_seconds: int = 1800
    absolute_seconds: int = 8 * 3600

    def __post_init__(self) -> None:
        if not 0 < self.idle_seconds <= MAX_IDLE_SECONDS:
            raise ValueError(f"the idle timeout must be 1–{MAX_IDLE_SECONDS} seconds")
        if not 0 < self.absolute_seconds <= MAX_ABSOLUTE_SECONDS:
            raise ValueError(f"the absolute lifetime must be 1–{MAX_ABSOLUTE_SECONDS} seconds")


@dataclass(frozen=True)
class Session:
    token_hash: bytes
    user_id: str
    kind: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    mfa_at: datetime | None

    @property
    def full(self) -> bool:
        return self.kind == FULL

    def has_recent_mfa(self, now: datetime, window_seconds: int = STEP_UP_SECONDS) -> bool:
        return self.mfa_at is not None and timedelta(0) <= now - self.mfa_at <= timedelta(seconds=window_seconds)


@dataclass(frozen=True)
class IssuedSession:
    token: str  # given to the client once, never stored
    session: Session


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _row_to_session(row: Row[Any]) -> Session:
    m = row._mapping
    return Session(
        token_hash=bytes(m["token_hash"]),
        user_id=m["user_id"],
        kind=m["kind"],
        created_at=utc(m["created_at"]),
        last_seen_at=utc(m["last_seen_at"]),
        expires_at=utc(m["expires_at"]),
        mfa_at=utc(m["mfa_at"]),
    )


def create(
    conn: Connection,
    user_id: str,
    kind: str,
    now: datetime,
    policy: SessionPolicy,
    *,
    mfa_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> IssuedSession:
    if kind not in _KINDS:
        raise ValueError(f"unknown session kind {kind!r}")
    token = SESSION_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    session = Session(
        token_hash=token_hash(token),
        user_id=user_id,
        kind=kind,
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at or now + timedelta(seconds=policy.absolute_seconds),
        mfa_at=mfa_at,
    )
    conn.execute(
        insert(sessions).values(
            token_hash=session.token_hash,
            user_id=user_id,
            kind=kind,
            created_at=now,
            last_seen_at=now,
            expires_at=session.expires_at,
            mfa_at=mfa_at,
            revoked_at=None,
        )
    )
    return IssuedSession(token, session)


def resolve(conn: Connection, token: str, now: datetime, policy: SessionPolicy) -> Session | None:
    """The live session of ``token``, or None (read only: see ``touch``)."""
    if not token.startswith(SESSION_PREFIX):
        return None  # an MFA challenge or anything else is never a session
    row = conn.execute(select(sessions).where(sessions.c.token_hash == token_hash(token))).first()
    if row is None or row._mapping["revoked_at"] is not None:
        return None
    session = _row_to_session(row)
    if session.expires_at <= now or session.last_seen_at + timedelta(seconds=policy.idle_seconds) <= now:
        return None
    return session


def needs_touch(session: Session, now: datetime) -> bool:
    return now - session.last_seen_at >= _TOUCH_GRANULARITY


def touch(conn: Connection, session: Session, now: datetime) -> None:
    """Restart the idle timer."""
    conn.execute(
        update(sessions)
        .where(sessions.c.token_hash == session.token_hash, sessions.c.revoked_at.is_(None))
        .values(last_seen_at=now)
    )


def revoke(conn: Connection, hashed: bytes, now: datetime) -> bool:
    return bool(
        conn.execute(
            update(sessions)
            .where(sessions.c.token_hash == hashed, sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        ).rowcount
    )


def revoke_all(conn: Connection, user_id: str, now: datetime, *, keep: bytes | None = None) -> int:
    """Revoke every live session of the user (except ``keep``); returns how many."""
    stmt = update(sessions).where(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
    if keep is not None:
        stmt = stmt.where(sessions.c.token_hash != keep)
    return conn.execute(stmt.values(revoked_at=now)).rowcount


def rotate(
    conn: Connection,
    current: Session,
    now: datetime,
    policy: SessionPolicy,
    *,
    kind: str | None = None,
    mfa_at: datetime | None = None,
) -> IssuedSession:
    """A new token for the same login (session fixation defence); the old one stops working.
    The absolute lifetime still counts from the original login."""
    revoke(conn, current.token_hash, now)
    return create(
        conn,
        current.user_id,
        kind or current.kind,
        now,
        policy,
        mfa_at=mfa_at or current.mfa_at,
        expires_at=current.expires_at,
    )


# --- MFA challenges (half-logged-in state) ---------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    token_hash: bytes
    user_id: str
    expires_at: datetime
    attempts: int


def create_challenge(conn: Connection, user_id: str, now: datetime, ttl_seconds: int = MFA_CHALLENGE_SECONDS) -> str:
    token = MFA_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    conn.execute(
        insert(mfa_challenges).values(
            token_hash=token_hash(token),
            user_id=user_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
            attempts=0,
            used_at=None,
        )
    )
    return token


def find_challenge(conn: Connection, token: str, now: datetime) -> Challenge | None:
    """The challenge of ``token`` if it is unused, unexpired and has attempts left."""
    if not token.startswith(MFA_PREFIX):
        return None
    row = conn.execute(select(mfa_challenges).where(mfa_challenges.c.token_hash == token_hash(token))).first()
    if row is None:
        return None
    m = row._mapping
    if m["used_at"] is not None or utc(m["expires_at"]) <= now or m["attempts"] >= MFA_CHALLENGE_MAX_ATTEMPTS:
        return None
    return Challenge(bytes(m["token_hash"]), m["user_id"], utc(m["expires_at"]), m["attempts"])


def fail_challenge(conn: Connection, challenge: Challenge) -> None:
    conn.execute(
        update(mfa_challenges)
        .where(mfa_challenges.c.token_hash == challenge.token_hash)
        .values(attempts=mfa_challenges.c.attempts + 1)
    )


def consume_challenge(conn: Connection, challenge: Challenge, now: datetime) -> bool:
    """Spend the challenge: exactly one concurrent caller gets True."""
    return bool(
        conn.execute(
            update(mfa_challenges)
            .where(
                mfa_challenges.c.token_hash == challenge.token_hash,
                mfa_challenges.c.used_at.is_(None),
                mfa_challenges.c.attempts < MFA_CHALLENGE_MAX_ATTEMPTS,
            )
            .values(used_at=now)
        ).rowcount
    )


def revoke_challenges(conn: Connection, user_id: str, now: datetime) -> None:
    conn.execute(
        update(mfa_challenges)
        .where(mfa_challenges.c.user_id == user_id, mfa_challenges.c.used_at.is_(None))
        .values(used_at=now)
    )
