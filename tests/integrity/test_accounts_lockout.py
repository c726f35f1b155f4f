"""Lockout on every path that checks a secret, reserved before the check (package API).

Bursts are 50 threads released together by a barrier at the instant a delay ends, on the real
engine (SQLite and PostgreSQL). How many attempts reached argon2 is counted by the hasher
given to the service; how many reached a TOTP or recovery-code check, by the audit entries
that carry the check's verdict."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from auth import lockout
from auth.errors import InvalidCredentials, LoginThrottled
from integrity.accounts import AccountService
from integrity.clock import FrozenClock
from tests.auth.support import (
    ADDRESS,
    STRONG,
    CountingHasher,
    enrolled,
    make_accounts,
    rfc6238,
    secret_from_uri,
    step_of,
)

BURST = 50
NEW_PASSWORD = "another long passphrase here"
KEY = lockout.account_key("alice")


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def accounts(engine: Engine, clock: FrozenClock, hasher: CountingHasher) -> Iterator[AccountService]:
    svc = make_accounts(engine, clock, hasher=hasher)
    yield svc
    svc.audit.close()  # type: ignore[attr-defined]


def _burst(attempt: Callable[[int], object], n: int = BURST) -> list[str]:
    """Run ``attempt(i)`` in ``n`` threads released together; the outcome of each by name."""
    barrier = threading.Barrier(n)

    def run(i: int) -> str:
        barrier.wait(30)
        try:
            attempt(i)
        except (InvalidCredentials, LoginThrottled) as exc:
            return type(exc).__name__
        return "accepted"

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _burst_after_the_free_failures(
    clock: FrozenClock, attempt: Callable[[int], object], during_delay: Callable[[], None] = lambda: None
) -> None:
    """The set-up every burst test shares: ``attempt(0)`` … ``attempt(4)``, each refused as a wrong
    secret, use up the free failures and start the first delay; ``during_delay`` checks what holds
    while it runs; then the delay ends and ``attempt(5)`` … ``attempt(BURST + 4)`` arrive at once,
    and exactly one of them is checked (the others are throttled before any check)."""
    for i in range(lockout.FREE_FAILURES):
        with pytest.raises(InvalidCredentials):
            attempt(i)
    during_delay()
    clock.advance(lockout.BASE_DELAY_SECONDS)
    outcomes = _burst(lambda i: attempt(lockout.FREE_FAILURES + i))
    assert sorted(outcomes) == ["InvalidCredentials"] + ["LoginThrottled"] * (BURST - 1)


def _failures(engine: Engine, key: str = KEY) -> int:
    with engine.connect() as conn:
        return lockout.failures(conn, key)


def _reasons(svc: AccountService, action: str) -> list[str]:
    return [e.data["reason"] for e in svc.audit.entries() if e.action == action]  # type: ignore[attr-defined]


def _wrong_code(secret: bytes, clock: FrozenClock) -> str:
    valid = {rfc6238(secret, step_of(clock) + d) for d in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


# --- password login ------------------------------------------------------------------------


def test_burst_of_wrong_passwords_at_the_end_of_a_delay_is_evaluated_once(
    accounts: AccountService, engine: Engine, clock: FrozenClock, hasher: CountingHasher
) -> None:
    accounts.create_user("alice", STRONG, "citizen", actor="user:root", reason="r")

    def five_checked() -> None:
        assert hasher.verifications == 5

    _burst_after_the_free_failures(
        clock, lambda i: accounts.login("alice", f"wrong guess {i:03d}", address=f"192.0.2.{i}"), five_checked
    )
    assert hasher.verifications == 6 and _failures(engine) == 6
    assert _reasons(accounts, "auth.login.failed").count("bad_password") == 6
    # The right password during the new (60 s) delay is refused before argon2.
    with pytest.raises(LoginThrottled) as info:
        accounts.login("alice", STRONG, address=ADDRESS)
    assert info.value.retry_after == 60 and hasher.verifications == 6


def test_burst_at_the_cap_disables_at_exactly_the_cap(
    accounts: AccountService, engine: Engine, clock: FrozenClock, hasher: CountingHasher
) -> None:
    accounts.create_user("alice", STRONG, "citizen", actor="user:root", reason="r")
    for i in range(99):
        with pytest.raises(InvalidCredentials):
            accounts.login("alice", f"guess {i:04d} of the botnet", address=f"10.0.{i}.1")
        clock.advance(3600)  # every bot waits out every delay
    outcomes = _burst(lambda i: accounts.login("alice", f"last burst {i:03d}", address=f"192.0.2.{i}"))
    assert sorted(outcomes) == ["InvalidCredentials"] + ["LoginThrottled"] * (BURST - 1)
    assert hasher.verifications == 100 and _failures(engine) == 100
    locked = [e for e in accounts.audit.entries() if e.action == "auth.locked"]  # type: ignore[attr-defined]
    assert locked[-1].data["disabled"] is True and locked[-1].data["failures"] == 100
    clock.advance(30 * 86400)
    with pytest.raises(LoginThrottled):
        accounts.login("alice", STRONG, address=ADDRESS)
    assert hasher.verifications == 100 and _failures(engine) == 100
    assert _reasons(accounts, "auth.login.failed")[-1] == "account_disabled"


def test_fresh_burst_is_evaluated_only_up_to_the_first_delay(
    accounts: AccountService, engine: Engine, hasher: CountingHasher
) -> None:
    accounts.create_user("alice", STRONG, "citizen", actor="user:root", reason="r")
    outcomes = _burst(lambda i: accounts.login("alice", f"burst guess {i:03d}", address=f"192.0.2.{i}"))
    # Five free failures; the fifth reservation starts the delay that refuses the rest.
    assert sorted(outcomes) == ["InvalidCredentials"] * 5 + ["LoginThrottled"] * (BURST - 5)
    assert hasher.verifications == 5 and _failures(engine) == 5


def test_right_password_gives_its_attempt_back_without_resetting_before_mfa(
    accounts: AccountService, engine: Engine, clock: FrozenClock
) -> None:
    secret, _, _ = enrolled(accounts, clock)
    for i in range(3):
        with pytest.raises(InvalidCredentials):
            accounts.login("alice", f"wrong password {i}", address=ADDRESS)
    step1 = accounts.login("alice", STRONG, address=ADDRESS)
    assert step1.mfa_token and _failures(engine) == 3  # the password alone resets nothing
    assert accounts.complete_mfa(step1.mfa_token, code=rfc6238(secret, step_of(clock)), address=ADDRESS).token
    assert _failures(engine) == 0
    assert _failures(engine, lockout.address_key(ADDRESS)) == 3  # an address counts failures only


# --- password change -----------------------------------------------------------------------


def test_password_change_is_locked_out_and_a_burst_is_evaluated_once(
    accounts: AccountService, engine: Engine, clock: FrozenClock, hasher: CountingHasher
) -> None:
    accounts.create_user("alice", STRONG, "citizen", actor="user:root", reason="r")
    token = accounts.login("alice", STRONG, address=ADDRESS).token
    assert token
    before = hasher.verifications

    def during_delay() -> None:
        assert hasher.verifications == before + 5 and _failures(engine) == 5
        # The right current password during the delay: refused, argon2 never runs, nothing changes.
        with pytest.raises(LoginThrottled) as info:
            accounts.change_password(token, STRONG, NEW_PASSWORD, address=ADDRESS)
        assert info.value.retry_after == 30 and hasher.verifications == before + 5
        assert accounts.authenticate_session(token) is not None
        # The delay is the account's: the login is refused too.
        with pytest.raises(LoginThrottled):
            accounts.login("alice", STRONG, address="198.51.100.77")

    _burst_after_the_free_failures(
        clock,
        lambda i: accounts.change_password(token, f"wrong current {i:03d}", NEW_PASSWORD, address=ADDRESS),
        during_delay,
    )
    assert hasher.verifications == before + 6 and _failures(engine) == 6
    reasons = _reasons(accounts, "auth.password.change_failed")
    assert reasons.count("bad_password") == 6 and reasons.count("throttled_account") == BURST
    clock.advance(60)
    assert accounts.change_password(token, STRONG, NEW_PASSWORD, address=ADDRESS)
    assert _failures(engine) == 6  # a password change is not a sign-in: earlier failures stand


# --- second factors ------------------------------------------------------------------------


def test_step_up_burst_at_the_end_of_a_delay_checks_one_code(
    accounts: AccountService, engine: Engine, clock: FrozenClock
) -> None:
    secret, _, token = enrolled(accounts, clock)

    def right_code_refused() -> None:
        with pytest.raises(LoginThrottled):
            accounts.step_up(token, code=rfc6238(secret, step_of(clock)), address=ADDRESS)
        assert _failures(engine) == 5

    _burst_after_the_free_failures(
        clock, lambda i: accounts.step_up(token, code=_wrong_code(secret, clock), address=ADDRESS), right_code_refused
    )
    reasons = _reasons(accounts, "auth.mfa.stepup.failed")
    assert reasons.count("bad_totp") == 6 and reasons.count("throttled_account") == BURST
    assert _failures(engine) == 6


@pytest.mark.parametrize("factor", ["code", "recovery_code"])
def test_mfa_burst_at_the_end_of_a_delay_checks_one_factor(
    factor: str, accounts: AccountService, engine: Engine, clock: FrozenClock
) -> None:
    secret, codes, _ = enrolled(accounts, clock)
    tokens = [accounts.login("alice", STRONG, address=ADDRESS).mfa_token for _ in range(BURST + 5)]
    assert all(tokens) and _failures(engine) == 0
    reason = "bad_totp" if factor == "code" else "bad_recovery_code"

    def wrong() -> str:
        return _wrong_code(secret, clock) if factor == "code" else "aaaa-bbbb-cccc-dddd"

    # One login (and so one MFA token) per attempt: tokens[:5] fail first, tokens[5:] are the burst.
    _burst_after_the_free_failures(
        clock, lambda i: accounts.complete_mfa(str(tokens[i]), address=ADDRESS, **{factor: wrong()})
    )
    assert _reasons(accounts, "auth.login.failed").count(reason) == 6 and _failures(engine) == 6

    # A right factor during the delay is refused too, and spends nothing.
    def right() -> str:
        return rfc6238(secret, step_of(clock)) if factor == "code" else codes[0]

    with pytest.raises(LoginThrottled):
        accounts.complete_mfa(str(tokens[-1]), address=ADDRESS, **{factor: right()})
    clock.advance(60)
    assert accounts.complete_mfa(str(tokens[-1]), address=ADDRESS, **{factor: right()}).token
    assert _failures(engine) == 0


def test_enrolment_code_is_locked_out_like_any_code(
    accounts: AccountService, engine: Engine, clock: FrozenClock
) -> None:
    accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="r")
    token = accounts.login("alice", STRONG, address=ADDRESS).token
    assert token
    secret = secret_from_uri(accounts.begin_totp_enrolment(token).otpauth_uri)
    for _ in range(5):
        with pytest.raises(InvalidCredentials):
            accounts.confirm_totp_enrolment(token, _wrong_code(secret, clock))
    with pytest.raises(LoginThrottled):
        accounts.confirm_totp_enrolment(token, rfc6238(secret, step_of(clock)))
    assert not accounts.status(token).mfa_enabled and _failures(engine) == 5
    clock.advance(30)
    assert accounts.confirm_totp_enrolment(token, rfc6238(secret, step_of(clock))).token
    assert _failures(engine) == 5  # a new secret's code proves nothing about the account


# --- sessions ------------------------------------------------------------------------------


def test_refreshing_or_rotating_a_session_never_resets_a_counter(
    accounts: AccountService, engine: Engine, clock: FrozenClock
) -> None:
    accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="r")
    token = accounts.login("alice", STRONG, address=ADDRESS).token
    assert token
    secret = secret_from_uri(accounts.begin_totp_enrolment(token).otpauth_uri)
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            accounts.confirm_totp_enrolment(token, _wrong_code(secret, clock))
    clock.advance(31)
    assert accounts.status(token).session_kind == "enrol"  # refreshes the idle timer
    assert _failures(engine) == 3
    rotated = accounts.confirm_totp_enrolment(token, rfc6238(secret, step_of(clock))).token  # rotates
    assert rotated != token and _failures(engine) == 3
    clock.advance(31)
    assert accounts.authenticate_session(rotated) is not None and _failures(engine) == 3
    renewed = accounts.change_password(rotated, STRONG, NEW_PASSWORD, address=ADDRESS)  # a new session
    assert accounts.authenticate_session(renewed) is not None and _failures(engine) == 3
    accounts.logout(renewed)
    assert _failures(engine) == 3
