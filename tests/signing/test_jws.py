"""JWS: compact and RFC 7797 detached signatures; the key decides the algorithm; an independent
JOSE library (jwcrypto) accepts what we sign and rejects tampering."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws
from jwcrypto.common import JWException

from signing import jws
from signing.algorithms import SignatureAlgorithm
from signing.errors import KeyNotUsable
from signing.keystore import Keystore
from signing.results import Indication, SubIndication
from signing.trust import TrustPolicy
from tests.signing._pki import bare_key, certified_key, now, rsa_key

ALGS = ["Ed25519", "ES256", "PS256"]
PAYLOAD = "Hồ sơ 000.00.31.H29-251123-0001: tờ khai đã nộp.".encode()
NO_TRUST = TrustPolicy([])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwcrypto_key(key: object) -> jc_jwk.JWK:
    return jc_jwk.JWK.from_pyca(key)


@pytest.mark.parametrize("alg", ALGS)
def test_attached_and_detached_tokens_verify(alg: str) -> None:
    key = bare_key(alg)
    store = Keystore([key])
    attached = jws.sign(key, PAYLOAD, signed_at=now())
    detached = jws.sign(key, PAYLOAD, signed_at=now(), detached=True)
    assert detached.token.split(".")[1] == ""
    for token, payload in ((attached.token, None), (detached.token, PAYLOAD)):
        result = jws.verify(token, store, NO_TRUST, now=now(), payload=payload)
        assert result.valid and result.indication is Indication.TOTAL_PASSED
        assert result.key_id == key.kid and result.algorithm is SignatureAlgorithm(alg)
        assert result.algorithm_identifier == alg
        assert result.signed_at == attached.signed_at


@pytest.mark.parametrize("alg", ALGS)
def test_jwcrypto_accepts_our_tokens_and_rejects_a_changed_payload(alg: str) -> None:
    key = bare_key(alg)
    public = _jwcrypto_key(key.public_key)
    token = jws.sign(key, PAYLOAD, signed_at=now()).token
    checker = jc_jws.JWS()
    checker.deserialize(token)
    checker.verify(public, alg=alg)
    assert checker.payload == PAYLOAD

    detached = jws.sign(key, PAYLOAD, signed_at=now(), detached=True).token
    header, _, signature = detached.split(".")
    good = jc_jws.JWS()
    good.deserialize(json.dumps({"protected": header, "signature": signature, "payload": PAYLOAD.decode()}))
    good.verify(public, alg=alg)

    tampered = PAYLOAD.replace(b"0001", b"0002")
    bad = jc_jws.JWS()
    bad.deserialize(json.dumps({"protected": header, "signature": signature, "payload": tampered.decode()}))
    with pytest.raises(JWException):
        bad.verify(public, alg=alg)
    result = jws.verify(detached, Keystore([key]), NO_TRUST, now=now(), payload=tampered)
    assert result.sub_indication is SubIndication.SIG_CRYPTO_FAILURE
    assert result.indication is Indication.TOTAL_FAILED


def test_changed_attached_payload_fails_with_sig_crypto_failure() -> None:
    key = bare_key("Ed25519")
    header, _, signature = jws.sign(key, PAYLOAD, signed_at=now()).token.split(".")
    forged = f"{header}.{_b64(b'another payload')}.{signature}"
    assert jws.verify(forged, Keystore([key]), NO_TRUST, now=now()).sub_indication is SubIndication.SIG_CRYPTO_FAILURE


def test_alg_none_is_refused() -> None:
    key = bare_key("PS256")
    header = _b64(json.dumps({"alg": "none", "kid": key.kid}).encode())
    token = f"{header}.{_b64(PAYLOAD)}."
    result = jws.verify(token, Keystore([key]), NO_TRUST, now=now())
    assert not result.valid
    assert result.sub_indication is SubIndication.SIG_CRYPTO_FAILURE


@pytest.mark.parametrize("secret_form", ["pem", "der"])
def test_hmac_keyed_with_our_public_key_is_refused(secret_form: str) -> None:
    # Algorithm confusion: the attacker MACs with the public key, hoping the verifier uses it as
    # an HMAC secret because the token says HS256.
    key = bare_key("PS256")
    from cryptography.hazmat.primitives import serialization

    encoding = serialization.Encoding.PEM if secret_form == "pem" else serialization.Encoding.DER
    secret = key.public_key.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
    body = _b64(PAYLOAD)
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    result = jws.verify(f"{header}.{body}.{_b64(mac)}", Keystore([key]), NO_TRUST, now=now())
    assert result.sub_indication is SubIndication.SIG_CRYPTO_FAILURE
    assert "HS256" in result.reasons[0]


def test_rs256_claimed_for_a_pss_key_is_refused() -> None:
    key = bare_key("PS256")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = _b64(json.dumps({"alg": "RS256", "kid": key.kid}).encode())
    body = _b64(PAYLOAD)
    sig = key.private_key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    result = jws.verify(f"{header}.{body}.{_b64(sig)}", Keystore([key]), NO_TRUST, now=now())
    assert result.sub_indication is SubIndication.SIG_CRYPTO_FAILURE


# joserfc notes that RFC 9864 deprecates the name "EdDSA"; accepting it is what this test checks.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_legacy_eddsa_name_is_accepted_for_an_ed25519_key_only() -> None:
    key = bare_key("Ed25519")
    header = _b64(json.dumps({"alg": "EdDSA", "kid": key.kid}).encode())
    body = _b64(PAYLOAD)
    sig = key.private_key.sign(f"{header}.{body}".encode())  # type: ignore[union-attr]
    legacy = jws.verify(f"{header}.{body}.{_b64(sig)}", Keystore([key]), NO_TRUST, now=now())
    assert legacy.valid
    # One name for the algorithm, whichever name the token used; the token's own beside it.
    assert legacy.algorithm is SignatureAlgorithm.ED25519 and legacy.algorithm_identifier == "EdDSA"
    ec_key = bare_key("ES256")
    header = _b64(json.dumps({"alg": "EdDSA", "kid": ec_key.kid}).encode())
    assert (
        jws.verify(f"{header}.{body}.{_b64(sig)}", Keystore([ec_key]), NO_TRUST, now=now()).sub_indication
        is SubIndication.SIG_CRYPTO_FAILURE
    )


def test_unknown_kid_gives_no_signing_certificate_found() -> None:
    token = jws.sign(bare_key("Ed25519"), PAYLOAD, signed_at=now()).token
    result = jws.verify(token, Keystore([bare_key("Ed25519")]), NO_TRUST, now=now())
    assert result.sub_indication is SubIndication.NO_SIGNING_CERTIFICATE_FOUND
    assert result.indication is Indication.INDETERMINATE


def test_token_without_kid_gives_no_signing_certificate_found() -> None:
    key = bare_key("Ed25519")
    header = _b64(json.dumps({"alg": "Ed25519"}).encode())
    body = _b64(PAYLOAD)
    sig = key.private_key.sign(f"{header}.{body}".encode())  # type: ignore[union-attr]
    result = jws.verify(f"{header}.{body}.{_b64(sig)}", Keystore([key]), NO_TRUST, now=now())
    assert result.sub_indication is SubIndication.NO_SIGNING_CERTIFICATE_FOUND


@pytest.mark.parametrize(
    "token",
    [
        "only.two",
        "a.b.c.d",
        "!!!.e30.AAAA",
        _b64(b"[1,2]") + ".e30.AAAA",
        _b64(b"not json") + ".e30.AAAA",
        "",
    ],
)
def test_malformed_tokens_give_format_failure(token: str) -> None:
    result = jws.verify(token, Keystore([bare_key("Ed25519")]), NO_TRUST, now=now())
    assert result.sub_indication is SubIndication.FORMAT_FAILURE
    assert result.indication is Indication.TOTAL_FAILED


def test_detached_token_without_payload_gives_format_failure() -> None:
    key = bare_key("ES256")
    token = jws.sign(key, PAYLOAD, signed_at=now(), detached=True).token
    assert jws.verify(token, Keystore([key]), NO_TRUST, now=now()).sub_indication is SubIndication.FORMAT_FAILURE


def test_b64_false_without_crit_gives_format_failure() -> None:
    key = bare_key("Ed25519")
    header = _b64(json.dumps({"alg": "Ed25519", "kid": key.kid, "b64": False}).encode())
    sig = key.private_key.sign(header.encode() + b"." + PAYLOAD)  # type: ignore[union-attr]
    result = jws.verify(f"{header}..{_b64(sig)}", Keystore([key]), NO_TRUST, now=now(), payload=PAYLOAD)
    assert result.sub_indication is SubIndication.FORMAT_FAILURE


def test_unparseable_signing_time_gives_format_failure() -> None:
    key = bare_key("Ed25519")
    header = _b64(json.dumps({"alg": "Ed25519", "kid": key.kid, "sigT": "yesterday"}).encode())
    body = _b64(PAYLOAD)
    sig = key.private_key.sign(f"{header}.{body}".encode())  # type: ignore[union-attr]
    result = jws.verify(f"{header}.{body}.{_b64(sig)}", Keystore([key]), NO_TRUST, now=now())
    assert result.sub_indication is SubIndication.FORMAT_FAILURE


def test_attached_token_checked_against_other_data_gives_hash_failure() -> None:
    key = bare_key("Ed25519")
    token = jws.sign(key, PAYLOAD, signed_at=now()).token
    result = jws.verify(token, Keystore([key]), NO_TRUST, now=now(), payload=b"other data")
    assert result.sub_indication is SubIndication.HASH_FAILURE


def test_certified_key_from_an_unknown_ca_gives_no_certificate_chain(ca) -> None:
    key = certified_key(ca, rsa_key())
    token = jws.sign(key, PAYLOAD, signed_at=now()).token
    assert jws.verify(token, Keystore([key]), TrustPolicy([ca.cert]), now=now()).valid
    result = jws.verify(token, Keystore([key]), NO_TRUST, now=now())
    assert result.sub_indication is SubIndication.NO_CERTIFICATE_CHAIN_FOUND
    assert result.signer is not None and result.signer.subject == "CN=Test Signer,C=VN"


def test_certified_key_whose_certificate_expired_gives_expired(ca) -> None:
    t = now()
    key = certified_key(ca, rsa_key(), not_before=t - timedelta(days=30), not_after=t - timedelta(days=1))
    token = jws.sign(key, PAYLOAD, signed_at=t - timedelta(days=2)).token
    result = jws.verify(token, Keystore([key]), TrustPolicy([ca.cert]), now=t)
    assert result.sub_indication is SubIndication.EXPIRED


def test_retired_key_cannot_sign() -> None:
    from dataclasses import replace

    from signing.keystore import KeyState

    key = replace(bare_key("Ed25519"), state=KeyState.RETIRED)
    with pytest.raises(KeyNotUsable):
        jws.sign(key, PAYLOAD, signed_at=now())


def test_jws_header_carries_kid_alg_and_signing_time() -> None:
    key = bare_key("ES256")
    sig = jws.sign(key, PAYLOAD, signed_at=now())
    header = json.loads(base64.urlsafe_b64decode(sig.token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"] == key.kid
    assert header["sigT"].endswith("Z")
