"""XMLDSig / XAdES-B enveloped: xmlsec1 accepts what we sign; parsing is XXE- and bomb-safe; the
verifier returns the element the signature covers and refuses signature-wrapping layouts."""

from __future__ import annotations

import base64
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from lxml import etree
from signxml import SignatureMethod, XMLSigner

from signing import xml as sxml
from signing.algorithms import SignatureAlgorithm
from signing.errors import InvalidXml, KeyNotUsable
from signing.keystore import Keystore
from signing.results import Indication, SubIndication
from signing.trust import TrustPolicy
from tests.signing._pki import TestCa, bare_key, certified_key, now, rsa_key
from tests.tools import require_tool

DS = "http://www.w3.org/2000/09/xmldsig#"
DOSSIER = (
    "<HoSo xmlns='urn:bhxh:hoso' Id='hs-1'><MaHoSo>000.00.31.H29-251123-0001</MaHoSo>"
    "<NguoiNop>Nguyễn Văn A</NguoiNop><SoTien>1500000</SoTien></HoSo>"
).encode()
PLAIN = "<TepTin><Dong>Bảo hiểm xã hội</Dong></TepTin>".encode()


@pytest.fixture(scope="module")
def ec_key(ca: TestCa):
    return certified_key(ca, ec.generate_private_key(ec.SECP256R1()), "XML Signer")


@pytest.fixture(scope="module")
def rsa_signing_key(ca: TestCa):
    return certified_key(ca, rsa_key(), "XML RSA Signer")


def _verify(doc: bytes, key, ca: TestCa) -> sxml.XmlVerification:
    return sxml.verify(doc, Keystore([key]), TrustPolicy([ca.cert]), now=now())


def _xmlsec1(tmp_path: Path, doc: bytes, ca: TestCa, root_tag: str) -> subprocess.CompletedProcess[str]:
    from cryptography.hazmat.primitives import serialization

    xmlsec1 = require_tool("xmlsec1", "xmlsec1")
    (tmp_path / "signed.xml").write_bytes(doc)
    (tmp_path / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    return subprocess.run(
        [
            xmlsec1,
            "--verify",
            "--trusted-pem",
            "ca.pem",
            "--id-attr:Id",
            root_tag,
            "--id-attr:Id",
            "http://uri.etsi.org/01903/v1.3.2#:SignedProperties",
            "--id-attr:Id",
            f"{DS}:KeyInfo",
            "signed.xml",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("doc", "root_tag"), [(DOSSIER, "urn:bhxh:hoso:HoSo"), (PLAIN, "TepTin")])
def test_xmlsec1_accepts_our_signature_and_rejects_a_changed_document(
    tmp_path: Path, ca: TestCa, ec_key, doc: bytes, root_tag: str
) -> None:
    signed = sxml.sign(ec_key, doc, signed_at=now()).document
    ok = _xmlsec1(tmp_path, signed, ca, root_tag)
    assert ok.returncode == 0, ok.stderr
    tampered = signed.replace("Văn".encode(), "Thị".encode()).replace("Bảo".encode(), "Báo".encode())
    assert tampered != signed
    assert _xmlsec1(tmp_path, tampered, ca, root_tag).returncode != 0
    assert _verify(tampered, ec_key, ca).result.sub_indication is SubIndication.HASH_FAILURE


@pytest.mark.parametrize("which", ["ec", "rsa"])
def test_round_trip_returns_the_signed_document_element(ca: TestCa, ec_key, rsa_signing_key, which: str) -> None:
    key = ec_key if which == "ec" else rsa_signing_key
    sig = sxml.sign(key, DOSSIER, signed_at=now())
    out = _verify(sig.document, key, ca)
    assert out.result.valid, out.result.reasons
    assert out.result.signed_at == sig.signed_at and out.result.key_id == key.kid
    # The key's algorithm, under the name the JWS and CMS results give it.
    assert out.result.algorithm is key.algorithm.signature_algorithm
    assert out.result.algorithm is (SignatureAlgorithm.ES256 if which == "ec" else SignatureAlgorithm.PS256)
    assert out.signed_element.tag == "{urn:bhxh:hoso}HoSo"
    assert out.signed_element.findtext("{urn:bhxh:hoso}NguoiNop") == "Nguyễn Văn A"


def test_rsa_xml_signatures_use_pss(rsa_signing_key) -> None:
    doc = sxml.sign(rsa_signing_key, PLAIN, signed_at=now()).document
    method = etree.fromstring(doc).find(f".//{{{DS}}}SignatureMethod")
    assert method.get("Algorithm") == SignatureMethod.SHA256_RSA_MGF1.value


def test_changed_signature_value_gives_sig_crypto_failure(ca: TestCa, ec_key) -> None:
    root = etree.fromstring(sxml.sign(ec_key, DOSSIER, signed_at=now()).document)
    value = root.find(f".//{{{DS}}}SignatureValue")
    raw = bytearray(base64.b64decode(value.text))
    raw[5] ^= 0x01
    value.text = base64.b64encode(bytes(raw)).decode()
    result = _verify(etree.tostring(root), ec_key, ca).result
    assert result.sub_indication is SubIndication.SIG_CRYPTO_FAILURE


def test_changed_signing_time_gives_hash_failure(ca: TestCa, ec_key) -> None:
    root = etree.fromstring(sxml.sign(ec_key, DOSSIER, signed_at=now()).document)
    node = root.find(".//{http://uri.etsi.org/01903/v1.3.2#}SigningTime")
    node.text = "2020-01-01T00:00:00+00:00"
    assert _verify(etree.tostring(root), ec_key, ca).result.sub_indication is SubIndication.HASH_FAILURE


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE HoSo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<HoSo><Data>&xxe;</Data></HoSo>"""
BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<lolz>&lol3;</lolz>"""
UTF16_DTD = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'.encode("utf-16")


@pytest.mark.parametrize("doc", [XXE, BOMB, UTF16_DTD, b"<unclosed>", b"", b"\x00\x01"])
def test_unsafe_or_malformed_xml_is_refused_for_signing(ec_key, doc: bytes) -> None:
    with pytest.raises(InvalidXml):
        sxml.sign(ec_key, doc, signed_at=now())


@pytest.mark.parametrize("doc", [XXE, BOMB, UTF16_DTD, b"<unclosed>"])
def test_unsafe_or_malformed_xml_gives_format_failure(ca: TestCa, ec_key, doc: bytes) -> None:
    result = _verify(doc, ec_key, ca).result
    assert result.sub_indication is SubIndication.FORMAT_FAILURE
    assert result.indication is Indication.TOTAL_FAILED


def test_entity_is_never_expanded_into_a_signed_document(ec_key) -> None:
    with pytest.raises(InvalidXml, match="DTD"):
        sxml.sign(ec_key, XXE, signed_at=now())


def test_unsigned_document_gives_format_failure(ca: TestCa, ec_key) -> None:
    assert _verify(DOSSIER, ec_key, ca).result.sub_indication is SubIndication.FORMAT_FAILURE


# --- signature wrapping ------------------------------------------------------------------------


def test_forged_sibling_with_the_signed_id_is_refused(ca: TestCa, ec_key) -> None:
    root = etree.fromstring(sxml.sign(ec_key, DOSSIER, signed_at=now()).document)
    forged = etree.SubElement(root, "{urn:bhxh:hoso}HoSo", Id="hs-1")
    etree.SubElement(forged, "{urn:bhxh:hoso}SoTien").text = "99000000"
    out = _verify(etree.tostring(root), ec_key, ca)
    assert out.result.sub_indication is SubIndication.FORMAT_FAILURE
    assert "hs-1" in out.result.reasons[0]
    assert out.signed_element is None


def test_signed_element_moved_under_a_forged_root_is_refused(ca: TestCa, ec_key) -> None:
    signed = etree.fromstring(sxml.sign(ec_key, DOSSIER, signed_at=now()).document)
    signature = signed.find(f"{{{DS}}}Signature")
    signed.remove(signature)
    # Classic XSW: a forged document element carries the genuine signature, and the genuine,
    # still-verifying element hides inside it.
    forged = etree.Element("{urn:bhxh:hoso}HoSo", Id="hs-evil", nsmap={None: "urn:bhxh:hoso"})
    etree.SubElement(forged, "{urn:bhxh:hoso}SoTien").text = "99000000"
    hidden = etree.SubElement(forged, "{urn:bhxh:hoso}PhuLuc")
    hidden.append(signed)
    forged.append(signature)
    # Without the coverage check this layout verifies: the hidden element still matches.
    out = _verify(etree.tostring(forged), ec_key, ca)
    assert out.result.sub_indication is SubIndication.FORMAT_FAILURE
    assert "wrapping" in out.result.reasons[0]
    assert out.signed_element is None


def test_duplicate_signed_properties_id_is_refused(ca: TestCa, ec_key) -> None:
    root = etree.fromstring(sxml.sign(ec_key, DOSSIER, signed_at=now()).document)
    props = root.find(".//{http://uri.etsi.org/01903/v1.3.2#}SignedProperties")
    copy = etree.fromstring(etree.tostring(props))
    root.insert(0, copy)
    assert _verify(etree.tostring(root), ec_key, ca).result.sub_indication is SubIndication.FORMAT_FAILURE


def test_signature_over_a_sub_element_is_refused(ca: TestCa, ec_key) -> None:
    # Signed elsewhere, by reference to one child: the rest of the document is unsigned.
    doc = etree.fromstring(b"<HoSo><Phan Id='p1'>signed part</Phan><SoTien>1</SoTien></HoSo>")
    signed = XMLSigner(signature_algorithm=SignatureMethod.ECDSA_SHA256).sign(
        doc, key=ec_key.private_key, cert=list(ec_key.chain), reference_uri="#p1"
    )
    out = _verify(etree.tostring(signed), ec_key, ca)
    assert out.result.sub_indication is SubIndication.FORMAT_FAILURE
    assert out.signed_element is None


def test_two_signatures_are_refused(ca: TestCa, ec_key) -> None:
    root = etree.fromstring(sxml.sign(ec_key, DOSSIER, signed_at=now()).document)
    sig = root.find(f"{{{DS}}}Signature")
    root.append(etree.fromstring(etree.tostring(sig)))
    assert _verify(etree.tostring(root), ec_key, ca).result.sub_indication is SubIndication.FORMAT_FAILURE


def test_plain_xmldsig_made_elsewhere_verifies_and_returns_the_document(ca: TestCa, ec_key) -> None:
    signed = XMLSigner(signature_algorithm=SignatureMethod.ECDSA_SHA256).sign(
        etree.fromstring(PLAIN), key=ec_key.private_key, cert=list(ec_key.chain)
    )
    out = _verify(etree.tostring(signed), ec_key, ca)
    assert out.result.valid, out.result.reasons
    assert out.signed_element.findtext("Dong") == "Bảo hiểm xã hội"
    assert out.result.signed_at is None


@pytest.mark.parametrize(
    ("which", "method", "name"),
    [
        ("rsa", SignatureMethod.RSA_SHA256, SignatureAlgorithm.RS256),
        ("rsa", SignatureMethod.SHA512_RSA_MGF1, SignatureAlgorithm.PS512),
        ("ec", SignatureMethod.ECDSA_SHA384, SignatureAlgorithm.ES384),
    ],
    ids=["rsa-pkcs1-sha256", "rsa-pss-sha512", "ecdsa-sha384"],
)
def test_an_xml_signature_made_elsewhere_is_named_as_the_other_formats_name_its_algorithm(
    ca: TestCa, ec_key, rsa_signing_key, which: str, method: SignatureMethod, name: SignatureAlgorithm
) -> None:
    key = ec_key if which == "ec" else rsa_signing_key
    signed = XMLSigner(signature_algorithm=method).sign(
        etree.fromstring(PLAIN), key=key.private_key, cert=list(key.chain)
    )
    result = _verify(etree.tostring(signed), key, ca).result
    assert result.valid, result.reasons
    assert result.algorithm is name and result.to_dict()["algorithm"] == name.value
    # The XMLDSig URI stays available beside the name.
    assert result.algorithm_identifier == method.value


# --- crypto constraints, keys, trust ----------------------------------------------------------------


def test_sha1_signature_method_gives_crypto_constraints_failure(ca: TestCa, rsa_signing_key) -> None:
    class _LegacySigner(XMLSigner):
        def check_deprecated_methods(self) -> None:  # signxml refuses SHA-1; a legacy system would not
            return None

    signer = _LegacySigner(signature_algorithm=SignatureMethod.RSA_SHA1, digest_algorithm="sha1")
    signed = signer.sign(etree.fromstring(PLAIN), key=rsa_signing_key.private_key, cert=list(rsa_signing_key.chain))
    result = _verify(etree.tostring(signed), rsa_signing_key, ca).result
    assert result.sub_indication is SubIndication.CRYPTO_CONSTRAINTS_FAILURE


def test_rsa_1024_signer_gives_crypto_constraints_failure(ca: TestCa) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = ca.issue(weak.public_key(), "Weak")
    signed = XMLSigner(signature_algorithm=SignatureMethod.RSA_SHA256).sign(
        etree.fromstring(PLAIN), key=weak, cert=[cert]
    )
    result = sxml.verify(etree.tostring(signed), Keystore(), TrustPolicy([ca.cert]), now=now()).result
    assert result.sub_indication is SubIndication.CRYPTO_CONSTRAINTS_FAILURE


def test_signature_without_certificate_gives_no_signing_certificate_found(ca: TestCa, ec_key) -> None:
    root = etree.fromstring(sxml.sign(ec_key, DOSSIER, signed_at=now()).document)
    for data in root.iterfind(f".//{{{DS}}}X509Data"):
        data.getparent().remove(data)
    result = _verify(etree.tostring(root), ec_key, ca).result
    assert result.sub_indication is SubIndication.NO_SIGNING_CERTIFICATE_FOUND


def test_untrusted_ca_gives_no_certificate_chain_found(ec_key) -> None:
    doc = sxml.sign(ec_key, DOSSIER, signed_at=now()).document
    other = TestCa.create("Other CA")
    result = sxml.verify(doc, Keystore(), TrustPolicy([other.cert]), now=now()).result
    assert result.sub_indication is SubIndication.NO_CERTIFICATE_CHAIN_FOUND


def test_expired_certificate_gives_expired(ca: TestCa) -> None:
    t = now()
    key = certified_key(
        ca, ec.generate_private_key(ec.SECP256R1()), not_before=t - timedelta(days=9), not_after=t - timedelta(days=1)
    )
    doc = sxml.sign(key, DOSSIER, signed_at=t - timedelta(days=2)).document
    assert (
        sxml.verify(doc, Keystore([key]), TrustPolicy([ca.cert]), now=t).result.sub_indication is SubIndication.EXPIRED
    )


def test_ed25519_and_uncertified_keys_cannot_sign_xml(ca: TestCa) -> None:
    with pytest.raises(KeyNotUsable):
        sxml.sign(certified_key(ca, ed25519.Ed25519PrivateKey.generate()), DOSSIER, signed_at=now())
    with pytest.raises(KeyNotUsable):
        sxml.sign(bare_key("ES256"), DOSSIER, signed_at=now())


def test_already_signed_document_is_refused_for_signing(ec_key) -> None:
    doc = sxml.sign(ec_key, DOSSIER, signed_at=now()).document
    with pytest.raises(InvalidXml):
        sxml.sign(ec_key, doc, signed_at=now())
