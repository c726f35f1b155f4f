"""Enumeration resistance: an unknown username costs what a wrong password costs."""

from __future__ import annotations

import contextlib
import statistics
import time

from sqlalchemy import Engine

from auth.errors import InvalidCredentials
from auth.lockout import ThrottlePolicy
from auth.passwords import PasswordHasher
from integrity.accounts import AccountService
from integrity.clock import FrozenClock
from tests.auth.support import STRONG, make_accounts

TRIES = 200
TOLERANCE = 0.15
# A cheap but real argon2id: the hash must still dominate the request (as in production,
# where it is 19 MiB), or a missing dummy verification would hide in the database noise.
_HASHER = PasswordHasher(memory_kib=4096, time_cost=1)
# Counters must not start refusing during the measurement.
_NO_DELAY = ThrottlePolicy(free_failures=10_000, disable_after=10_001, address_limit=100_000)


def _timed(svc: AccountService, username: str, password: str) -> float:
    started = time.perf_counter()
    with contextlib.suppress(InvalidCredentials):
        svc.login(username, password, address="198.51.100.1")
    return time.perf_counter() - started


def test_unknown_user_and_wrong_password_take_the_same_time(engine: Engine) -> None:
    clock = FrozenClock()
    svc = make_accounts(engine, clock, throttle=_NO_DELAY, hasher=_HASHER)
    try:
        svc.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
        known: list[float] = []
        unknown: list[float] = []
        for i in range(TRIES):  # interleaved, so drift in machine load hits both alike
            known.append(_timed(svc, "citizen1", f"wrong password {i}"))
            unknown.append(_timed(svc, f"ghost{i}", f"wrong password {i}"))
        k, u = statistics.median(known), statistics.median(unknown)
        assert abs(k - u) / max(k, u) <= TOLERANCE, f"median known {k * 1000:.2f} ms, unknown {u * 1000:.2f} ms"
    finally:
        svc.audit.close()  # type: ignore[attr-defined]
