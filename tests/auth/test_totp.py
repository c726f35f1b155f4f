from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update

from auth import totp
from auth import users as user_store
from auth.errors import EnrolmentNotStarted, SecretUnreadable
from auth.tables import totp_credentials
from auth.totp import SecretBox
from tests.auth.support import SECRETS_KEY, rfc6238

# RFC 6238 Appendix B: the SHA-1 seed is the ASCII string "12345678901234567890".
RFC_SEED = b"12345678901234567890"
BOX = SecretBox(SECRETS_KEY)
NOW = datetime(2025, 11, 23, 8, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("unix", "expected8"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_appendix_b_vectors_sha1(unix: int, expected8: str) -> None:
    # The RFC lists 8-digit codes; ours are 6 digits, i.e. the value modulo 10^6.
    when = datetime.fromtimestamp(unix, UTC)
    assert totp.code_at(RFC_SEED, totp.time_step(when)) == expected8[-6:]
    assert totp.match_code(RFC_SEED, expected8[-6:], when).step == unix // 30


def test_secret_has_160_bits() -> None:
    assert len(totp.new_secret()) == 20


def test_code_of_previous_and_next_step_is_accepted_but_not_two_steps_away() -> None:
    secret = totp.new_secret()
    step = totp.time_step(NOW)
    for delta in (-1, 0, 1):
        assert totp.match_code(secret, rfc6238(secret, step + delta), NOW).step == step + delta
    for delta in (-2, 2):
        assert not totp.match_code(secret, rfc6238(secret, step + delta), NOW).ok


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"])
def test_malformed_codes_never_match(bad: str) -> None:
    assert not totp.match_code(totp.new_secret(), bad, NOW).ok


def test_enrolment_gives_otpauth_uri_and_svg_qr() -> None:
    secret = totp.new_secret()
    enrolment = totp.enrolment_for(secret, "nguyenvana")
    assert enrolment.otpauth_uri.startswith("otpauth://totp/BHXH:nguyenvana?")
    assert f"secret={enrolment.secret_b32}" in enrolment.otpauth_uri and "issuer=BHXH" in enrolment.otpauth_uri
    assert base64.b32decode(enrolment.secret_b32) == secret and len(enrolment.secret_b32) == 32
    assert enrolment.qr_svg.startswith("<svg") and "<script" not in enrolment.qr_svg


def test_secret_box_binds_ciphertext_to_its_user() -> None:
    sealed = BOX.seal(b"s" * 20, "user-a")
    assert BOX.open(sealed, "user-a") == b"s" * 20
    with pytest.raises(SecretUnreadable):
        BOX.open(sealed, "user-b")
    with pytest.raises(SecretUnreadable):
        SecretBox(bytes(32)).open(sealed, "user-a")
    with pytest.raises(SecretUnreadable):
        BOX.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), "user-a")
    with pytest.raises(SecretUnreadable):
        BOX.open(b"short", "user-a")


def _user(engine: Engine, name: str = "alice") -> str:
    with engine.begin() as conn:
        return user_store.create(conn, name, "officer", "x", mfa_required=True, now=NOW).user_id


def _enrol(engine: Engine, uid: str) -> bytes:
    secret = totp.new_secret()
    with engine.begin() as conn:
        totp.start_enrolment(conn, BOX, uid, secret, NOW)
        assert totp.confirm_enrolment(conn, BOX, uid, rfc6238(secret, totp.time_step(NOW)), NOW).ok
    return secret


def test_secret_is_stored_encrypted(engine: Engine) -> None:
    uid = _user(engine)
    secret = _enrol(engine, uid)
    with engine.connect() as conn:
        stored = conn.execute(select(totp_credentials.c.secret_ct)).scalar_one()
    assert secret not in bytes(stored) and base64.b32encode(secret) not in bytes(stored)


def test_confirmation_needs_a_pending_enrolment(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn, pytest.raises(EnrolmentNotStarted):
        totp.confirm_enrolment(conn, BOX, uid, "123456", NOW)


def test_wrong_confirming_code_leaves_totp_inactive(engine: Engine) -> None:
    uid = _user(engine)
    secret = totp.new_secret()
    with engine.begin() as conn:
        totp.start_enrolment(conn, BOX, uid, secret, NOW)
        wrong = f"{(int(rfc6238(secret, totp.time_step(NOW))) + 1) % 1_000_000:06d}"
        assert not totp.confirm_enrolment(conn, BOX, uid, wrong, NOW).ok
        assert totp.status(conn, uid) == totp.TotpState(active=False, pending=True, last_step=totp.NO_STEP)


def test_enrolment_code_cannot_be_reused_to_log_in(engine: Engine) -> None:
    uid = _user(engine)
    secret = _enrol(engine, uid)
    with engine.begin() as conn:
        verdict = totp.verify_and_consume(conn, BOX, uid, rfc6238(secret, totp.time_step(NOW)), NOW)
    assert verdict == totp.TotpVerdict(False, "replayed_totp", totp.time_step(NOW))


def test_same_code_twice_is_refused_the_second_time(engine: Engine) -> None:
    uid = _user(engine)
    secret = _enrol(engine, uid)
    later = NOW + timedelta(seconds=60)
    code = rfc6238(secret, totp.time_step(later))
    with engine.begin() as conn:
        assert totp.verify_and_consume(conn, BOX, uid, code, later).ok
    with engine.begin() as conn:
        assert totp.verify_and_consume(conn, BOX, uid, code, later).reason == "replayed_totp"


def test_code_of_an_earlier_step_is_refused_after_a_later_one(engine: Engine) -> None:
    uid = _user(engine)
    secret = _enrol(engine, uid)
    later = NOW + timedelta(seconds=90)
    step = totp.time_step(later)
    with engine.begin() as conn:
        assert totp.verify_and_consume(conn, BOX, uid, rfc6238(secret, step), later).ok
        # Still inside the ±1 window, so only the replay guard refuses it.
        assert totp.verify_and_consume(conn, BOX, uid, rfc6238(secret, step - 1), later).reason == "replayed_totp"


def test_concurrent_double_use_of_one_code_gives_exactly_one_success(engine: Engine) -> None:
    uid = _user(engine)
    secret = _enrol(engine, uid)
    later = NOW + timedelta(seconds=120)
    code = rfc6238(secret, totp.time_step(later))

    def attempt(_: int) -> bool:
        with engine.begin() as conn:
            return totp.verify_and_consume(conn, BOX, uid, code, later).ok

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert results.count(True) == 1


def test_altered_secret_row_fails_closed(engine: Engine) -> None:
    uid = _user(engine)
    _enrol(engine, uid)
    other = _user(engine, "bob")
    _enrol(engine, other)
    with engine.begin() as conn:
        stolen = conn.execute(
            select(totp_credentials.c.secret_ct).where(totp_credentials.c.user_id == other)
        ).scalar_one()
        conn.execute(update(totp_credentials).where(totp_credentials.c.user_id == uid).values(secret_ct=stolen))
    with engine.begin() as conn, pytest.raises(SecretUnreadable):
        totp.verify_and_consume(conn, BOX, uid, "123456", NOW + timedelta(seconds=60))
