"""Passkey use cases through their package API: the activation of a personal signature
(``PasskeyService.verify_for_activation``), the relying party taken from the settings, and the
migration that adds the passkey tables, on both back ends."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from pydantic import ValidationError
from sqlalchemy import Engine, inspect

from auth.errors import InvalidCredentials, LoginThrottled, MfaNotEnrolled
from integrity.accounts import AccountService, UserPrincipal
from integrity.clock import FrozenClock
from integrity.migrate import pending, upgrade
from integrity.passkeys import PasskeyService, RelyingParty
from integrity.settings import Settings, relying_party
from tests.auth.passkey_support import SoftAuthenticator, unb64url
from tests.auth.support import ADDRESS, STRONG, enrolled, logged

RP = RelyingParty("bhxh.example", "https://bhxh.example")
MIGRATIONS = Path(__file__).resolve().parents[2] / "integrity" / "migrations"
DOCUMENT = b"<ToKhai><MaSo>0123456789</MaSo></ToKhai>"


@pytest.fixture
def passkeys(accounts: AccountService) -> PasskeyService:
    return PasskeyService(accounts, RP)


def _person_with_passkey(
    accounts: AccountService, passkeys: PasskeyService, clock: FrozenClock, name: str = "lan"
) -> tuple[UserPrincipal, SoftAuthenticator]:
    _, _, token = enrolled(accounts, clock, name)
    device = SoftAuthenticator(RP.rp_id, RP.origin)
    passkeys.register(token, device.create(passkeys.registration_options(token).public_key), "Điện thoại")
    person = accounts.authenticate_session(token)
    assert person is not None
    return person, device


def _activation_challenge(document: bytes) -> bytes:
    """Like a personal-signing activation's: a digest over the activation and the document."""
    return hashlib.sha256(b"activation-1\n" + hashlib.sha256(document).digest()).digest()


def test_a_signature_is_activated_by_a_user_verifying_passkey_over_the_activation_challenge(
    accounts: AccountService, passkeys: PasskeyService, clock: FrozenClock
) -> None:
    person, device = _person_with_passkey(accounts, passkeys, clock)
    challenge = _activation_challenge(DOCUMENT)
    options = passkeys.activation_options(person, challenge=challenge)
    assert options.public_key["userVerification"] == "required" and options.challenge == challenge
    assert unb64url(options.public_key["challenge"]) == challenge
    # The page shown twice offers the same challenge twice: one row, still answerable once.
    options = passkeys.activation_options("lan", challenge=challenge)
    answer = device.get(options.public_key)
    use = passkeys.verify_for_activation(person, answer, challenge, address=ADDRESS)
    assert use.user_verified is True and use.sign_count == 1
    (used,) = [e for e in logged(accounts, "auth.passkey.used") if e.data["purpose"] == "activate"]
    assert used.subject == "lan" and used.data["passkey_id"] == use.passkey_id
    confirmed = logged(accounts, "auth.mfa.confirm.succeeded")[-1]
    assert confirmed.data == {"method": "passkey", "purpose": "signature-activation"}
    # The same answer again: the challenge is spent.
    with pytest.raises(InvalidCredentials):
        passkeys.verify_for_activation(person, answer, challenge, address=ADDRESS)
    assert logged(accounts, "auth.mfa.confirm.failed")[-1].data["reason"] == "passkey_challenge_unknown"


def test_activation_refuses_an_unverified_user_another_challenge_and_another_purpose(
    accounts: AccountService, passkeys: PasskeyService, clock: FrozenClock
) -> None:
    person, device = _person_with_passkey(accounts, passkeys, clock)
    options = passkeys.activation_options(person)
    with pytest.raises(InvalidCredentials):
        passkeys.verify_for_activation(person, device.get(options.public_key, uv=False), options.challenge)
    failed = logged(accounts, "auth.mfa.confirm.failed")
    assert failed[-1].data["reason"] == "passkey_user_not_verified"
    # An answer to one activation offered for another challenge of the same person.
    first = passkeys.activation_options(person, challenge=_activation_challenge(b"one"))
    second = passkeys.activation_options(person, challenge=_activation_challenge(b"two"))
    with pytest.raises(InvalidCredentials):
        passkeys.verify_for_activation(person, device.get(first.public_key), second.challenge)
    assert logged(accounts, "auth.mfa.confirm.failed")[-1].data["reason"] == "passkey_challenge_mismatch"
    # A login challenge is not an activation one.
    login = accounts.login("lan", STRONG, address=ADDRESS)
    assert login.mfa_token
    at_login = passkeys.login_options(login.mfa_token)
    with pytest.raises(InvalidCredentials):
        passkeys.verify_for_activation(person, device.get(at_login.public_key), at_login.challenge)
    assert logged(accounts, "auth.mfa.confirm.failed")[-1].data["reason"] == "passkey_challenge_unknown"
    assert [e.data["failures"] for e in logged(accounts, "auth.mfa.confirm.failed")] == [1, 2, 3]
    assert logged(accounts, "auth.passkey.used") == []


def test_activation_failures_lock_the_account_before_any_check(
    accounts: AccountService, passkeys: PasskeyService, clock: FrozenClock
) -> None:
    person, device = _person_with_passkey(accounts, passkeys, clock)
    for _ in range(5):
        options = passkeys.activation_options(person)
        phished = device.get(options.public_key, origin="https://bhxh.example.test")
        with pytest.raises(InvalidCredentials):
            passkeys.verify_for_activation(person, phished, options.challenge)
    options = passkeys.activation_options(person)
    right = device.get(options.public_key)
    with pytest.raises(LoginThrottled) as refused:
        passkeys.verify_for_activation(person, right, options.challenge)
    assert refused.value.retry_after == 30
    assert logged(accounts, "auth.mfa.confirm.failed")[-1].data["reason"] == "throttled_account"
    # Refused before the check: the challenge is still there to be answered once the delay ends.
    clock.advance(31)
    assert passkeys.verify_for_activation(person, right, options.challenge).user_verified


def test_an_account_without_a_passkey_gets_no_activation_options(
    accounts: AccountService, passkeys: PasskeyService
) -> None:
    accounts.create_user("minh", STRONG, "officer", actor="user:root", reason="new officer")
    with pytest.raises(MfaNotEnrolled):
        passkeys.activation_options(UserPrincipal("x", "minh", frozenset(), "officer"))
    with pytest.raises(InvalidCredentials):
        passkeys.activation_options(UserPrincipal("x", "nobody", frozenset(), "officer"))


# --- settings ------------------------------------------------------------------------------


def test_the_relying_party_comes_from_the_settings() -> None:
    assert Settings().webauthn_relying_party() == ("localhost", "http://localhost:8000")
    public = Settings(public_base_url="https://dichvucong.bhxh.example/portal/")
    assert public.webauthn_relying_party() == ("dichvucong.bhxh.example", "https://dichvucong.bhxh.example")
    both = Settings(webauthn_rp_id="bhxh.example", webauthn_origin="https://ky.bhxh.example:8443")
    assert both.webauthn_relying_party() == ("bhxh.example", "https://ky.bhxh.example:8443")
    assert relying_party(None, "https://BHXH.example:443/", "") == ("bhxh.example", "https://bhxh.example")


@pytest.mark.parametrize(
    ("rp_id", "origin", "message"),
    [
        ("evil.example", "https://bhxh.example", "must be the host of the origin"),
        ("ample", "https://bhxh.example", "must be the host of the origin"),
        (None, "http://bhxh.example", "need https://"),
        (None, "https://10.0.0.5", "not an IP address"),
        (None, "https://bhxh.example/login", "scheme://host[:port] and nothing more"),
    ],
)
def test_an_unusable_relying_party_stops_start_up(rp_id: str | None, origin: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings(webauthn_rp_id=rp_id, webauthn_origin=origin)


# --- migration -----------------------------------------------------------------------------


def test_the_passkey_migration_steps_down_and_up_again(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "auth_0002")
    tables = set(inspect(engine).get_table_names())
    assert "passkey_credentials" not in tables and "passkey_challenges" not in tables and "users" in tables
    assert pending(engine)
    upgrade(engine)
    assert pending(engine) == set()
    columns = {c["name"] for c in inspect(engine).get_columns("passkey_credentials")}
    assert {"credential_id", "user_id", "name", "public_key", "sign_count", "transports"} <= columns
    assert {"created_at", "last_used_at", "flagged_clone"} <= columns
