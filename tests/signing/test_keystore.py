"""Keystore: keys with kid, algorithm, state and chain, stored encrypted, parsed once, shared by
every instance through the database; rotation, retirement and revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from joserfc.jwk import RSAKey
from sqlalchemy import Engine, func, select

from signing import jws
from signing.algorithms import Algorithm
from signing.errors import (
    ActiveKeyExists,
    DuplicateKey,
    InvalidKeyState,
    KeyImportFailed,
    KeyNotUsable,
    PassphraseRequired,
    UnknownKey,
    WeakKey,
)
from signing.keystore import (
    KeyState,
    Keystore,
    add_key,
    generate_key,
    list_keys,
    parse_certificates,
    parse_pkcs8,
    parse_pkcs12,
    retire_key,
    revoke_key,
)
from signing.results import SubIndication
from signing.tables import signing_keys
from signing.trust import TrustPolicy
from tests.signing._pki import TestCa, pem, rsa_key

PASS = b"keystore passphrase"
NO_TRUST = TrustPolicy([])


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(signing_keys)).scalar_one())


@pytest.mark.parametrize("alg", list(Algorithm))
def test_generated_key_is_active_signs_and_has_a_thumbprint_kid(engine: Engine, clock: _Clock, alg: Algorithm) -> None:
    with engine.begin() as conn:
        record = generate_key(conn, alg, passphrase=PASS, clock=clock, rsa_bits=2048)
        store = Keystore.load(conn, PASS)
    key = store.active(alg)
    assert record.kid == key.kid and key.state is KeyState.ACTIVE and key.algorithm is alg
    assert len(key.kid) == 43  # RFC 7638: base64url SHA-256
    token = jws.sign(key, b"x", signed_at=clock()).token
    assert jws.verify(token, store, NO_TRUST, now=clock()).valid


def test_kid_is_the_rfc7638_thumbprint(engine: Engine, clock: _Clock) -> None:
    private = rsa_key()
    with engine.begin() as conn:
        record = add_key(conn, private, passphrase=PASS, clock=clock)
    assert record.kid == RSAKey.import_key(private.public_key()).thumbprint()


def test_private_key_is_stored_only_encrypted(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock)
        stored = conn.execute(select(signing_keys.c.private_key_pem)).scalar_one()
    assert stored.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(stored.encode(), None)


def test_wrong_keystore_passphrase_stops_loading(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        generate_key(conn, Algorithm.ES256, passphrase=PASS, clock=clock)
    with engine.connect() as conn, pytest.raises(KeyImportFailed):
        Keystore.load(conn, b"wrong")
    with engine.connect() as conn, pytest.raises(PassphraseRequired):
        Keystore.load(conn, None)


def test_keys_are_parsed_once_across_reloads(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        generate_key(conn, Algorithm.ES256, passphrase=PASS, clock=clock)
        store = Keystore.load(conn, PASS)
        first = store.active().private_key
        store.reload(conn)
        store.reload(conn)
    assert store.active(Algorithm.ES256).private_key is first


def test_second_active_key_without_rotation_is_refused_and_nothing_written(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock)
    with pytest.raises(ActiveKeyExists), engine.begin() as conn:
        generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock)
    assert _count(engine) == 1


def test_rotation_signs_with_the_new_key_and_old_signatures_still_verify(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        old = generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock)
        store = Keystore.load(conn, PASS)
    old_token = jws.sign(store.active(Algorithm.ED25519), b"before", signed_at=clock()).token
    clock.advance(60)
    with engine.begin() as conn:
        new = generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock, rotate=True)
        store.reload(conn)
        states = {r.kid: r.state for r in list_keys(conn)}
    assert states == {old.kid: KeyState.RETIRED, new.kid: KeyState.ACTIVE}
    assert store.active(Algorithm.ED25519).kid == new.kid
    assert jws.verify(old_token, store, NO_TRUST, now=clock()).valid
    with pytest.raises(KeyNotUsable):
        store.signing_key(old.kid)
    assert store.signing_key(algorithm=Algorithm.ED25519).kid == new.kid


def test_retired_key_verifies_but_never_signs_again(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        record = generate_key(conn, Algorithm.ES256, passphrase=PASS, clock=clock)
        store = Keystore.load(conn, PASS)
    token = jws.sign(store.get(record.kid), b"m", signed_at=clock()).token
    with engine.begin() as conn:
        retire_key(conn, record.kid, clock=clock)
        store.reload(conn)
        assert conn.execute(select(signing_keys.c.private_key_pem)).scalar_one() is None
        with pytest.raises(InvalidKeyState):
            retire_key(conn, record.kid, clock=clock)
    assert store.get(record.kid).state is KeyState.RETIRED
    assert jws.verify(token, store, NO_TRUST, now=clock()).valid
    with pytest.raises(KeyNotUsable):
        store.signing_key(record.kid)
    with pytest.raises(UnknownKey):
        store.active(Algorithm.ES256)


def test_revoked_key_fails_for_signatures_at_or_after_revocation(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        record = generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock)
        store = Keystore.load(conn, PASS)
    key = store.get(record.kid)
    before = jws.sign(key, b"m", signed_at=clock() - timedelta(hours=2)).token
    after = jws.sign(key, b"m", signed_at=clock()).token
    with engine.begin() as conn:
        revoke_key(conn, record.kid, clock=clock, at=clock() - timedelta(hours=1))
        store.reload(conn)
    assert jws.verify(before, store, NO_TRUST, now=clock()).valid
    result = jws.verify(after, store, NO_TRUST, now=clock())
    assert result.sub_indication is SubIndication.REVOKED and result.key_id == record.kid
    with pytest.raises(KeyNotUsable):
        store.signing_key(record.kid)


def test_revocation_cannot_be_dated_in_the_future_or_repeated(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        record = generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock)
        with pytest.raises(InvalidKeyState):
            revoke_key(conn, record.kid, clock=clock, at=clock() + timedelta(days=1))
        revoke_key(conn, record.kid, clock=clock)
        with pytest.raises(InvalidKeyState):
            revoke_key(conn, record.kid, clock=clock)


def test_another_instance_sees_the_revocation_after_reload(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        record = generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock)
    with engine.connect() as conn:
        a, b = Keystore.load(conn, PASS), Keystore.load(conn, PASS)
    token = jws.sign(a.get(record.kid), b"m", signed_at=clock()).token
    with engine.begin() as conn:
        revoke_key(conn, record.kid, clock=clock, at=clock() - timedelta(seconds=1))
    with engine.connect() as conn:
        b.reload(conn)
    assert jws.verify(token, b, NO_TRUST, now=clock()).sub_indication is SubIndication.REVOKED


def test_duplicate_key_is_refused(engine: Engine, clock: _Clock) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    with engine.begin() as conn:
        add_key(conn, private, passphrase=PASS, clock=clock)
        with pytest.raises(DuplicateKey):
            add_key(conn, private, passphrase=PASS, clock=clock, rotate=True)


def test_rsa_1024_and_unsupported_curves_are_refused(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        with pytest.raises(WeakKey):
            add_key(conn, rsa.generate_private_key(public_exponent=65537, key_size=1024), passphrase=PASS, clock=clock)
        with pytest.raises(WeakKey):
            add_key(conn, ec.generate_private_key(ec.SECP256K1()), passphrase=PASS, clock=clock)
    assert _count(engine) == 0


def test_certificate_that_does_not_match_the_key_is_refused(engine: Engine, clock: _Clock, ca: TestCa) -> None:
    cert = ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key())
    with engine.begin() as conn, pytest.raises(KeyImportFailed):
        add_key(conn, ec.generate_private_key(ec.SECP256R1()), [cert], passphrase=PASS, clock=clock)


def test_pkcs8_import_with_chain(engine: Engine, clock: _Clock, ca: TestCa) -> None:
    private = rsa_key()
    cert = ca.issue(private.public_key(), "Importer")
    encrypted = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"file-pw")
    )
    with pytest.raises(KeyImportFailed):
        parse_pkcs8(encrypted, b"not the password")
    key = parse_pkcs8(encrypted, b"file-pw")
    chain = parse_certificates(pem(cert) + pem(ca.cert))
    with engine.begin() as conn:
        record = add_key(conn, key, chain, passphrase=PASS, clock=clock)
        store = Keystore.load(conn, PASS)
    assert record.certificate == cert
    assert store.get(record.kid).chain == (cert, ca.cert)


def test_pkcs12_import(engine: Engine, clock: _Clock, ca: TestCa) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(private.public_key(), "P12 holder")
    blob = pkcs12.serialize_key_and_certificates(
        b"holder", private, cert, [ca.cert], serialization.BestAvailableEncryption(b"p12-pw")
    )
    with pytest.raises(KeyImportFailed):
        parse_pkcs12(blob, b"wrong")
    with pytest.raises(KeyImportFailed):
        parse_pkcs12(b"not a pkcs12 file", b"p12-pw")
    key, chain = parse_pkcs12(blob, b"p12-pw")
    with engine.begin() as conn:
        record = add_key(conn, key, chain, passphrase=PASS, clock=clock)
    assert record.algorithm is Algorithm.ES256 and record.chain == (cert, ca.cert)


def test_jwks_publishes_active_and_retired_service_keys_with_x5c(engine: Engine, clock: _Clock, ca: TestCa) -> None:
    private = rsa_key()
    cert = ca.issue(private.public_key())
    with engine.begin() as conn:
        certified = add_key(conn, private, [cert, ca.cert], passphrase=PASS, clock=clock)
        retired = generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock)
        generate_key(conn, Algorithm.ED25519, passphrase=PASS, clock=clock, rotate=True)
        revoked = generate_key(conn, Algorithm.ES256, passphrase=PASS, clock=clock)
        revoke_key(conn, revoked.kid, clock=clock)
        personal = generate_key(conn, Algorithm.ES256, passphrase=PASS, clock=clock, owner="user:lan")
        store = Keystore.load(conn, PASS)
    jwks = store.jwks()
    kids = {k["kid"] for k in jwks["keys"]}
    assert certified.kid in kids and retired.kid in kids
    assert revoked.kid not in kids and personal.kid not in kids
    rsa_jwk = next(k for k in jwks["keys"] if k["kid"] == certified.kid)
    assert rsa_jwk["alg"] == "PS256" and rsa_jwk["use"] == "sig" and len(rsa_jwk["x5c"]) == 2
    assert all("d" not in k for k in jwks["keys"])


def test_service_callers_cannot_sign_with_a_personal_key(engine: Engine, clock: _Clock) -> None:
    with engine.begin() as conn:
        personal = generate_key(conn, Algorithm.ES256, passphrase=PASS, clock=clock, owner="user:lan")
        store = Keystore.load(conn, PASS)
    with pytest.raises(KeyNotUsable):
        store.signing_key(personal.kid)
    with pytest.raises(KeyNotUsable):
        store.signing_key(personal.kid, owner="user:minh")
    assert store.signing_key(personal.kid, owner="user:lan").kid == personal.kid
    with pytest.raises(UnknownKey):
        store.active(Algorithm.ES256)


def test_unknown_kid_is_refused(engine: Engine, clock: _Clock) -> None:
    with engine.connect() as conn:
        store = Keystore.load(conn, PASS)
    with pytest.raises(UnknownKey):
        store.signing_key("no-such-kid")
    with pytest.raises(UnknownKey):
        store.signing_key()
