"""Keys on a PKCS#11 token (SoftHSM2): made there, never extractable, and every format signs
with them so that independent verifiers (jwcrypto, openssl, xmlsec1) accept the result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from jwcrypto import jwk
from jwcrypto import jws as jwcrypto_jws

from signing import cms, jws, xml
from signing.algorithms import Algorithm
from signing.errors import KeyNotUsable, TokenError
from signing.keystore import Keystore, SigningKey
from signing.pkcs11 import KeyToken, TokenKey
from signing.results import SubIndication
from signing.trust import TrustPolicy
from tests.signing._pki import TestCa, certified_key, now, openssl_cms_verify
from tests.signing.test_xml import _xmlsec1 as xmlsec1_verify
from tests.token_support import SoftToken

PAYLOAD = "Hồ sơ điện tử ký bằng khoá trong HSM".encode()


@pytest.fixture
def token(soft_token: SoftToken) -> Iterator[KeyToken]:
    opened = KeyToken.open(soft_token.module, soft_token.label, soft_token.pin)
    yield opened
    opened.close()


@pytest.fixture
def made(token: KeyToken) -> Iterator[list[TokenKey]]:
    keys: list[TokenKey] = []
    yield keys
    for key in keys:
        token.destroy(key)


def _generate(token: KeyToken, made: list[TokenKey], algorithm: Algorithm) -> TokenKey:
    key = token.generate(algorithm, rsa_bits=2048)
    made.append(key)
    return key


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_a_token_key_signs_jws_that_jwcrypto_verifies(
    token: KeyToken, made: list[TokenKey], algorithm: Algorithm
) -> None:
    key = _generate(token, made, algorithm)
    loaded = SigningKey.create(key, created_at=now())
    token_jws = jws.sign(loaded, PAYLOAD, signed_at=now())
    public = jwk.JWK.from_pyca(key.public_key())
    checked = jwcrypto_jws.JWS()
    checked.deserialize(token_jws.token)
    checked.verify(public, alg=algorithm.value)
    assert checked.payload == PAYLOAD
    tampered = jwcrypto_jws.JWS()
    head, _, sig = token_jws.token.split(".")
    tampered.deserialize(".".join([head, jws._b64url(PAYLOAD + b"!").decode(), sig]))
    with pytest.raises(jwcrypto_jws.InvalidJWSSignature):
        tampered.verify(public, alg=algorithm.value)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_the_private_key_never_leaves_the_token(
    soft_token: SoftToken, token: KeyToken, made: list[TokenKey], algorithm: Algorithm
) -> None:
    key = _generate(token, made, algorithm)
    with pytest.raises(KeyNotUsable, match="stays on its PKCS#11 token"):
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # Read the attributes back through the PKCS#11 API itself, not through our wrapper.
    library = pkcs11.lib(str(soft_token.module))
    with library.get_token(token_label=soft_token.label).open() as session:  # logged in by `token`
        private = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, id=bytes.fromhex(key.object_id))
        assert private[pkcs11.Attribute.SENSITIVE] is True
        assert private[pkcs11.Attribute.EXTRACTABLE] is False
        assert private[pkcs11.Attribute.NEVER_EXTRACTABLE] is True


@pytest.mark.parametrize("algorithm", [Algorithm.PS256, Algorithm.ES256])
def test_openssl_accepts_cms_signed_on_the_token(
    tmp_path: Path, ca: TestCa, token: KeyToken, made: list[TokenKey], algorithm: Algorithm
) -> None:
    key = certified_key(ca, _generate(token, made, algorithm))
    signature = cms.sign(key, PAYLOAD, signed_at=now())
    for payload, accepted in ((PAYLOAD, True), (PAYLOAD + b"!", False)):
        out = openssl_cms_verify(tmp_path, signature.der, payload, ca.cert, any_purpose=True)
        assert (out.returncode == 0) is accepted, out.stderr
    result = cms.verify(signature.der, PAYLOAD, Keystore([key]), TrustPolicy([ca.cert]), now=now())
    assert result.valid, result.reasons


@pytest.mark.parametrize("algorithm", [Algorithm.PS256, Algorithm.ES256])
def test_xml_signed_on_the_token_verifies_here_and_in_xmlsec1(
    tmp_path: Path, ca: TestCa, token: KeyToken, made: list[TokenKey], algorithm: Algorithm
) -> None:
    key = certified_key(ca, _generate(token, made, algorithm))
    document = "<TepTin><MaHoSo>0001</MaHoSo><NoiDung>tờ khai</NoiDung></TepTin>".encode()
    signed = xml.sign(key, document, signed_at=now()).document
    tampered = signed.replace(b"0001", b"0002")
    if algorithm is Algorithm.ES256:  # Debian's xmlsec1 1.2 cannot check RSASSA-PSS (signing/xml.py)
        assert xmlsec1_verify(tmp_path, signed, ca, "TepTin").returncode == 0
        assert xmlsec1_verify(tmp_path, tampered, ca, "TepTin").returncode != 0
    store, trust = Keystore([key]), TrustPolicy([ca.cert])
    assert xml.verify(signed, store, trust, now=now()).result.valid
    assert xml.verify(tampered, store, trust, now=now()).result.sub_indication is SubIndication.HASH_FAILURE


def test_a_token_key_refuses_any_scheme_but_the_service_profile(token: KeyToken, made: list[TokenKey]) -> None:
    rsa_key = _generate(token, made, Algorithm.PS256)
    with pytest.raises(KeyNotUsable, match="RSASSA-PSS"):
        rsa_key.sign(PAYLOAD, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg]
    with pytest.raises(KeyNotUsable, match="RSASSA-PSS"):
        rsa_key.sign(PAYLOAD, padding.PSS(padding.MGF1(hashes.SHA1()), 20), hashes.SHA1())  # type: ignore[call-arg]
    ec_key = _generate(token, made, Algorithm.ES256)
    with pytest.raises(KeyNotUsable, match="SHA-256"):
        ec_key.sign(PAYLOAD, ec.ECDSA(hashes.SHA1()))  # type: ignore[call-arg]
    with pytest.raises(KeyNotUsable):
        ec_key.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP256R1()).public_key())


def test_token_errors_are_clear_and_never_show_the_pin(soft_token: SoftToken, token: KeyToken) -> None:
    with pytest.raises(TokenError, match="PIN of token 'bhxh-test-token' is wrong") as wrong:
        KeyToken.open(soft_token.module, soft_token.label, b"999999")
    assert "999999" not in str(wrong.value) and soft_token.pin.decode() not in str(wrong.value)
    with pytest.raises(TokenError, match="no PKCS#11 token labelled 'absent'"):
        KeyToken.open(soft_token.module, "absent", soft_token.pin)
    with pytest.raises(TokenError, match="cannot load the PKCS#11 module"):
        KeyToken.open(Path("/nonexistent/libpkcs11.so"), soft_token.label, soft_token.pin)
    with pytest.raises(TokenError, match="PIN is needed"):
        KeyToken.open(soft_token.module, soft_token.label, b"")
    with pytest.raises(TokenError, match="holds no key pair with id 00ff"):
        token.key("00ff")
    with pytest.raises(TokenError, match="not a hexadecimal"):
        token.key("not-hex")
    with pytest.raises(TokenError, match="no private key labelled 'absent'"):
        token.key_by_label("absent")


def test_a_key_destroyed_on_the_token_stops_signing(token: KeyToken, made: list[TokenKey]) -> None:
    key = _generate(token, made, Algorithm.ES256)
    made.remove(key)
    token.destroy(key)
    with pytest.raises(TokenError, match="signing failed"):
        key.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(TokenError, match="holds no key pair"):
        token.key(key.object_id)
