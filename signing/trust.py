"""Trust in a signer's certificate: a path to a configured anchor, validity at the validation
time, revocation from locally configured CRLs (and OCSP/CRL fetching when allowed), all with
pyhanko-certvalidator (RFC 5280 path validation).

Safe by default: an empty anchor list trusts nothing. Each failure raises the verification
error that names its ETSI EN 319 102-1 sub-indication.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import (
    DisallowedAlgorithmError,
    ExpiredError,
    InsufficientRevinfoError,
    InvalidCertificateError,
    NotYetValidError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
    ValidationError,
)
from pyhanko_certvalidator.policy_decl import DisallowWeakAlgorithmsPolicy

from signing.algorithms import MIN_RSA_BITS
from signing.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    ChainConstraintsFailure,
    CryptoConstraintsFailure,
    KeyImportFailed,
    NoCertificateChain,
    RevocationUnavailable,
    SignerRevoked,
    SignerRevokedNoPoe,
)
from signing.loops import run_sync

# SHA-1 and MD5 are refused anywhere in the path (Circular 15/2025/TT-BKHCN: SHA-256 or better).
WEAK_HASHES = frozenset({"md2", "md5", "sha1"})
# Key usages that allow signing data messages (RFC 5280 §4.2.1.3): digitalSignature or
# nonRepudiation (contentCommitment); Vietnamese signing certificates carry one or both.
_SIGNING_USAGES = frozenset({"digital_signature", "non_repudiation"})


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise KeyImportFailed("cannot read a CRL file: expected a PEM or DER X.509 CRL") from exc


class TrustPolicy:
    """Anchors and revocation data, parsed once.

    ``fetch_revocation`` lets certvalidator fetch OCSP responses and CRLs named in the
    certificates (soft-fail: an unreachable responder does not fail the signature);
    ``require_revocation`` turns missing revocation data into INDETERMINATE / TRY_LATER.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        crls: Sequence[bytes] = (),
        *,
        fetch_revocation: bool = False,
        require_revocation: bool = False,
    ) -> None:
        self.anchors = tuple(anchors)
        self._asn1_anchors = [_asn1_cert(c) for c in self.anchors]
        self._crls = [_load_crl(c) for c in crls]
        self._asn1_crls = [
            asn1_crl.CertificateList.load(c.public_bytes(serialization.Encoding.DER)) for c in self._crls
        ]
        self._fetch = fetch_revocation
        self._revocation_mode = "require" if require_revocation else "soft-fail"

    @classmethod
    def from_files(cls, anchor_files: Iterable[Path], crl_files: Iterable[Path] = (), **options: bool) -> TrustPolicy:
        anchors: list[x509.Certificate] = []
        for path in anchor_files:
            try:
                anchors.extend(x509.load_pem_x509_certificates(path.read_bytes()))
            except (OSError, ValueError) as exc:
                raise KeyImportFailed(f"cannot read trust anchors from {path}") from exc
        crls: list[bytes] = []
        for path in crl_files:
            try:
                crls.append(path.read_bytes())
            except OSError as exc:
                raise KeyImportFailed(f"cannot read CRL {path}") from exc
        return cls(anchors, crls, **options)

    def is_anchor(self, cert: x509.Certificate) -> bool:
        return any(cert == anchor for anchor in self.anchors)

    def validate(
        self,
        cert: x509.Certificate,
        intermediates: Sequence[x509.Certificate] = (),
        *,
        moment: datetime,
        signed_at: datetime | None = None,
    ) -> tuple[x509.Certificate, ...]:
        """Check that ``cert`` may sign at ``moment`` (the validation time, B-level: now) and
        at the time the signature claims. Returns the validated path, anchor first. Raises a
        ``VerificationFailure`` subclass."""
        if signed_at is not None and signed_at < cert.not_valid_before_utc:
            raise CertificateNotYetValid(
                f"the claimed signing time {signed_at.isoformat()} precedes the certificate "
                f"(valid from {cert.not_valid_before_utc.isoformat()})"
            )
        if not self._asn1_anchors:
            # Empty means no: without anchors nothing is trusted.
            raise NoCertificateChain("no trust anchors are configured")
        context = ValidationContext(
            trust_roots=self._asn1_anchors,
            other_certs=[_asn1_cert(c) for c in intermediates],
            crls=self._asn1_crls,
            moment=moment,
            allow_fetching=self._fetch,
            revocation_mode=self._revocation_mode,
            algorithm_usage_policy=DisallowWeakAlgorithmsPolicy(
                weak_hash_algos=WEAK_HASHES, rsa_key_size_threshold=MIN_RSA_BITS
            ),
        )
        validator = CertificateValidator(_asn1_cert(cert), validation_context=context)
        try:
            path = run_sync(validator.async_validate_path())
        except PathBuildingError as exc:
            raise NoCertificateChain(f"no path to a trust anchor: {exc}") from exc
        except RevokedError as exc:
            if signed_at is not None and signed_at < exc.revocation_dt:
                raise SignerRevokedNoPoe(str(exc)) from exc
            raise SignerRevoked(str(exc)) from exc
        except ExpiredError as exc:
            raise CertificateExpired(str(exc)) from exc
        except NotYetValidError as exc:
            raise CertificateNotYetValid(str(exc)) from exc
        except DisallowedAlgorithmError as exc:
            raise CryptoConstraintsFailure(str(exc)) from exc
        except InsufficientRevinfoError as exc:
            raise RevocationUnavailable(str(exc)) from exc
        except (PathValidationError, InvalidCertificateError) as exc:
            raise ChainConstraintsFailure(str(exc)) from exc
        except ValidationError as exc:
            raise ChainConstraintsFailure(str(exc)) from exc
        leaf = path.leaf
        if leaf is None:
            raise ChainConstraintsFailure("the validated path ends in no certificate")
        key_usage = leaf.key_usage_value
        if key_usage is not None and not (set(key_usage.native) & _SIGNING_USAGES):
            raise ChainConstraintsFailure("the certificate's key usage does not allow signing")
        certs = [x509.load_der_x509_certificate(c.dump()) for c in path.iter_certs(include_root=True)]
        self._check_local_crls(certs, signed_at)
        return tuple(certs)

    def _check_local_crls(self, path: Sequence[x509.Certificate], signed_at: datetime | None) -> None:
        """Look every certificate of the path (root first) up in the configured CRLs.

        Hand-written because certvalidator consults cached CRLs only for certificates that
        declare a distribution point, and locally configured CRLs must apply to all.
        """
        for issuer, subject in pairwise(path):
            for crl in self._crls:
                # public_key() is typed with every key kind; an issuer in a validated path holds
                # a signing key, which is what is_signature_valid accepts.
                if crl.issuer != subject.issuer or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                    continue
                entry = crl.get_revoked_certificate_by_serial_number(subject.serial_number)
                if entry is None:
                    continue
                when = entry.revocation_date_utc
                what = f"certificate {format(subject.serial_number, 'x')} was revoked at {when.isoformat()}"
                if signed_at is not None and signed_at < when:
                    raise SignerRevokedNoPoe(what + ", after the claimed signing time")
                raise SignerRevoked(what)
