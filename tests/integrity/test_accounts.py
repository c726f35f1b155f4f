"""Account use cases, one test per attack on accounts plus the ordinary paths."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func, select

from auth import lockout
from auth.errors import (
    InvalidCredentials,
    InvalidUsername,
    LoginThrottled,
    MfaNotEnrolled,
    PasswordTooShort,
    SessionInvalid,
    StepUpRequired,
    UnknownUser,
    UsernameTaken,
)
from auth.lockout import ThrottlePolicy
from auth.passwords import PasswordHasher
from auth.tables import users
from integrity.accounts import AccountService, LoginResult
from integrity.clock import FrozenClock
from tests.auth.support import ADDRESS, STRONG, enrolled, logged, make_accounts, rfc6238, secret_from_uri, step_of


def _actions(svc: AccountService) -> list[str]:
    return [e.action for e in svc.audit.entries()]  # type: ignore[attr-defined]


def _mfa_login(svc: AccountService, clock: FrozenClock, secret: bytes, name: str = "alice") -> LoginResult:
    step1 = svc.login(name, STRONG, address=ADDRESS)
    assert step1.mfa_required and step1.mfa_token and step1.token is None
    return svc.complete_mfa(step1.mfa_token, code=rfc6238(secret, step_of(clock)), address=ADDRESS)


# --- accounts and passwords ----------------------------------------------------------------


def test_one_account_per_normalised_username(accounts: AccountService) -> None:
    accounts.create_user("Nguyen", STRONG, "citizen", actor="user:root", reason="r")
    with pytest.raises(UsernameTaken):
        accounts.create_user("ＮＧＵＹＥＮ", STRONG, "citizen", actor="user:root", reason="r")


def test_weak_password_is_refused_and_nothing_written(accounts: AccountService, engine: Engine) -> None:
    with pytest.raises(PasswordTooShort) as info:
        accounts.create_user("citizen1", "only14 chars!!", "citizen", actor="user:root", reason="r")
    assert info.value.rule == "min_length"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(users)).scalar_one() == 0
    assert _actions(accounts) == []


def test_mfa_accounts_may_have_eight_character_passwords(accounts: AccountService) -> None:
    accounts.create_user("officer8", "8 chars!", "officer", actor="user:root", reason="r")
    assert accounts.login("officer8", "8 chars!", address=ADDRESS).enrolment_required


def test_admin_creation_is_audited_with_admin_and_reason(accounts: AccountService) -> None:
    accounts.create_user("alice", STRONG, "admin", actor="user:root", reason="ticket 42")
    [entry] = logged(accounts, "admin.user.created")
    assert entry.actor == "user:root" and entry.subject == "alice"
    assert entry.data["reason"] == "ticket 42" and entry.data["role"] == "admin"


def test_login_rehashes_a_password_stored_with_older_parameters(engine: Engine, clock: FrozenClock) -> None:
    weak = make_accounts(engine, clock, hasher=PasswordHasher(memory_kib=512, time_cost=1))
    weak.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    weak.audit.close()  # type: ignore[attr-defined]
    strong = make_accounts(engine, clock, hasher=PasswordHasher(memory_kib=1024, time_cost=1))
    try:
        assert strong.login("citizen1", STRONG, address=ADDRESS).token
        with engine.connect() as conn:
            stored = conn.execute(select(users.c.password_hash)).scalar_one()
        assert "m=1024,t=1,p=1" in stored
        assert "auth.password.rehashed" in _actions(strong)
        assert strong.login("citizen1", STRONG, address=ADDRESS).token
    finally:
        strong.audit.close()  # type: ignore[attr-defined]


# --- login, sessions, fixation -------------------------------------------------------------


def test_single_factor_login_gives_a_full_session(accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    result = accounts.login("Citizen1", STRONG, address=ADDRESS)
    assert result.token and not result.mfa_required and not result.enrolment_required
    principal = accounts.authenticate_session(result.token)
    assert principal is not None and principal.actor == "user:citizen1" and principal.scopes == {"verify"}
    [ok] = logged(accounts, "auth.login.succeeded")
    assert ok.data["method"] == "password"


def test_session_token_changes_at_every_login(accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    tokens = {accounts.login("citizen1", STRONG, address=ADDRESS).token for _ in range(3)}
    assert len(tokens) == 3


def test_mfa_required_account_gets_only_an_enrolment_session(accounts: AccountService) -> None:
    accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="r")
    result = accounts.login("alice", STRONG, address=ADDRESS)
    assert result.enrolment_required and result.token
    assert accounts.authenticate_session(result.token) is None
    assert accounts.status(result.token).session_kind == "enrol"


def test_enrolment_confirmation_rotates_the_session_and_revokes_others(
    accounts: AccountService, clock: FrozenClock
) -> None:
    accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="r")
    other = accounts.login("alice", STRONG, address=ADDRESS).token
    first = accounts.login("alice", STRONG, address=ADDRESS).token
    assert other and first
    secret = secret_from_uri(accounts.begin_totp_enrolment(first).otpauth_uri)
    done = accounts.confirm_totp_enrolment(first, rfc6238(secret, step_of(clock)))
    assert len(done.recovery_codes) == 10 and done.token != first
    for dead in (first, other):
        with pytest.raises(SessionInvalid):
            accounts.status(dead)
    assert accounts.authenticate_session(done.token) is not None


def test_wrong_enrolment_code_does_not_activate_totp(accounts: AccountService, clock: FrozenClock) -> None:
    accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="r")
    token = accounts.login("alice", STRONG, address=ADDRESS).token
    assert token
    secret = secret_from_uri(accounts.begin_totp_enrolment(token).otpauth_uri)
    wrong = f"{(int(rfc6238(secret, step_of(clock))) + 1) % 1_000_000:06d}"
    with pytest.raises(InvalidCredentials):
        accounts.confirm_totp_enrolment(token, wrong)
    assert not accounts.status(token).mfa_enabled


def test_logout_revokes_the_session(accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    token = accounts.login("citizen1", STRONG, address=ADDRESS).token
    assert token
    accounts.logout(token)
    assert accounts.authenticate_session(token) is None
    with pytest.raises(SessionInvalid):
        accounts.logout(token)


def test_idle_and_absolute_timeouts(engine: Engine, clock: FrozenClock, accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    token = accounts.login("citizen1", STRONG, address=ADDRESS).token
    assert token
    clock.advance(1799)
    assert accounts.authenticate_session(token) is not None
    clock.advance(1799)  # used a moment ago: still alive
    assert accounts.authenticate_session(token) is not None
    clock.advance(1800)
    assert accounts.authenticate_session(token) is None
    busy = accounts.login("citizen1", STRONG, address=ADDRESS).token
    assert busy
    for _ in range(8 * 3600 // 1200 - 1):
        clock.advance(1200)
        assert accounts.authenticate_session(busy) is not None
    clock.advance(1200)
    assert accounts.authenticate_session(busy) is None


def test_password_change_revokes_every_session(accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    a = accounts.login("citizen1", STRONG, address=ADDRESS).token
    b = accounts.login("citizen1", STRONG, address=ADDRESS).token
    assert a and b
    new_token = accounts.change_password(a, STRONG, "another long passphrase here", address=ADDRESS)
    assert accounts.authenticate_session(a) is None and accounts.authenticate_session(b) is None
    assert accounts.authenticate_session(new_token) is not None
    with pytest.raises(InvalidCredentials):
        accounts.login("citizen1", STRONG, address=ADDRESS)
    assert accounts.login("citizen1", "another long passphrase here", address=ADDRESS).token


# --- failures, enumeration -----------------------------------------------------------------


def test_wrong_password_and_unknown_user_get_the_same_answer(accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    with pytest.raises(InvalidCredentials) as wrong:
        accounts.login("citizen1", "not the password at all", address=ADDRESS)
    with pytest.raises(InvalidCredentials) as unknown:
        accounts.login("nobody", "not the password at all", address=ADDRESS)
    with pytest.raises(InvalidCredentials) as invalid:
        accounts.login("bad name", "not the password at all", address=ADDRESS)
    assert str(wrong.value) == str(unknown.value) == str(invalid.value)
    reasons = [(e.subject, e.data["reason"]) for e in logged(accounts, "auth.login.failed")]
    assert reasons == [
        ("citizen1", "bad_password"),
        ("unknown-user", "unknown_user"),
        ("unknown-user", "invalid_username"),
    ]


def test_unknown_usernames_lock_like_real_ones(accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    answers = []
    for name in ("citizen1", "nobody"):
        for i in range(6):
            try:
                accounts.login(name, f"wrong password number {i}", address=f"198.51.100.{i}")
            except (InvalidCredentials, LoginThrottled) as exc:
                answers.append((name, type(exc).__name__, getattr(exc, "retry_after", None)))
    known = [a[1:] for a in answers if a[0] == "citizen1"]
    unknown = [a[1:] for a in answers if a[0] == "nobody"]
    assert known == unknown and known[-1] == ("LoginThrottled", 30)


def test_locked_account_answers_the_same_whatever_the_password(accounts: AccountService, clock: FrozenClock) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    for i in range(5):
        with pytest.raises(InvalidCredentials):
            accounts.login("citizen1", f"wrong password number {i}", address=f"198.51.100.{i}")
    clock.advance(10)
    with pytest.raises(LoginThrottled) as right:
        accounts.login("citizen1", STRONG, address=ADDRESS)
    with pytest.raises(LoginThrottled) as wrong:
        accounts.login("citizen1", "wrong again and again", address=ADDRESS)
    assert right.value.retry_after == wrong.value.retry_after == 20
    assert str(right.value) == str(wrong.value)
    assert right.value.problem_headers == {"Retry-After": "20"}
    clock.advance(20)
    assert accounts.login("citizen1", STRONG, address=ADDRESS).token


def test_distributed_guessing_stops_at_the_cap_until_an_admin_unlocks(
    accounts: AccountService, clock: FrozenClock
) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    for i in range(100):
        with pytest.raises(InvalidCredentials):
            accounts.login("citizen1", f"guess {i:04d} of the botnet", address=f"10.{i // 250}.{i % 250}.1")
        clock.advance(3601)  # every bot waits out every delay
    with pytest.raises(LoginThrottled) as info:
        accounts.login("citizen1", STRONG, address=ADDRESS)
    assert info.value.retry_after == 3600
    clock.advance(30 * 86400)
    with pytest.raises(LoginThrottled):
        accounts.login("citizen1", STRONG, address=ADDRESS)
    locked = logged(accounts, "auth.locked")
    assert locked[-1].data["disabled"] is True and locked[-1].data["failures"] == 100
    with pytest.raises(UnknownUser):
        accounts.unlock("nobody", actor="user:root", reason="r")
    accounts.unlock("citizen1", actor="user:root", reason="owner called the help desk")
    [unlock] = logged(accounts, "admin.user.unlocked")
    assert unlock.actor == "user:root" and unlock.data["reason"] == "owner called the help desk"
    assert accounts.login("citizen1", STRONG, address=ADDRESS).token


def test_credential_stuffing_from_one_address_stops_without_locking_accounts(
    engine: Engine, clock: FrozenClock
) -> None:
    svc = make_accounts(engine, clock, throttle=ThrottlePolicy(address_limit=20, address_window=900))
    try:
        names = [f"citizen{i:02d}" for i in range(50)]
        for name in names:
            svc.create_user(name, STRONG, "citizen", actor="user:root", reason="r")
        outcomes = []
        for name in names:
            try:
                svc.login(name, "leaked password from elsewhere", address="192.0.2.66")
            except (InvalidCredentials, LoginThrottled) as exc:
                outcomes.append(type(exc).__name__)
        assert outcomes[:20] == ["InvalidCredentials"] * 20 and outcomes[20:] == ["LoginThrottled"] * 30
        with engine.connect() as conn:
            assert all(lockout.check(conn, lockout.account_key(n), clock(), svc.policy.throttle) is None for n in names)
            assert max(lockout.failures(conn, lockout.account_key(n)) for n in names) == 1
        # The owners, from their own addresses, are not affected.
        assert svc.login("citizen49", STRONG, address="203.0.113.50").token
        [locked] = logged(svc, "auth.locked")
        assert locked.data["scope"] == "address"
    finally:
        svc.audit.close()  # type: ignore[attr-defined]


def test_known_device_gets_through_a_delay_caused_elsewhere(accounts: AccountService, clock: FrozenClock) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    device = accounts.login("citizen1", STRONG, address=ADDRESS).device_token
    assert device
    for i in range(8):
        with pytest.raises((InvalidCredentials, LoginThrottled)):
            accounts.login("citizen1", f"attacker guess {i}", address="198.51.100.99")
        clock.advance(31)
    with pytest.raises(LoginThrottled):
        accounts.login("citizen1", STRONG, address=ADDRESS)
    result = accounts.login("citizen1", STRONG, address=ADDRESS, device_token=device)
    assert result.token
    [ok] = [e for e in logged(accounts, "auth.login.succeeded") if e.data["device_known"]]
    assert ok.subject == "citizen1"


def test_device_token_of_another_account_does_not_help(accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    accounts.create_user("citizen2", STRONG, "citizen", actor="user:root", reason="r")
    foreign = accounts.login("citizen2", STRONG, address=ADDRESS).device_token
    for i in range(5):
        with pytest.raises(InvalidCredentials):
            accounts.login("citizen1", f"attacker guess {i}", address="198.51.100.99")
    with pytest.raises(LoginThrottled):
        accounts.login("citizen1", STRONG, address=ADDRESS, device_token=foreign)


def test_known_device_is_throttled_on_its_own_failures(accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    device = accounts.login("citizen1", STRONG, address=ADDRESS).device_token
    for i in range(5):
        with pytest.raises(InvalidCredentials):
            accounts.login("citizen1", f"stolen laptop guess {i}", address=ADDRESS, device_token=device)
    with pytest.raises(LoginThrottled):
        accounts.login("citizen1", STRONG, address=ADDRESS, device_token=device)
    # The failures were the device's: the account itself is not delayed for others.
    assert accounts.login("citizen1", STRONG, address="203.0.113.99").token


def test_fifty_concurrent_wrong_passwords_count_fifty(engine: Engine, clock: FrozenClock) -> None:
    # Delays start later than 50 here, so every attempt is evaluated and must be counted.
    policy = ThrottlePolicy(free_failures=60, disable_after=100, address_limit=1000)
    svc = make_accounts(engine, clock, throttle=policy)
    try:
        svc.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")

        def attempt(i: int) -> str:
            try:
                svc.login("citizen1", f"wrong password {i:03d}", address=f"198.51.100.{i}")
            except InvalidCredentials:
                return "refused"
            return "accepted"

        with ThreadPoolExecutor(10) as pool:
            assert set(pool.map(attempt, range(50))) == {"refused"}
        with engine.connect() as conn:
            assert lockout.failures(conn, lockout.account_key("citizen1")) == 50
        assert len(logged(svc, "auth.login.failed")) == 50
    finally:
        svc.audit.close()  # type: ignore[attr-defined]


# --- TOTP and recovery codes through the login -----------------------------------------------


def test_mfa_login_gives_a_session_with_recent_second_factor(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    result = _mfa_login(accounts, clock, secret)
    assert result.token and accounts.require_step_up(result.token).name == "alice"


def test_totp_replay_same_code_twice_is_refused(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    code = rfc6238(secret, step_of(clock))
    first = accounts.login("alice", STRONG, address=ADDRESS)
    assert first.mfa_token and accounts.complete_mfa(first.mfa_token, code=code, address=ADDRESS).token
    second = accounts.login("alice", STRONG, address=ADDRESS)
    assert second.mfa_token
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa(second.mfa_token, code=code, address=ADDRESS)
    assert logged(accounts, "auth.login.failed")[-1].data["reason"] == "replayed_totp"


def test_totp_code_of_an_earlier_step_is_refused(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    assert _mfa_login(accounts, clock, secret).token
    older = rfc6238(secret, step_of(clock) - 1)
    step1 = accounts.login("alice", STRONG, address=ADDRESS)
    assert step1.mfa_token
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa(step1.mfa_token, code=older, address=ADDRESS)


def test_enrolment_code_cannot_log_in(accounts: AccountService, clock: FrozenClock) -> None:
    accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="r")
    token = accounts.login("alice", STRONG, address=ADDRESS).token
    assert token
    secret = secret_from_uri(accounts.begin_totp_enrolment(token).otpauth_uri)
    code = rfc6238(secret, step_of(clock))
    accounts.confirm_totp_enrolment(token, code)
    step1 = accounts.login("alice", STRONG, address=ADDRESS)
    assert step1.mfa_token
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa(step1.mfa_token, code=code, address=ADDRESS)


def test_concurrent_double_use_of_one_totp_code_gives_one_session(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    code = rfc6238(secret, step_of(clock))
    tokens = [accounts.login("alice", STRONG, address=ADDRESS).mfa_token for _ in range(6)]

    def attempt(token: str | None) -> bool:
        assert token
        try:
            return accounts.complete_mfa(token, code=code, address=ADDRESS).token is not None
        except InvalidCredentials:
            return False

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(attempt, tokens)).count(True) == 1


def test_recovery_code_logs_in_once_and_is_flagged(accounts: AccountService, clock: FrozenClock) -> None:
    _, codes, _ = enrolled(accounts, clock)
    step1 = accounts.login("alice", STRONG, address=ADDRESS)
    assert step1.mfa_token
    result = accounts.complete_mfa(step1.mfa_token, recovery_code=codes[0], address=ADDRESS)
    assert result.token
    status = accounts.status(result.token)
    assert status.recovery_code_used_at == clock() and status.recovery_codes_left == 9
    [used] = logged(accounts, "auth.recovery.used")
    assert used.data == {"remaining": 9}
    again = accounts.login("alice", STRONG, address=ADDRESS)
    assert again.mfa_token
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa(again.mfa_token, recovery_code=codes[0], address=ADDRESS)
    assert logged(accounts, "auth.login.failed")[-1].data["reason"] == "spent_recovery_code"


def test_concurrent_reuse_of_a_recovery_code_gives_one_session(accounts: AccountService, clock: FrozenClock) -> None:
    _, codes, _ = enrolled(accounts, clock)
    tokens = [accounts.login("alice", STRONG, address=ADDRESS).mfa_token for _ in range(6)]

    def attempt(token: str | None) -> bool:
        assert token
        try:
            return accounts.complete_mfa(token, recovery_code=codes[5], address=ADDRESS).token is not None
        except InvalidCredentials:
            return False

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(attempt, tokens)).count(True) == 1


def test_second_factor_failures_count_toward_the_account_lock(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    for _ in range(5):
        step1 = accounts.login("alice", STRONG, address=ADDRESS)
        assert step1.mfa_token
        with pytest.raises(InvalidCredentials):
            accounts.complete_mfa(
                step1.mfa_token,
                code="000000" if rfc6238(secret, step_of(clock)) != "000000" else "111111",
                address=ADDRESS,
            )
    with pytest.raises(LoginThrottled):
        accounts.login("alice", STRONG, address=ADDRESS)


# --- MFA bypass attempts -------------------------------------------------------------------


def test_half_logged_in_token_is_refused_everywhere(accounts: AccountService, clock: FrozenClock) -> None:
    enrolled(accounts, clock)
    step1 = accounts.login("alice", STRONG, address=ADDRESS)
    mfa_token = step1.mfa_token
    assert mfa_token
    assert accounts.authenticate_session(mfa_token) is None
    for call in (
        lambda: accounts.status(mfa_token),
        lambda: accounts.logout(mfa_token),
        lambda: accounts.begin_totp_enrolment(mfa_token),
        lambda: accounts.confirm_totp_enrolment(mfa_token, "123456"),
        lambda: accounts.require_step_up(mfa_token),
        lambda: accounts.step_up(mfa_token, code="123456", address=ADDRESS),
        lambda: accounts.regenerate_recovery_codes(mfa_token),
        lambda: accounts.change_password(mfa_token, STRONG, "a brand new long password", address=ADDRESS),
        lambda: accounts.security_events(mfa_token),
    ):
        with pytest.raises(SessionInvalid):
            call()


def test_mfa_token_without_a_factor_or_with_garbage_is_refused(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    step1 = accounts.login("alice", STRONG, address=ADDRESS)
    assert step1.mfa_token
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa(step1.mfa_token, address=ADDRESS)
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa("mfa_forged", code=rfc6238(secret, step_of(clock)), address=ADDRESS)
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa("ses_" + step1.mfa_token[4:], code=rfc6238(secret, step_of(clock)), address=ADDRESS)


def test_used_mfa_token_cannot_be_replayed(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    step1 = accounts.login("alice", STRONG, address=ADDRESS)
    assert step1.mfa_token
    accounts.complete_mfa(step1.mfa_token, code=rfc6238(secret, step_of(clock)), address=ADDRESS)
    clock.advance(30)
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa(step1.mfa_token, code=rfc6238(secret, step_of(clock)), address=ADDRESS)


def test_mfa_token_is_bound_to_its_user(accounts: AccountService, clock: FrozenClock) -> None:
    secret_a, _, _ = enrolled(accounts, clock, "alice")
    enrolled(accounts, clock, "bob")
    step1 = accounts.login("bob", STRONG, address=ADDRESS)
    assert step1.mfa_token
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa(step1.mfa_token, code=rfc6238(secret_a, step_of(clock)), address=ADDRESS)


def test_mfa_token_expires(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    step1 = accounts.login("alice", STRONG, address=ADDRESS)
    assert step1.mfa_token
    clock.advance(301)
    with pytest.raises(InvalidCredentials):
        accounts.complete_mfa(step1.mfa_token, code=rfc6238(secret, step_of(clock)), address=ADDRESS)


def test_enrolment_session_cannot_replace_an_active_factor(accounts: AccountService, clock: FrozenClock) -> None:
    _, _, token = enrolled(accounts, clock)
    clock.advance(301)
    with pytest.raises(StepUpRequired):
        accounts.begin_totp_enrolment(token)


# --- step-up -------------------------------------------------------------------------------


def test_step_up_expires_after_five_minutes_and_rotates_on_renewal(
    accounts: AccountService, clock: FrozenClock
) -> None:
    secret, _, _ = enrolled(accounts, clock)
    token = _mfa_login(accounts, clock, secret).token
    assert token
    clock.advance(300)
    accounts.require_step_up(token)
    clock.advance(1)
    with pytest.raises(StepUpRequired):
        accounts.require_step_up(token)
    clock.advance(30)
    wrong = "000000" if rfc6238(secret, step_of(clock)) != "000000" else "111111"
    with pytest.raises(InvalidCredentials):
        accounts.step_up(token, code=wrong, address=ADDRESS)
    renewed = accounts.step_up(token, code=rfc6238(secret, step_of(clock)), address=ADDRESS)
    assert renewed != token and accounts.authenticate_session(token) is None
    assert accounts.require_step_up(renewed).name == "alice"
    assert [e.data.get("reason") for e in logged(accounts, "auth.mfa.stepup.failed")] == ["bad_totp"]


def test_step_up_needs_an_enrolled_factor(accounts: AccountService) -> None:
    accounts.create_user("citizen1", STRONG, "citizen", actor="user:root", reason="r")
    token = accounts.login("citizen1", STRONG, address=ADDRESS).token
    assert token
    with pytest.raises(StepUpRequired):
        accounts.require_step_up(token)
    with pytest.raises(MfaNotEnrolled):
        accounts.step_up(token, code="123456", address=ADDRESS)


def test_new_recovery_codes_need_a_fresh_second_factor(accounts: AccountService, clock: FrozenClock) -> None:
    secret, old_codes, _ = enrolled(accounts, clock)
    token = _mfa_login(accounts, clock, secret).token
    assert token
    fresh = accounts.regenerate_recovery_codes(token)
    assert len(fresh) == 10 and not set(fresh) & set(old_codes)
    clock.advance(301)
    with pytest.raises(StepUpRequired):
        accounts.regenerate_recovery_codes(token)


# --- admin reset ---------------------------------------------------------------------------


def test_admin_mfa_reset_revokes_sessions_and_forces_re_enrolment(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    token = _mfa_login(accounts, clock, secret).token
    assert token
    accounts.reset_mfa("Alice", actor="user:root", reason="phone lost")
    assert accounts.authenticate_session(token) is None
    after = accounts.login("alice", STRONG, address=ADDRESS)
    assert after.enrolment_required and not after.mfa_required
    [reset] = logged(accounts, "admin.user.mfa_reset")
    assert reset.actor == "user:root" and reset.data["reason"] == "phone lost" and reset.data["sessions_revoked"] >= 1
    assert after.token and accounts.status(after.token).recovery_codes_left == 0


def test_unknown_user_for_admin_operations(accounts: AccountService) -> None:
    with pytest.raises(UnknownUser):
        accounts.reset_mfa("ghost", actor="user:root", reason="r")
    with pytest.raises(InvalidUsername):
        accounts.create_user("bad name", STRONG, "citizen", actor="user:root", reason="r")


# --- the audit log holds no secrets --------------------------------------------------------


def test_security_events_list_the_accounts_own_history(accounts: AccountService, clock: FrozenClock) -> None:
    secret, _, _ = enrolled(accounts, clock)
    enrolled(accounts, clock, "bob")
    token = _mfa_login(accounts, clock, secret).token
    assert token
    events = accounts.security_events(token)
    assert events[0].action == "auth.login.succeeded"
    assert {"admin.user.created", "auth.mfa.enrolled"} <= {e.action for e in events}
    assert all(e.seq != 0 or e.action == "admin.user.created" for e in events)
    assert [e.seq for e in events] == sorted((e.seq for e in events), reverse=True)
