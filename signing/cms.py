"""CMS / CAdES-B detached signatures (RFC 5652, ETSI EN 319 122-1 baseline B) with pyHanko.

Signed attributes: content-type, message-digest, signing-time and ESS signing-certificate-v2
(RFC 5035), which binds the signer's certificate into what is signed. RSA keys sign with
RSASSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) and ECDSA P-256 with SHA-256;
``openssl cms -verify -binary -content payload -CAfile ca`` accepts the result. Ed25519 keys do
not sign CMS here: OpenSSL 3.0 rejects RFC 8419 Ed25519 signer infos with signed attributes
("invalid digest"), so the acceptance criterion could not hold. Ed25519 CMS made elsewhere is
still verified.

Verification checks, in ETSI order: structure (FORMAT_FAILURE), algorithm and key policy
(CRYPTO_CONSTRAINTS_FAILURE), the message digest against the data (HASH_FAILURE), the signature
value (SIG_CRYPTO_FAILURE), our own key's revocation (REVOKED), then the certificate's path,
validity and revocation through the trust policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.sign.general import CMSExtractionError, CMSStructuralError, extract_certificate_info
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes, Signer
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.generic_cms import extract_self_reported_ts, validate_sig_integrity
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signing.algorithms import (
    PSS_SALT_BYTES,
    Algorithm,
    SignatureAlgorithm,
    check_verification_key,
    sign_raw,
    signature_algorithm,
)
from signing.errors import (
    CryptoConstraintsFailure,
    FormatFailure,
    HashFailure,
    KeyNotUsable,
    NoSigningCertificate,
    SigCryptoFailure,
    VerificationFailure,
    WeakKey,
)
from signing.keystore import Keystore, SigningKey
from signing.loops import run_sync
from signing.results import Signer as SignerInfo
from signing.results import VerificationResult
from signing.trust import TrustPolicy

FORMAT = "cms"
ALLOWED_DIGESTS = frozenset({"sha256", "sha384", "sha512"})
_DIGEST_FOR = {Algorithm.ES256: "sha256", Algorithm.PS256: "sha256"}
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError)
# pyHanko tags its own validation errors with an AdES sub-indication; keep the ones we report.
_BY_SUB_INDICATION: dict[str, type[VerificationFailure]] = {
    cls.sub_indication: cls
    for cls in (FormatFailure, NoSigningCertificate, HashFailure, SigCryptoFailure, CryptoConstraintsFailure)
}


@dataclass(frozen=True)
class CmsSignature:
    der: bytes
    key_id: str
    algorithm: Algorithm
    signed_at: datetime


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _mechanism(algorithm: Algorithm) -> algos.SignedDigestAlgorithm:
    if algorithm is Algorithm.PS256:
        params = algos.RSASSAPSSParams(
            {
                "hash_algorithm": {"algorithm": "sha256"},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
                "salt_length": PSS_SALT_BYTES,
                "trailer_field": "trailer_field_bc",
            }
        )
        return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": params})
    return algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"})


class _KeystoreSigner(Signer):
    """A pyHanko signer over a key the keystore parsed once. (pyHanko's ``SimpleSigner``
    re-reads the private key from DER for every signature.)"""

    def __init__(self, key: SigningKey) -> None:
        if key.private_key is None or key.certificate is None:
            raise KeyNotUsable(f"key {key.kid} cannot sign CMS: it needs an active private key and a certificate")
        if key.algorithm not in _DIGEST_FOR:
            raise KeyNotUsable("CMS signatures need an RSA or P-256 key with a certificate")
        # pyHanko puts the signing certificate into SignedData.certificates itself, beside the
        # registry's; the keystore's chain starts with it, so the registry takes the rest only:
        # a second copy in that SET OF (RFC 5652 §5.1) would add bytes and nothing else.
        others = [_asn1_cert(c) for c in key.chain if c != key.certificate]
        super().__init__(
            signing_cert=_asn1_cert(key.certificate),
            cert_registry=SimpleCertificateStore.from_certs(others),
            signature_mechanism=_mechanism(key.algorithm),
            embed_roots=False,
        )
        self._private_key = key.private_key

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        return sign_raw(self._private_key, data)


def pyhanko_signer(key: SigningKey) -> Signer:
    """A pyHanko ``Signer`` for an active keystore key with a certificate (CMS, PAdES)."""
    if not key.can_sign:
        raise KeyNotUsable(f"key {key.kid} is {key.state.value}: only the active key signs")
    return _KeystoreSigner(key)


def sign(key: SigningKey, payload: bytes, *, signed_at: datetime) -> CmsSignature:
    """A detached CAdES-B signature over ``payload`` (DER ``ContentInfo``)."""
    key.check_signs_messages()
    signer = pyhanko_signer(key)
    content_info = run_sync(
        signer.async_sign_general_data(
            payload,
            _DIGEST_FOR[key.algorithm],
            detached=True,
            use_cades=True,
            signed_attr_settings=PdfCMSSignedAttributes(signing_time=signed_at.astimezone(UTC)),
        )
    )
    return CmsSignature(content_info.dump(), key.kid, key.algorithm, signed_at)


@dataclass
class _Facts:
    key_id: str | None = None
    signer: SignerInfo | None = None
    signed_at: datetime | None = None
    algorithm: SignatureAlgorithm | None = None
    algorithm_identifier: str | None = None


def verify(
    signature: bytes, payload: bytes, keystore: Keystore, trust: TrustPolicy, *, now: datetime
) -> VerificationResult:
    """Verify a detached CMS signature (DER) over ``payload``."""
    facts = _Facts()
    try:
        _verify(signature, payload, keystore, trust, now, facts)
    except VerificationFailure as failure:
        return VerificationResult.failed(
            FORMAT,
            failure,
            key_id=facts.key_id,
            signer=facts.signer,
            signed_at=facts.signed_at,
            algorithm=facts.algorithm,
            algorithm_identifier=facts.algorithm_identifier,
        )
    return VerificationResult(
        format=FORMAT,
        sub_indication=None,
        key_id=facts.key_id,
        signer=facts.signer,
        signed_at=facts.signed_at,
        algorithm=facts.algorithm,
        algorithm_identifier=facts.algorithm_identifier,
    )


def _parse(signature: bytes) -> tuple[cms.SignedData, cms.SignerInfo]:
    try:
        content_info = cms.ContentInfo.load(signature, strict=True)
        if content_info["content_type"].native != "signed_data":
            raise FormatFailure("not a CMS SignedData object")
        signed_data = content_info["content"]
        signer_infos = signed_data["signer_infos"]
        if len(signer_infos) != 1:
            raise FormatFailure(f"expected one signer, found {len(signer_infos)}")
        signer_info = signer_infos[0]
        content = signed_data["encap_content_info"]["content"]
        if content is not core.VOID and content.native is not None:
            raise FormatFailure("the signature encapsulates its content; a detached signature was expected")
        if signer_info["signed_attrs"] is core.VOID or len(signer_info["signed_attrs"]) == 0:
            raise FormatFailure("CAdES requires signed attributes")
        # asn1crypto parses lazily; touching the fields here makes damage show up as a format error.
        _ = signer_info["digest_algorithm"]["algorithm"].native
        _ = signer_info["signature_algorithm"]["algorithm"].native
    except _ASN1_ERRORS as exc:
        raise FormatFailure(f"not a DER CMS signature: {exc}") from exc
    return signed_data, signer_info


def _check_algorithms(signer_info: cms.SignerInfo, cert: x509.Certificate) -> SignatureAlgorithm:
    """Refuse what the policy does not allow; name what it does (signing.algorithms)."""
    try:
        check_verification_key(cert.public_key())
    except WeakKey as exc:
        raise CryptoConstraintsFailure(str(exc)) from exc
    digest = signer_info["digest_algorithm"]["algorithm"].native
    if digest not in ALLOWED_DIGESTS:
        raise CryptoConstraintsFailure(f"message digest {digest} is not allowed (SHA-256 or better)")
    mechanism = signer_info["signature_algorithm"]
    name = mechanism["algorithm"].native
    # The hash the signature is made with: PSS names it in its parameters, an OID such as
    # sha256WithRSAEncryption in itself; a bare rsaEncryption or ecdsa OID uses the digest's.
    signed_hash = digest
    if name == "rsassa_pss":
        params = mechanism["parameters"]
        signed_hash = params["hash_algorithm"]["algorithm"].native
        hashes_used = {signed_hash, params["mask_gen_algorithm"]["parameters"]["algorithm"].native}
        if not hashes_used <= ALLOWED_DIGESTS:
            raise CryptoConstraintsFailure(f"RSASSA-PSS with {sorted(hashes_used)} is not allowed")
    elif name not in ("ed25519", "rsassa_pkcs1v15", "ecdsa"):
        try:
            signed_hash = mechanism.hash_algo
        except ValueError as exc:
            raise CryptoConstraintsFailure(f"signature algorithm {name} is not allowed") from exc
        if signed_hash not in ALLOWED_DIGESTS:
            raise CryptoConstraintsFailure(f"signature algorithm {name} is not allowed (SHA-256 or better)")
    try:
        return signature_algorithm(mechanism.signature_algo, signed_hash)
    except ValueError as exc:
        raise CryptoConstraintsFailure(f"signature algorithm {name} is not allowed") from exc


def _verify(
    signature: bytes, payload: bytes, keystore: Keystore, trust: TrustPolicy, now: datetime, facts: _Facts
) -> None:
    signed_data, signer_info = _parse(signature)
    try:
        cert_info = extract_certificate_info(signed_data)
        asn1_cert = cert_info.signer_cert
        cert = x509.load_der_x509_certificate(asn1_cert.dump())
        other_certs = [x509.load_der_x509_certificate(c.dump()) for c in cert_info.other_certs]
        facts.signed_at = extract_self_reported_ts(signer_info)
    except CMSExtractionError as exc:
        raise NoSigningCertificate("the signer's certificate is not in the signature") from exc
    except _ASN1_ERRORS as exc:
        raise FormatFailure(f"unreadable certificates or attributes: {exc}") from exc
    own = keystore.by_public_key(cert.public_key())
    facts.key_id = own.kid if own else None
    facts.signer = SignerInfo.from_certificate(cert, facts.key_id, own.purpose if own else None)
    facts.algorithm_identifier = signer_info["signature_algorithm"]["algorithm"].dotted
    facts.algorithm = _check_algorithms(signer_info, cert)
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    actual = hashlib.new(digest_name, payload).digest()
    try:
        intact, valid = validate_sig_integrity(
            signer_info, asn1_cert, expected_content_type="data", actual_digest=actual
        )
    except SignatureValidationError as exc:
        indic = getattr(exc, "ades_subindication", None)
        failure = _BY_SUB_INDICATION.get(indic.name if indic is not None else "", FormatFailure)
        raise failure(str(exc)) from exc
    except (CMSStructuralError, *_ASN1_ERRORS) as exc:
        raise FormatFailure(f"malformed signer info: {exc}") from exc
    if not valid:
        raise SigCryptoFailure("the signature value does not verify under the signer's certificate")
    if not intact:
        raise HashFailure("the message digest in the signature does not match the data")
    if own is not None:
        own.check_not_revoked_at(facts.signed_at)
    trust.validate(cert, other_certs, moment=now, signed_at=facts.signed_at)
