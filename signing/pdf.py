"""PAdES signatures on PDF documents (pyHanko): signing once per document, and validation
that keeps its findings apart.

Signing is PAdES baseline B-B (ETSI EN 319 142-1), or B-T when a timestamp authority (RFC 3161)
is configured. The key is parsed once, when ``PdfSigner`` is built, and the space for the CMS
container is reserved up front: pyHanko would otherwise sign a dummy document to measure it,
and its ``SimpleSigner`` re-parses the private key for every signature.

Validation never reduces to pyHanko's ``valid``: the verdict reports separately whether the
signed bytes are intact, whether the signer chains to a trust root *and* is one of the
expected signing certificates, and how the document was modified after signing (pyHanko's
difference analysis). ``pdfsig`` calls a file with an appended page-replacing update "valid",
which is why the modification level is a fact of its own here.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import NotRequired, TypedDict

from asn1crypto import algos, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils import misc as pdf_misc
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields as pdf_fields
from pyhanko.sign import signers
from pyhanko.sign.ades.report import AdESSubIndic
from pyhanko.sign.attributes import CMSAttributeProvider, SignedAttributeProviderSpec
from pyhanko.sign.diff_analysis import ModificationLevel as _PyhankoModLevel
from pyhanko.sign.general import SigningError as _PyhankoSigningError
from pyhanko.sign.general import as_signing_certificate_v2
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.timestamps import HTTPTimeStamper, TimestampRequestError
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.status import PdfSignatureStatus, SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signing.errors import MalformedPdf, PdfSigningError
from signing.loops import run_sync
from signing.purposes import certificate_purpose

DIGEST_ALGORITHM = "sha256"
DEFAULT_FIELD_NAME = "BHXH-Signature"
# RSASSA-PSS with SHA-256, MGF1-SHA-256 and a salt as long as the digest (RFC 8017 §9.1,
# the parameters Circular 15/2025/TT-BKHCN expects and most PDF validators accept).
PSS_SALT_LENGTH = 32
# Space for the CMS container beyond certificates and signature value: signed attributes
# (content type, message digest, ESS signing-certificate-v2), algorithm identifiers, framing.
_CMS_OVERHEAD_BYTES = 3_000
# An RFC 3161 token carries the TSA's certificates; allow generously, unused space is zeros.
_TIMESTAMP_TOKEN_ALLOWANCE_BYTES = 12_000
MAX_PDF_BYTES = 20 * 1024 * 1024
_PDF_MAGIC = b"%PDF-"
# A PDF header may be preceded by junk, but only within the first 1024 bytes (ISO 32000-1 Annex H).
_PDF_HEADER_WINDOW = 1024

# pyHanko logs a traceback for every certificate it cannot trust and every modification it
# finds. Here those are expected findings, returned in the verdict; the tracebacks would only
# flood the service log (and the CLI's stderr) with certificate details.
for _noisy in ("pyhanko.sign.validation", "pyhanko.sign.diff_analysis"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)


class ModificationLevel(StrEnum):
    """How a document changed after the signed revision (pyHanko's difference analysis)."""

    NONE = "none"
    LTA_UPDATES = "lta_updates"  # only validation data and document timestamps added
    FORM_FILLING = "form_filling"
    ANNOTATIONS = "annotations"
    OTHER = "other"  # anything else, including changed page content


# Changes that leave what the signer signed untouched (PAdES B-LT/B-LTA extension).
_HARMLESS_LEVELS = frozenset({ModificationLevel.NONE, ModificationLevel.LTA_UPDATES})
_LEVELS = {
    _PyhankoModLevel.NONE: ModificationLevel.NONE,
    _PyhankoModLevel.LTA_UPDATES: ModificationLevel.LTA_UPDATES,
    _PyhankoModLevel.FORM_FILLING: ModificationLevel.FORM_FILLING,
    _PyhankoModLevel.ANNOTATIONS: ModificationLevel.ANNOTATIONS,
    _PyhankoModLevel.OTHER: ModificationLevel.OTHER,
}


@dataclass(frozen=True)
class PdfSignatureVerdict:
    """What validation found about the first signature of a PDF. ``None`` = could not tell."""

    signature_found: bool
    signature_count: int = 0
    intact: bool | None = None  # the digest of the signed byte ranges matches the signed one
    value_verifies: bool | None = None  # the signature value verifies over the signed attributes
    chain_trusted: bool | None = None  # a valid path to a trust root at the validation time
    expected_signer: bool | None = None  # the certificate is one of the expected signer certs
    trust_problem: str | None = None  # AdES sub-indication, e.g. EXPIRED, NO_CERTIFICATE_CHAIN_FOUND
    coverage: str | None = None  # entire_file, entire_revision, contiguous_block_from_start, unclear
    modification_level: ModificationLevel | None = None
    docmdp_ok: bool | None = None
    signer: str | None = None  # the signer certificate's subject, human-readable
    signer_purpose: str | None = None  # the purpose its certificate policies mark (signing.purposes)
    signer_certificate_sha256: str | None = None
    signing_time: datetime | None = None  # claimed by the signer (/M), not proven
    timestamp_time: datetime | None = None  # proven by an RFC 3161 token (B-T)
    timestamp_trusted: bool | None = None
    signed_subject: str | None = None  # /Subject of the document info in the signed revision
    problem: str | None = None  # why the signature container could not be evaluated

    @property
    def valid(self) -> bool | None:
        """The signature holds: the signed bytes are intact, the value verifies, and the signer
        chains to a trust root with a certificate neither expired nor revoked at the validation
        time. Any one "no" is no; otherwise an unknown leaves it unknown. Whether the signer is
        the expected one and what changed after signing are facts of their own."""
        return _all_of(self.intact, self.value_verifies, self.chain_trusted)

    @property
    def trusted_signer(self) -> bool | None:
        """Trusted chain and one of the expected signers (an unknown either way stays unknown)."""
        return _all_of(self.chain_trusted, self.expected_signer)

    @property
    def modified_after_signing(self) -> bool | None:
        if self.modification_level is None:
            return None
        return self.modification_level not in _HARMLESS_LEVELS

    @property
    def pades_level(self) -> str | None:
        if not self.signature_found:
            return None
        return "B-T" if self.timestamp_time is not None else "B-B"


def _all_of(*facts: bool | None) -> bool | None:
    """Three-valued "and": False if any fact is False, else None if any is unknown."""
    if any(fact is False for fact in facts):
        return False
    if any(fact is None for fact in facts):
        return None
    return True


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _pss_mechanism() -> algos.SignedDigestAlgorithm:
    return algos.SignedDigestAlgorithm(
        {
            "algorithm": "rsassa_pss",
            "parameters": algos.RSASSAPSSParams(
                {
                    "hash_algorithm": algos.DigestAlgorithm({"algorithm": DIGEST_ALGORITHM}),
                    "mask_gen_algorithm": algos.MaskGenAlgorithm(
                        {
                            "algorithm": "mgf1",
                            "parameters": algos.DigestAlgorithm({"algorithm": DIGEST_ALGORITHM}),
                        }
                    ),
                    "salt_length": PSS_SALT_LENGTH,
                    "trailer_field": "trailer_field_bc",
                }
            ),
        }
    )


class _SigningCertificateV2(CMSAttributeProvider):
    """The ESS signing-certificate-v2 attribute (RFC 5035) PAdES requires, encoded once."""

    attribute_type = "signing_certificate_v2"

    def __init__(self, certificate: asn1_x509.Certificate) -> None:
        self._der = as_signing_certificate_v2(certificate).dump()

    async def build_attr_value(self, dry_run: bool = False) -> tsp.SigningCertificateV2:
        return tsp.SigningCertificateV2.load(self._der)


class _PadesSignedAttributes(SignedAttributeProviderSpec):
    """PAdES baseline signed attributes beyond content-type and message-digest: only
    signing-certificate-v2 (no signing-time attribute: PAdES puts the time in /M)."""

    def __init__(self, certificate: asn1_x509.Certificate) -> None:
        self._signing_certificate = _SigningCertificateV2(certificate)

    def signed_attr_providers(self, data_digest: bytes, digest_algorithm: str) -> Iterator[CMSAttributeProvider]:
        yield self._signing_certificate


class _LoadedKeySigner(signers.Signer):
    """A pyHanko signer over an already-parsed key (SimpleSigner re-parses it per signature)."""

    def __init__(
        self,
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        certificate: asn1_x509.Certificate,
        chain: Sequence[asn1_x509.Certificate],
    ) -> None:
        if isinstance(key, rsa.RSAPrivateKey):
            mechanism = _pss_mechanism()
            self._signature_size = key.key_size // 8
        else:
            mechanism = algos.SignedDigestAlgorithm({"algorithm": f"{DIGEST_ALGORITHM}_ecdsa"})
            # DER ECDSA-Sig-Value: two integers of at most the curve size plus sign bytes.
            self._signature_size = 2 * (key.curve.key_size // 8 + 3) + 3
        # Intermediates travel in the CMS; roots come from the verifier's trust list. The
        # signer's own certificate is added by pyHanko: a chain that starts with it must not
        # put it in a second time.
        intermediates = [c for c in chain if c.self_signed == "no" and c.dump() != certificate.dump()]
        super().__init__(
            signature_mechanism=mechanism,
            signing_cert=certificate,
            cert_registry=SimpleCertificateStore.from_certs(intermediates),
            embed_roots=False,
        )
        self._key = key
        self._certificate_der = certificate.dump()
        self._mechanism_der = mechanism.dump()
        self.signed_attr_prov_spec = _PadesSignedAttributes(certificate)

    # asn1crypto copies and re-encodes a value that has been parsed field by field whenever it
    # is placed into a new structure; pyHanko does that with the certificate and the algorithm
    # for every signature (most of its signing time here). Handing out a freshly loaded,
    # still unparsed value each time makes those copies byte copies.
    @property
    def signing_cert(self) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(self._certificate_der)

    @property
    def signature_mechanism(self) -> algos.SignedDigestAlgorithm:
        return algos.SignedDigestAlgorithm.load(self._mechanism_der)

    @property
    def signature_size(self) -> int:
        return self._signature_size

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            return bytes(self._signature_size)
        if digest_algorithm != DIGEST_ALGORITHM:
            raise PdfSigningError(f"unexpected digest algorithm {digest_algorithm}")
        if isinstance(self._key, rsa.RSAPrivateKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
            return self._key.sign(data, pss, hashes.SHA256())
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))


class PdfSigner:
    """Signs PDFs with one key; built once (key parsed, size reserved), used for every document.

    ``tsa_url`` turns B-B into B-T: the signature value is timestamped by that RFC 3161
    authority. ``certify`` makes it a certification signature that allows no change (DocMDP
    P=1, ISO 32000-1 §12.8.2.2), so conforming readers also flag later edits.
    """

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        tsa_url: str | None = None,
        tsa_timeout_seconds: float = 10.0,
        field_name: str = DEFAULT_FIELD_NAME,
        reason: str | None = None,
        location: str | None = None,
        certify: bool = True,
    ) -> None:
        if not isinstance(private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise PdfSigningError("PAdES signing needs an RSA or ECDSA key")
        if isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size < 2048:
            raise PdfSigningError("RSA keys under 2048 bits are refused")
        if private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise PdfSigningError("the private key does not match the certificate")
        asn1_chain = [_asn1_cert(c) for c in chain]
        self._certificate = certificate
        self._signer = _LoadedKeySigner(private_key, _asn1_cert(certificate), asn1_chain)
        self._timestamper = HTTPTimeStamper(tsa_url, timeout=tsa_timeout_seconds) if tsa_url else None
        meta = signers.PdfSignatureMetadata(
            field_name=field_name,
            md_algorithm=DIGEST_ALGORITHM,
            subfilter=pdf_fields.SigSeedSubFilter.PADES,
            reason=reason,
            location=location,
            certify=certify,
            docmdp_permissions=pdf_fields.MDPPerm.NO_CHANGES,
        )
        self._pdf_signer = signers.PdfSigner(meta, self._signer, timestamper=self._timestamper)
        certs_der = sum(len(c.public_bytes(serialization.Encoding.DER)) for c in (certificate, *chain))
        der_size = certs_der + self._signer.signature_size + _CMS_OVERHEAD_BYTES
        if self._timestamper is not None:
            der_size += _TIMESTAMP_TOKEN_ALLOWANCE_BYTES
        # /Contents is a hex string: two characters per DER byte.
        self._bytes_reserved = 2 * der_size

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def timestamped(self) -> bool:
        return self._timestamper is not None

    def sign(self, pdf: bytes, *, signing_time: datetime) -> bytes:
        """The PDF with one PAdES signature appended as an incremental update.

        ``signing_time`` (aware) becomes the claimed signing time (/M); under B-T the
        timestamp token proves the time independently.
        """
        if signing_time.tzinfo is None:
            raise PdfSigningError("signing_time must be timezone-aware")
        try:
            writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
        except (pdf_misc.PdfError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise MalformedPdf(f"cannot read the PDF to sign: {exc}") from exc
        try:
            return run_sync(self._sign(writer, signing_time))
        except TimestampRequestError as exc:
            raise PdfSigningError(f"the timestamp authority failed: {exc}") from exc
        except (_PyhankoSigningError, pdf_misc.PdfError) as exc:
            raise PdfSigningError(f"cannot sign the PDF: {exc}") from exc

    async def _sign(self, writer: IncrementalPdfFileWriter, signing_time: datetime) -> bytes:
        # pyHanko's sign_pdf takes the signing time from the wall clock; these are the same
        # public steps with our clock's time and the size reserved at construction.
        session = self._pdf_signer.init_signing_session(writer)
        session.system_time = signing_time
        validation_info = await session.perform_presign_validation(writer)
        tbs = session.prepare_tbs_document(validation_info=validation_info, bytes_reserved=self._bytes_reserved)
        prepared, output = tbs.digest_tbs_document()
        post = await tbs.perform_signature(
            document_digest=prepared.document_digest,
            pdf_cms_signed_attrs=PdfCMSSignedAttributes(signing_time=signing_time),
        )
        await post.post_signature_processing(output)
        output.seek(0)
        signed: bytes = output.read()
        return signed


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_pdf_shape(data: bytes) -> None:
    if not data:
        raise MalformedPdf("empty input: expected a PDF")
    if len(data) > MAX_PDF_BYTES:
        raise MalformedPdf(f"the PDF exceeds {MAX_PDF_BYTES} bytes")
    if _PDF_MAGIC not in data[:_PDF_HEADER_WINDOW]:
        raise MalformedPdf("not a PDF: no %PDF- header")
    if b"%%EOF" not in data[-2048:]:
        raise MalformedPdf("truncated PDF: no %%EOF marker at the end")


# What pyHanko's reader and asn1crypto raise on damaged input: pyHanko's own PdfError family,
# plus the plain errors its parsers let through on corrupt objects and streams (pyHanko checks
# xref-stream and PNG-predictor shapes with ``assert`` and refuses unknown predictors with
# NotImplementedError).
_PARSE_ERRORS = (
    pdf_misc.PdfError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    zlib.error,
    binascii.Error,
    RecursionError,
    AssertionError,
    NotImplementedError,
)


def _open(data: bytes) -> PdfFileReader:
    _check_pdf_shape(data)
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        _ = reader.root  # force the trailer and catalog to be resolved
        return reader
    except _PARSE_ERRORS as exc:
        raise MalformedPdf(f"unreadable PDF: {type(exc).__name__}") from exc


def _signed_subject(reader: PdfFileReader, revision: int) -> str | None:
    try:
        historical = reader.get_historical_resolver(revision)
        if "/Info" not in historical.trailer_view:
            return None
        raw = historical.trailer_view.raw_get("/Info")
        # Resolve through the historical view: the reader would give the latest revision's object.
        info = historical.get_object(raw.reference) if isinstance(raw, generic.IndirectObject) else raw
        subject = info.get("/Subject")
        return None if subject is None else str(subject)
    except _PARSE_ERRORS:
        return None


def _coverage(level: SignatureCoverageLevel | None) -> str | None:
    return None if level is None else level.name.lower()


def validate_pdf(
    data: bytes,
    *,
    trust_roots: Sequence[x509.Certificate],
    expected_signers: Sequence[x509.Certificate],
    at: datetime,
    timestamp_trust_roots: Sequence[x509.Certificate] | None = None,
) -> PdfSignatureVerdict:
    """Validate the first signature of ``data`` at time ``at``.

    Raises ``MalformedPdf`` for input that is not a readable PDF; an unsigned PDF is a verdict
    with ``signature_found=False``. An empty trust list or signer list trusts nobody.
    """
    reader = _open(data)
    try:
        embedded = list(reader.embedded_regular_signatures)
    except _PARSE_ERRORS as exc:
        raise MalformedPdf(f"unreadable signature fields: {type(exc).__name__}") from exc
    if not embedded:
        return PdfSignatureVerdict(signature_found=False)
    sig = embedded[0]
    expected = {hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in expected_signers}
    try:
        signer_der = sig.signer_cert.dump()
    except _PARSE_ERRORS:
        signer_der = None
    signer_fp = hashlib.sha256(signer_der).hexdigest() if signer_der else None
    base: _SignatureFacts = {
        "signature_found": True,
        "signature_count": len(embedded),
        "expected_signer": (signer_fp in expected) if signer_fp else None,
        "signer_certificate_sha256": signer_fp,
        "signed_subject": _signed_subject(reader, sig.signed_revision),
    }
    if signer_der is not None:
        try:
            base["signer"] = sig.signer_cert.subject.human_friendly
        except _PARSE_ERRORS:
            base["signer"] = None
        base["signer_purpose"] = _marked_purpose(signer_der)
    roots = [_asn1_cert(c) for c in trust_roots]
    ts_roots = roots if timestamp_trust_roots is None else [_asn1_cert(c) for c in timestamp_trust_roots]
    # No fetching: receipts are checked offline against configured roots; revocation data
    # that is absent is tolerated (soft-fail), revocation data that says revoked is not.
    context = ValidationContext(trust_roots=roots, moment=at, allow_fetching=False, revocation_mode="soft-fail")
    ts_context = ValidationContext(trust_roots=ts_roots, moment=at, allow_fetching=False, revocation_mode="soft-fail")
    try:
        status = run_sync(
            async_validate_pdf_signature(sig, signer_validation_context=context, ts_validation_context=ts_context)
        )
    except (SignatureValidationError, _PyhankoSigningError, *_PARSE_ERRORS) as exc:
        return PdfSignatureVerdict(
            **base,
            intact=False,
            value_verifies=False,
            chain_trusted=False,
            problem=f"signature not verifiable: {type(exc).__name__}",
        )
    return _verdict(status, base)


class _SignatureFacts(TypedDict):
    """What ``validate_pdf`` reads off the signature before validating it."""

    signature_found: bool
    signature_count: int
    expected_signer: bool | None
    signer_certificate_sha256: str | None
    signed_subject: str | None
    signer: NotRequired[str | None]
    signer_purpose: NotRequired[str | None]


def _marked_purpose(der: bytes) -> str | None:
    """What the signer's certificate says it is for: a data-message certificate in a receipt
    shows up as such, whoever assembled the file."""
    try:
        purpose = certificate_purpose(x509.load_der_x509_certificate(der))
    except ValueError:
        return None
    return None if purpose is None else purpose.value


def _sub_indication(indication: AdESSubIndic | None) -> str | None:
    # pyHanko's sub-indications are enums (AdESFailure, AdESIndeterminate) under a base class
    # that declares no ``name``.
    if indication is None:
        return None
    return indication.name if isinstance(indication, Enum) else str(indication)


def _verdict(status: PdfSignatureStatus, base: _SignatureFacts) -> PdfSignatureVerdict:
    level = status.modification_level
    ts = status.timestamp_validity
    return PdfSignatureVerdict(
        **base,
        intact=status.intact,
        value_verifies=status.valid,
        # Trust of the chain alone (pyHanko's ``trusted`` also folds in intact and valid).
        chain_trusted=status.trust_problem_indic is None and status.validation_path is not None,
        trust_problem=_sub_indication(status.trust_problem_indic),
        coverage=_coverage(status.coverage),
        modification_level=None if level is None else _LEVELS[level],
        docmdp_ok=status.docmdp_ok,
        signing_time=status.signer_reported_dt,
        timestamp_time=None if ts is None else ts.timestamp,
        timestamp_trusted=None if ts is None else bool(ts.intact and ts.valid and ts.trusted),
    )
