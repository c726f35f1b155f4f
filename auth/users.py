"""People's accounts: one row per NFKC-normalised, case-folded username."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from auth.confusables import mixed_script_confusable, skeleton
from auth.errors import UsernameConfusable, UsernameTaken
from auth.passwords import normalise_username
from auth.roles import parse_role
from auth.storage import insert_unique, utc
from auth.tables import users

_USER_ID_BYTES = 16


@dataclass(frozen=True)
class User:
    user_id: str
    username: str
    role: str
    password_hash: str
    mfa_required: bool
    created_at: datetime
    password_changed_at: datetime
    recovery_used_at: datetime | None


def _row_to_user(row: Row[Any]) -> User:
    m = row._mapping
    return User(
        user_id=m["user_id"],
        username=m["username"],
        role=m["role"],
        password_hash=m["password_hash"],
        mfa_required=bool(m["mfa_required"]),
        created_at=utc(m["created_at"]),
        password_changed_at=utc(m["password_changed_at"]),
        recovery_used_at=utc(m["recovery_used_at"]),
    )


def create(
    conn: Connection, username: str, role: str, password_hash: str, *, mfa_required: bool, now: datetime
) -> User:
    """Insert an account; ``UsernameTaken`` if the normalised name exists, ``UsernameConfusable``
    if it mixes scripts with look-alike letters or looks like an existing name (TR39). The
    unique indexes decide, so two concurrent creations cannot both succeed."""
    name = normalise_username(username)
    if mixed_script_confusable(name):
        raise UsernameConfusable(
            f"the username {name!r} mixes letters of different scripts that look alike (e.g. Cyrillic 'а' "
            "and Latin 'a'); use one script"
        )
    mark = skeleton(name)
    user = User(secrets.token_hex(_USER_ID_BYTES), name, parse_role(role), password_hash, mfa_required, now, now, None)
    _refuse_existing(conn, name, mark)
    row = {
        "user_id": user.user_id,
        "username": name,
        "username_skeleton": mark,
        "role": user.role,
        "password_hash": password_hash,
        "mfa_required": mfa_required,
        "created_at": now,
        "password_changed_at": now,
        "recovery_used_at": None,
    }
    if not insert_unique(conn, users, row):
        _refuse_existing(conn, name, mark)  # says which index refused it
        raise UsernameTaken(f"the username {name!r} is taken")
    return user


def _refuse_existing(conn: Connection, name: str, mark: str) -> None:
    if by_name(conn, name) is not None:
        raise UsernameTaken(f"the username {name!r} is taken")
    twin = conn.execute(select(users.c.username).where(users.c.username_skeleton == mark)).scalar()
    if twin is not None:
        raise UsernameConfusable(f"the username {name!r} looks like the existing account {twin!r}")


def by_name(conn: Connection, normalised: str) -> User | None:
    row = conn.execute(select(users).where(users.c.username == normalised)).first()
    return _row_to_user(row) if row is not None else None


def by_id(conn: Connection, user_id: str) -> User | None:
    row = conn.execute(select(users).where(users.c.user_id == user_id)).first()
    return _row_to_user(row) if row is not None else None


def set_password_hash(conn: Connection, user_id: str, password_hash: str, now: datetime | None = None) -> None:
    """Store a new hash; ``now`` marks a password change (None: a rehash of the same password)."""
    values: dict[str, object] = {"password_hash": password_hash}
    if now is not None:
        values["password_changed_at"] = now
    conn.execute(update(users).where(users.c.user_id == user_id).values(**values))


def set_mfa_required(conn: Connection, user_id: str, required: bool) -> None:
    conn.execute(update(users).where(users.c.user_id == user_id).values(mfa_required=required))


def set_recovery_used(conn: Connection, user_id: str, when: datetime | None) -> None:
    conn.execute(update(users).where(users.c.user_id == user_id).values(recovery_used_at=when))
