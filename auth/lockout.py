"""Throttling and lockout, kept in the database so it holds across instances and restarts.

Three kinds of counter share one table:

* ``acct:<username>`` counts consecutive failures (password or second factor) of one account.
  After ``free_failures`` a delay starts at ``base_delay`` and doubles with each further failure
  up to ``max_delay``; after ``disable_after`` the account's authenticator is disabled until an
  admin unlocks it (SP 800-63B-4 §3.2.2 caps consecutive failures at 100). Unknown usernames get
  counters too, so a locked answer does not reveal that an account exists.
* ``addr:<source address>`` counts failures from one address across accounts within a window,
  so credential stuffing over many accounts stops without locking those accounts.
* ``dev:<device id>`` counts failures of a known device, which is let through an account's
  temporary delay (the OWASP "device cookie" approach: a stranger cannot shut the owner out).

Each failure is one atomic ``INSERT … ON CONFLICT DO UPDATE SET failures = failures + 1 …
RETURNING``, so 50 concurrent failures count 50. Attempts refused while a delay runs are not
counted: otherwise anyone could push an account to the disable cap without waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from auth.tables import login_throttle

FREE_FAILURES = 5
BASE_DELAY_SECONDS = 30
MAX_DELAY_SECONDS = 3600
DISABLE_AFTER = 100  # SP 800-63B-4 §3.2.2
ADDRESS_LIMIT = 30
ADDRESS_WINDOW_SECONDS = 900

_ACCOUNT = "acct:"
_ADDRESS = "addr:"
_DEVICE = "dev:"


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = FREE_FAILURES
    base_delay: int = BASE_DELAY_SECONDS
    max_delay: int = MAX_DELAY_SECONDS
    disable_after: int = DISABLE_AFTER
    address_limit: int = ADDRESS_LIMIT
    address_window: int = ADDRESS_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.free_failures < self.disable_after:
            raise ValueError("free_failures must be positive and below disable_after")
        if not 0 < self.base_delay <= self.max_delay:
            raise ValueError("base_delay must be positive and at most max_delay")
        if self.address_limit < 1 or self.address_window < 1:
            raise ValueError("the address limit and window must be positive")

    def account_delay(self, failures: int) -> int:
        """Seconds of delay after ``failures`` consecutive failures (0 below the threshold)."""
        if failures < self.free_failures:
            return 0
        doublings = failures - self.free_failures
        if doublings >= 32:  # avoid huge integers; the cap is long reached
            return self.max_delay
        return min(self.base_delay * 2**doublings, self.max_delay)


def account_key(username: str) -> str:
    return _ACCOUNT + username


def address_key(address: str) -> str:
    return _ADDRESS + address[:190]


def device_key(device_id: str) -> str:
    return _DEVICE + device_id


@dataclass(frozen=True)
class Block:
    """A counter that currently refuses attempts."""

    key: str
    retry_after: int
    disabled: bool


@dataclass(frozen=True)
class Failure:
    """State of a counter right after one more failure was added."""

    key: str
    failures: int
    locked_until: datetime | None
    disabled: bool
    newly_locked: bool  # this failure started a delay or the disable


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def check(conn: Connection, key: str, now: datetime, policy: ThrottlePolicy) -> Block | None:
    row = conn.execute(
        select(login_throttle.c.locked_until, login_throttle.c.disabled).where(login_throttle.c.key == key)
    ).first()
    if row is None:
        return None
    if row.disabled:
        return Block(key, policy.max_delay, True)
    until = _utc(row.locked_until)
    if until is not None and until > now:
        return Block(key, math.ceil((until - now).total_seconds()), False)
    return None


def _insert_for(conn: Connection) -> Any:
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise ValueError(f"unsupported database dialect {name!r}")


def _increment(conn: Connection, key: str, now: datetime, window_cutoff: datetime | None) -> tuple[int, datetime]:
    t = login_throttle
    stmt = _insert_for(conn)(t).values(key=key, failures=1, window_started_at=now, locked_until=None, disabled=False)
    if window_cutoff is None:
        changes: dict[str, Any] = {"failures": t.c.failures + 1}
    else:
        expired = t.c.window_started_at < window_cutoff
        changes = {
            "failures": case((expired, 1), else_=t.c.failures + 1),
            "window_started_at": case((expired, now), else_=t.c.window_started_at),
        }
    row = conn.execute(
        stmt.on_conflict_do_update(index_elements=[t.c.key], set_=changes).returning(
            t.c.failures, t.c.window_started_at
        )
    ).one()
    return int(row.failures), _utc(row.window_started_at) or now


def record_account_failure(conn: Connection, key: str, now: datetime, policy: ThrottlePolicy) -> Failure:
    """One more consecutive failure of an account (or device) counter."""
    failures, _ = _increment(conn, key, now, None)
    if failures >= policy.disable_after:
        conn.execute(update(login_throttle).where(login_throttle.c.key == key).values(disabled=True))
        return Failure(key, failures, None, True, failures == policy.disable_after)
    delay = policy.account_delay(failures)
    if not delay:
        return Failure(key, failures, None, False, False)
    until = now + timedelta(seconds=delay)
    conn.execute(update(login_throttle).where(login_throttle.c.key == key).values(locked_until=until))
    return Failure(key, failures, until, False, True)


def record_address_failure(conn: Connection, key: str, now: datetime, policy: ThrottlePolicy) -> Failure:
    """One more failure from a source address within its window."""
    window = timedelta(seconds=policy.address_window)
    failures, started = _increment(conn, key, now, now - window)
    if failures < policy.address_limit:
        return Failure(key, failures, None, False, False)
    until = started + window
    conn.execute(update(login_throttle).where(login_throttle.c.key == key).values(locked_until=until))
    return Failure(key, failures, until, False, failures == policy.address_limit)


def failures(conn: Connection, key: str) -> int:
    value = conn.execute(select(login_throttle.c.failures).where(login_throttle.c.key == key)).scalar()
    return int(value or 0)


def reset(conn: Connection, key: str) -> bool:
    """Clear a counter (after a success, or an admin's unlock); True if there was one."""
    return bool(conn.execute(delete(login_throttle).where(login_throttle.c.key == key)).rowcount)
