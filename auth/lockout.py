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

Every path that checks a secret (password, TOTP, recovery code, and any later authenticator)
first *reserves* its attempt with ``reserve``: one atomic statement that refuses it if a delay
runs, the cap is reached or the address window is full, and otherwise counts it as a failure,
delay included, before the secret is checked. Only a reserved attempt runs argon2 or TOTP; a
right secret then gives the attempt back (``settle``), a wrong one is already counted. So a
burst of guesses released at the end of a delay gets exactly one evaluation, and the counter
never passes the cap. Attempts refused while a delay runs are not counted: otherwise anyone
could push an account to the disable cap without waiting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    and_,
    case,
    delete,
    false,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from auth.storage import utc
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
# A refused reservation is re-read for its Retry-After; if a reset slipped in between, retry.
_RACE_RETRIES = 3


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
        # A shift, not 2**n: doublings is never negative here, and ** of two ints is typed as Any.
        return min(self.base_delay * (1 << doublings), self.max_delay)


class Scope(StrEnum):
    """Which counter a key belongs to (named in the audit log's ``auth.locked`` entries)."""

    ACCOUNT = "account"
    DEVICE = "device"
    ADDRESS = "address"


def scope_of(key: str) -> Scope:
    if key.startswith(_ADDRESS):
        return Scope.ADDRESS
    if key.startswith(_DEVICE):
        return Scope.DEVICE
    if key.startswith(_ACCOUNT):
        return Scope.ACCOUNT
    raise ValueError(f"not a throttle key: {key!r}")


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
    """State of a counter with one more failure counted."""

    key: str
    failures: int
    locked_until: datetime | None
    disabled: bool
    newly_locked: bool  # this failure started a delay or the disable


@dataclass(frozen=True)
class Reservation:
    """One attempt, already counted as a failure before its secret is checked.

    ``failure`` is the counter's state if the attempt fails: it is already written, delay and
    disable included, so nothing more is stored then. ``settle`` gives it back or resets the
    counter when the secret was right."""

    failure: Failure
    window_started_at: datetime

    @property
    def key(self) -> str:
        return self.failure.key

    @property
    def scope(self) -> Scope:
        return scope_of(self.failure.key)


class Outcome(Enum):
    """What the checked secret turned out to be, for ``settle``."""

    FAILED = "failed"  # wrong: the attempt stays counted
    PASSED = "passed"  # right, but not a completed sign-in (a first factor, a new TOTP): given back
    AUTHENTICATED = "authenticated"  # a completed sign-in or step-up: consecutive failures start over


def check(conn: Connection, key: str, now: datetime, policy: ThrottlePolicy) -> Block | None:
    """Whether ``key`` refuses attempts now (a read, for answers; ``reserve`` is the gate)."""
    row = conn.execute(select(login_throttle).where(login_throttle.c.key == key)).first()
    if row is None:
        return None
    if row.disabled or (scope_of(key) is not Scope.ADDRESS and row.failures >= policy.disable_after):
        return Block(key, policy.max_delay, True)
    until = utc(row.locked_until)
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


def _at(value: datetime) -> Any:
    return literal(value, DateTime(timezone=True))


def _delay_after(attempt: ColumnElement[int], now: datetime, policy: ThrottlePolicy) -> Any:
    """SQL for "the end of the delay that ``attempt`` failures start". The schedule has a few
    steps before it reaches ``max_delay`` (8 with the defaults), so it is spelt out as a CASE of
    instants computed here: no date arithmetic or power function in SQL, which SQLite and
    PostgreSQL spell differently (or, in SQLite's case, may lack)."""
    steps: list[tuple[ColumnElement[bool], Any]] = [(attempt < policy.free_failures, null())]
    n = policy.free_failures
    while (delay := policy.account_delay(n)) < policy.max_delay:
        steps.append((attempt == n, _at(now + timedelta(seconds=delay))))
        n += 1
    return case(*steps, else_=_at(now + timedelta(seconds=policy.max_delay)))


def _reserve_consecutive(conn: Connection, key: str, now: datetime, policy: ThrottlePolicy) -> Reservation | None:
    t = login_throttle
    attempt = t.c.failures + 1
    first_delay = policy.account_delay(1)
    stmt = (
        _insert_for(conn)(t)
        .values(
            key=key,
            failures=1,
            window_started_at=now,
            locked_until=now + timedelta(seconds=first_delay) if first_delay else None,
            disabled=False,
        )
        .on_conflict_do_update(
            index_elements=[t.c.key],
            set_={
                "failures": attempt,
                "locked_until": _delay_after(attempt, now, policy),
                "disabled": attempt >= policy.disable_after,
            },
            # The gate: not disabled, no delay running, under the cap. Evaluated on the row as
            # it is when this statement holds its lock, so concurrent attempts queue on it.
            where=and_(
                t.c.disabled.is_(False),
                or_(t.c.locked_until.is_(None), t.c.locked_until <= _at(now)),
                t.c.failures < policy.disable_after,
            ),
        )
        .returning(t.c.failures, t.c.window_started_at, t.c.locked_until, t.c.disabled)
    )
    row = conn.execute(stmt).first()
    if row is None:
        return None
    count, until, disabled = int(row.failures), utc(row.locked_until), bool(row.disabled)
    newly = count == policy.disable_after if disabled else until is not None
    return Reservation(Failure(key, count, until, disabled, newly), utc(row.window_started_at) or now)


def _reserve_in_window(conn: Connection, key: str, now: datetime, policy: ThrottlePolicy) -> Reservation | None:
    t = login_throttle
    window = timedelta(seconds=policy.address_window)
    expired = t.c.window_started_at <= _at(now - window)
    stmt = (
        _insert_for(conn)(t)
        .values(key=key, failures=1, window_started_at=now, locked_until=None, disabled=False)
        .on_conflict_do_update(
            index_elements=[t.c.key],
            set_={
                "failures": case((expired, 1), else_=t.c.failures + 1),
                "window_started_at": case((expired, _at(now)), else_=t.c.window_started_at),
                "locked_until": case((expired, null()), else_=t.c.locked_until),
            },
            where=or_(expired, t.c.failures < policy.address_limit),
        )
        .returning(t.c.failures, t.c.window_started_at)
    )
    row = conn.execute(stmt).first()
    if row is None:
        return None
    count, started = int(row.failures), utc(row.window_started_at) or now
    if count < policy.address_limit:
        return Reservation(Failure(key, count, None, False, False), started)
    # The last attempt of the window: record until when the address is refused, for Retry-After
    # (the gate above is the count; this is only what the refusal reports).
    until = started + window
    conn.execute(update(t).where(t.c.key == key).values(locked_until=until))
    return Reservation(Failure(key, count, until, False, True), started)


def reserve(conn: Connection, key: str, now: datetime, policy: ThrottlePolicy) -> Reservation | Block:
    """Count one attempt on ``key`` before its secret is checked, if the counter allows one now.

    One ``INSERT … ON CONFLICT DO UPDATE … WHERE <allowed> RETURNING`` both checks the delay,
    the cap (or the address window) and counts the attempt, with the delay that its failure
    would start: the row is locked by the statement (PostgreSQL re-evaluates the WHERE on the
    newest row version under READ COMMITTED; SQLite runs one writer at a time), so concurrent
    attempts released together at the end of a delay get one reservation, the rest a ``Block``.
    Refused attempts are not counted: otherwise anyone could push an account to the disable
    cap without waiting."""
    windowed = scope_of(key) is Scope.ADDRESS
    for _ in range(_RACE_RETRIES):
        got = (_reserve_in_window if windowed else _reserve_consecutive)(conn, key, now, policy)
        if got is not None:
            return got
        block = check(conn, key, now, policy)
        if block is not None:
            return block
        # The refusing row was reset or expired between the two statements: try again.
    return Block(key, 1, False)


def reserve_all(
    conn: Connection, keys: Sequence[str], now: datetime, policy: ThrottlePolicy
) -> tuple[Reservation, ...] | Block:
    """Reserve an attempt on every key, or on none (the first refusing key's ``Block``).

    Keys are taken in the order given, which callers keep fixed (account or device before
    address), so two transactions never wait on each other's rows in opposite orders."""
    savepoint = conn.begin_nested()
    taken: list[Reservation] = []
    for key in keys:
        got = reserve(conn, key, now, policy)
        if isinstance(got, Block):
            savepoint.rollback()
            return got
        taken.append(got)
    savepoint.commit()
    return tuple(taken)


def settle(conn: Connection, reservations: Iterable[Reservation], outcome: Outcome) -> None:
    """Finish reserved attempts. A failure stays counted as reserved. A right secret gives its
    attempt back; a completed sign-in also resets the account's (or device's) consecutive
    failures, as a success always has. Address counters only ever count failures, so they get
    the attempt back either way."""
    if outcome is Outcome.FAILED:
        return
    for r in reservations:
        if outcome is Outcome.AUTHENTICATED and r.scope is not Scope.ADDRESS:
            reset(conn, r.key)
        else:
            _give_back(conn, r)


def _give_back(conn: Connection, r: Reservation) -> None:
    t = login_throttle
    # Only the counter this attempt was reserved on (not one started afresh since a reset).
    mine = and_(t.c.key == r.key, t.c.window_started_at == _at(r.window_started_at), t.c.failures > 0)
    if r.scope is Scope.ADDRESS:
        conn.execute(update(t).where(mine).values(failures=t.c.failures - 1, locked_until=null()))
    else:
        # If this attempt is still the last one counted, the delay or disable it set goes with
        # it (the one before had run out, or it would not have been reserved). If others came
        # since, their delay stands.
        last = t.c.failures == r.failure.failures
        conn.execute(
            update(t)
            .where(mine)
            .values(
                failures=t.c.failures - 1,
                locked_until=case((last, null()), else_=t.c.locked_until),
                disabled=case((last, false()), else_=t.c.disabled),
            )
        )
    conn.execute(delete(t).where(t.c.key == r.key, t.c.failures <= 0))


def failures(conn: Connection, key: str) -> int:
    value = conn.execute(select(login_throttle.c.failures).where(login_throttle.c.key == key)).scalar()
    return int(value or 0)


def reset(conn: Connection, key: str) -> bool:
    """Clear a counter (after a completed sign-in, or an admin's unlock); True if there was one."""
    return bool(conn.execute(delete(login_throttle).where(login_throttle.c.key == key)).rowcount)
