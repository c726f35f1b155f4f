"""XMLDSig / XAdES-B enveloped signatures for XML dossiers (signxml), with safe parsing.

Parsing refuses any DTD (so no external entity, no entity-expansion bomb can be declared),
never touches the network and keeps lxml's size limits. Signatures are enveloped over the
whole document (``URI=""``), with XAdES SignedProperties carrying the signing time and the
signer's certificate digest (SigningCertificateV2).

Against signature wrapping, verification accepts exactly one ``ds:Signature``, refuses
documents in which two elements share an Id, and hands back the element the signature
actually covers (as verified), never an element found by searching the document again.
Callers must read the data from ``XmlVerification.signed_element``.

Ed25519 is not offered: XMLDSig 1.1 defines no identifier for it and neither signxml nor
Debian's xmlsec1 1.2 supports one. RSA keys sign with RSASSA-PSS (``sha256-rsa-MGF1``,
RFC 6931); xmlsec1 1.2 cannot check PSS, so independent checks use ECDSA P-256.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature, SignXMLException
from signxml.verifier import SignatureConfiguration, XMLVerifier
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESSigner, XAdESVerifier

from signing.algorithms import Algorithm, SignatureAlgorithm, check_verification_key
from signing.errors import (
    ChainConstraintsFailure,
    CryptoConstraintsFailure,
    FormatFailure,
    HashFailure,
    InvalidXml,
    KeyNotUsable,
    NoSigningCertificate,
    SigCryptoFailure,
    VerificationFailure,
    WeakKey,
)
from signing.keystore import Keystore, SigningKey
from signing.results import Signer, VerificationResult
from signing.trust import TrustPolicy

FORMAT = "xml"
MAX_XML_BYTES = 32 * 1024 * 1024
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
_ID_NAMES = frozenset({"Id", "ID", "id"})
_SIGN_METHODS = {Algorithm.PS256: SignatureMethod.SHA256_RSA_MGF1, Algorithm.ES256: SignatureMethod.ECDSA_SHA256}
# Accepted when verifying: SHA-2 only; RSA with PSS or (for signatures made elsewhere) PKCS#1 v1.5.
# Each under the name results give it (RFC 6931, RSASSA-PSS without parameters: MGF1 with the
# same hash, a salt as long as its output, which is what PS256/384/512 are).
_METHOD_NAMES = {
    SignatureMethod.SHA256_RSA_MGF1: SignatureAlgorithm.PS256,
    SignatureMethod.SHA384_RSA_MGF1: SignatureAlgorithm.PS384,
    SignatureMethod.SHA512_RSA_MGF1: SignatureAlgorithm.PS512,
    SignatureMethod.RSA_SHA256: SignatureAlgorithm.RS256,
    SignatureMethod.RSA_SHA384: SignatureAlgorithm.RS384,
    SignatureMethod.RSA_SHA512: SignatureAlgorithm.RS512,
    SignatureMethod.ECDSA_SHA256: SignatureAlgorithm.ES256,
    SignatureMethod.ECDSA_SHA384: SignatureAlgorithm.ES384,
    SignatureMethod.ECDSA_SHA512: SignatureAlgorithm.ES512,
}
_ACCEPTED_METHODS = frozenset(_METHOD_NAMES)
_ACCEPTED_DIGESTS = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512})


class _ExpectOptions(TypedDict):
    """What both the plain and the XAdES signature configurations of ``verify`` share."""

    location: str
    signature_methods: frozenset[SignatureMethod]
    digest_algorithms: frozenset[DigestAlgorithm]
    verification_time: datetime
    ignore_ambiguous_key_info: bool


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not safe to share across threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        remove_pis=False,
    )


def parse_xml(data: bytes) -> etree._Element:
    """Parse untrusted XML; raises ``InvalidXml`` for anything malformed, oversized or with a DTD."""
    if len(data) > MAX_XML_BYTES:
        raise InvalidXml(f"the XML exceeds {MAX_XML_BYTES} bytes")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        # Refused before parsing: a DTD is how XXE and entity bombs are declared.
        raise InvalidXml("XML with a DTD or entity declarations is refused")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise InvalidXml(f"not well-formed XML: {exc}") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise InvalidXml("XML with a DTD or entity declarations is refused")
    return root


@dataclass(frozen=True)
class XmlSignature:
    document: bytes
    key_id: str
    algorithm: Algorithm
    signed_at: datetime


@dataclass(frozen=True)
class XmlVerification:
    """The verdict, and the element the signature covers (``None`` unless it verified)."""

    result: VerificationResult
    signed_element: Any = None  # lxml element, from the verified copy of the document


class _ClockedXAdESSigner(XAdESSigner):
    """signxml stamps XAdES SigningTime with the wall clock; the service's clock decides here."""

    def __init__(self, signed_at: datetime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._signed_at = signed_at

    def add_signing_time(self, signed_signature_properties: Any, sig_root: Any, signing_settings: Any) -> None:
        node = etree.SubElement(signed_signature_properties, f"{{{XADES_NS}}}SigningTime", nsmap=self.namespaces)
        node.text = self._signed_at.astimezone(UTC).isoformat(timespec="seconds")


def sign(key: SigningKey, document: bytes, *, signed_at: datetime) -> XmlSignature:
    """Envelop a XAdES-B signature into ``document`` (the whole document is signed)."""
    if not key.can_sign or key.private_key is None:
        raise KeyNotUsable(f"key {key.kid} is {key.state.value}: only the active key signs")
    key.check_signs_messages()
    private = key.private_key
    if (
        key.algorithm not in _SIGN_METHODS
        or key.certificate is None
        or not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    ):
        raise KeyNotUsable("XML signatures need an RSA or P-256 key with a certificate")
    root = parse_xml(document)
    if root.find(f".//{{{DS_NS}}}Signature") is not None:
        raise InvalidXml("the document already carries an XML signature")
    signer = _ClockedXAdESSigner(
        signed_at,
        signature_algorithm=_SIGN_METHODS[key.algorithm],
        digest_algorithm=DigestAlgorithm.SHA256,
    )
    # No ds:KeyValue: the certificate in X509Data is the one statement of the key.
    # The data reference covers the document element: URI="" or "#<its Id>" (signxml's choice).
    signed = signer.sign(root, key=private, cert=list(key.chain), always_add_key_value=False)
    out = etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
    return XmlSignature(out, key.kid, key.algorithm, signed_at)


@dataclass
class _Facts:
    key_id: str | None = None
    signer: Signer | None = None
    signed_at: datetime | None = None
    algorithm: SignatureAlgorithm | None = None
    algorithm_identifier: str | None = None
    element: Any = None


def verify(document: bytes, keystore: Keystore, trust: TrustPolicy, *, now: datetime) -> XmlVerification:
    facts = _Facts()
    try:
        _verify(document, keystore, trust, now, facts)
    except VerificationFailure as failure:
        result = VerificationResult.failed(
            FORMAT,
            failure,
            key_id=facts.key_id,
            signer=facts.signer,
            signed_at=facts.signed_at,
            algorithm=facts.algorithm,
            algorithm_identifier=facts.algorithm_identifier,
        )
        return XmlVerification(result, None)
    result = VerificationResult(
        format=FORMAT,
        sub_indication=None,
        key_id=facts.key_id,
        signer=facts.signer,
        signed_at=facts.signed_at,
        algorithm=facts.algorithm,
        algorithm_identifier=facts.algorithm_identifier,
    )
    return XmlVerification(result, facts.element)


def _check_ids(root: etree._Element) -> None:
    values: Counter[str] = Counter()
    for element in root.iter():
        for name, value in element.attrib.items():
            if etree.QName(name).localname in _ID_NAMES:
                values[value] += 1
    duplicated = sorted(v for v, n in values.items() if n > 1)
    if duplicated:
        raise FormatFailure(f"several elements share the Id {duplicated[0]!r} (signature wrapping?)")


def _certificates(signature: etree._Element) -> list[x509.Certificate]:
    certs = []
    for node in signature.iterfind(f"{{{DS_NS}}}KeyInfo/{{{DS_NS}}}X509Data/{{{DS_NS}}}X509Certificate"):
        try:
            certs.append(x509.load_der_x509_certificate(base64.b64decode("".join((node.text or "").split()))))
        except (ValueError, binascii.Error) as exc:
            raise FormatFailure("an X509Certificate element does not hold a certificate") from exc
    return certs


def _check_algorithms(
    signature: etree._Element, method: etree._Element | None, cert: x509.Certificate
) -> SignatureAlgorithm:
    """Refuse what the policy does not allow; name what it does (signing.algorithms)."""
    try:
        check_verification_key(cert.public_key())
    except WeakKey as exc:
        raise CryptoConstraintsFailure(str(exc)) from exc
    if method is None:
        raise FormatFailure("no SignatureMethod")
    uri = method.get("Algorithm", "")
    if uri not in {m.value for m in _ACCEPTED_METHODS}:
        raise CryptoConstraintsFailure(f"signature method {uri} is not allowed (SHA-256 or better)")
    for digest in signature.iterfind(f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}Reference/{{{DS_NS}}}DigestMethod"):
        if digest.get("Algorithm", "") not in {d.value for d in _ACCEPTED_DIGESTS}:
            raise CryptoConstraintsFailure(f"digest method {digest.get('Algorithm')} is not allowed")
    return _METHOD_NAMES[SignatureMethod(uri)]


def _signing_time(results: list[Any]) -> datetime | None:
    for item in results:
        props = getattr(item, "signed_properties", None)
        if props is None:
            continue
        node = props.find(f"{{{XADES_NS}}}SigningTime")
        if node is None or not node.text:
            return None
        try:
            moment = datetime.fromisoformat(node.text.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise FormatFailure("SigningTime is not an xs:dateTime") from exc
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def _data_results(results: list[Any]) -> list[Any]:
    covered = []
    for item in results:
        element = item.signed_xml
        if element is None:
            continue
        tag = etree.QName(element)
        if (tag.namespace, tag.localname) in {(XADES_NS, "SignedProperties"), (DS_NS, "KeyInfo")}:
            continue
        covered.append(item)
    return covered


def _check_covers_document(signature: etree._Element, root: etree._Element) -> None:
    """The data reference must name the document element itself. A reference to any other
    element lets an attacker move the signed element aside and put forged data where the
    application reads (XML signature wrapping)."""
    allowed = {""} | {f"#{root.get(name)}" for name in _ID_NAMES if root.get(name) is not None}
    for ref in signature.iterfind(f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}Reference"):
        uri = ref.get("URI")
        if ref.get("Type") == "http://uri.etsi.org/01903#SignedProperties":
            continue
        target = signature.find(f"{{{DS_NS}}}KeyInfo")
        if target is not None and uri is not None and target.get("Id") and uri == f"#{target.get('Id')}":
            continue
        if uri not in allowed:
            raise FormatFailure(f"the signature covers {uri!r}, not the document element (signature wrapping?)")


def _verify(document: bytes, keystore: Keystore, trust: TrustPolicy, now: datetime, facts: _Facts) -> None:
    try:
        root = parse_xml(document)
    except InvalidXml as exc:
        raise FormatFailure(str(exc)) from exc
    _check_ids(root)
    signatures = root.findall(f".//{{{DS_NS}}}Signature")
    if len(signatures) != 1:
        raise FormatFailure(f"expected exactly one ds:Signature, found {len(signatures)}")
    signature = signatures[0]
    if signature.getparent() is not root:
        raise FormatFailure("the signature is not enveloped in the document element")
    certs = _certificates(signature)
    if not certs:
        raise NoSigningCertificate("the signature carries no X.509 certificate")
    cert = certs[0]
    own = keystore.by_public_key(cert.public_key())
    facts.key_id = own.kid if own else None
    facts.signer = Signer.from_certificate(cert, facts.key_id, own.purpose if own else None)
    method = signature.find(f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}SignatureMethod")
    facts.algorithm_identifier = None if method is None else method.get("Algorithm")
    facts.algorithm = _check_algorithms(signature, method, cert)
    is_xades = signature.find(f"{{{DS_NS}}}Object/{{{XADES_NS}}}QualifyingProperties") is not None
    # Validity dates are the trust policy's business (EXPIRED, NOT_YET_VALID); signxml is asked
    # to check the maths at a moment inside the certificate's validity.
    inside = min(max(now, cert.not_valid_before_utc), cert.not_valid_after_utc)
    common: _ExpectOptions = {
        "location": "./",
        "signature_methods": _ACCEPTED_METHODS,
        "digest_algorithms": _ACCEPTED_DIGESTS,
        "verification_time": inside,
        # The key is always taken from the certificate passed in (x509_cert), never from a
        # ds:KeyValue, so a KeyValue that disagrees cannot steer verification. (signxml cannot
        # compare a KeyValue with an RSA-PSS certificate at all.)
        "ignore_ambiguous_key_info": True,
    }
    try:
        if is_xades:
            results = XAdESVerifier().verify(
                root, x509_cert=cert, expect_config=XAdESSignatureConfiguration(**common), parser=_parser()
            )
        else:
            one = XMLVerifier().verify(
                root,
                x509_cert=cert,
                expect_config=SignatureConfiguration(expect_references=1, **common),
                parser=_parser(),
            )
            results = one if isinstance(one, list) else [one]
    except InvalidDigest as exc:
        raise HashFailure(f"a signed reference changed: {exc}") from exc
    except InvalidCertificate as exc:
        raise ChainConstraintsFailure(str(exc)) from exc
    except InvalidSignature as exc:
        raise SigCryptoFailure(str(exc)) from exc
    except (InvalidInput, SignXMLException, etree.LxmlError, ValueError) as exc:
        raise FormatFailure(f"the XML signature is not acceptable: {exc}") from exc
    facts.signed_at = _signing_time(results) if is_xades else None
    covered = _data_results(results)
    if len(covered) != 1:
        raise FormatFailure(f"expected the signature to cover one data object, found {len(covered)}")
    _check_covers_document(signature, root)
    if own is not None:
        own.check_not_revoked_at(facts.signed_at)
    trust.validate(cert, certs[1:], moment=now, signed_at=facts.signed_at)
    facts.element = covered[0].signed_xml
