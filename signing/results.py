"""Verification verdicts in the shape of ETSI EN 319 102-1 §5.1.3 (indication + sub-indication).

The indication is derived from the sub-indication (never stored twice, as in pyHanko's
``status.py``), and ``valid`` from the indication. One object gives both renderings: the
machine form (``to_dict``, for the API and ``--json``) and the one-line human messages in
Vietnamese (Circular 15/2025/TT-BKHCN asks for the result in Vietnamese) and English.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509

from signing.algorithms import SignatureAlgorithm
from signing.errors import VerificationFailure
from signing.purposes import KeyPurpose, certificate_purpose


class Indication(StrEnum):
    TOTAL_PASSED = "TOTAL_PASSED"
    TOTAL_FAILED = "TOTAL_FAILED"
    INDETERMINATE = "INDETERMINATE"


class SubIndication(StrEnum):
    # TOTAL_FAILED (EN 319 102-1 Table 5)
    FORMAT_FAILURE = "FORMAT_FAILURE"
    HASH_FAILURE = "HASH_FAILURE"
    SIG_CRYPTO_FAILURE = "SIG_CRYPTO_FAILURE"
    REVOKED = "REVOKED"
    NOT_YET_VALID = "NOT_YET_VALID"
    # INDETERMINATE (EN 319 102-1 Table 6)
    EXPIRED = "EXPIRED"
    NO_CERTIFICATE_CHAIN_FOUND = "NO_CERTIFICATE_CHAIN_FOUND"
    NO_SIGNING_CERTIFICATE_FOUND = "NO_SIGNING_CERTIFICATE_FOUND"
    CRYPTO_CONSTRAINTS_FAILURE = "CRYPTO_CONSTRAINTS_FAILURE"
    CHAIN_CONSTRAINTS_FAILURE = "CHAIN_CONSTRAINTS_FAILURE"
    REVOKED_NO_POE = "REVOKED_NO_POE"
    TRY_LATER = "TRY_LATER"
    GENERIC = "GENERIC"

    @property
    def indication(self) -> Indication:
        return Indication.TOTAL_FAILED if self in _TOTAL_FAILED else Indication.INDETERMINATE


_TOTAL_FAILED = frozenset(
    {
        SubIndication.FORMAT_FAILURE,
        SubIndication.HASH_FAILURE,
        SubIndication.SIG_CRYPTO_FAILURE,
        SubIndication.REVOKED,
        SubIndication.NOT_YET_VALID,
    }
)

# One line per outcome, Vietnamese first. Kept short: the CLI prints it as the bottom line.
_MESSAGES: dict[SubIndication | None, tuple[str, str]] = {
    None: ("Chữ ký hợp lệ", "Signature valid"),
    SubIndication.FORMAT_FAILURE: (
        "Chữ ký không đúng định dạng",
        "The signature is malformed",
    ),
    SubIndication.HASH_FAILURE: (
        "Dữ liệu đã bị thay đổi sau khi ký (giá trị băm không khớp)",
        "The data was changed after signing (hash mismatch)",
    ),
    SubIndication.SIG_CRYPTO_FAILURE: (
        "Giá trị chữ ký không đúng với khóa công khai của người ký",
        "The signature value does not verify under the signer's public key",
    ),
    SubIndication.REVOKED: (
        "Khóa hoặc chứng thư số của người ký đã bị thu hồi trước thời điểm ký",
        "The signer's key or certificate was revoked before the signing time",
    ),
    SubIndication.NOT_YET_VALID: (
        "Chứng thư số của người ký chưa có hiệu lực tại thời điểm ký",
        "The signer's certificate was not yet valid at the signing time",
    ),
    SubIndication.EXPIRED: (
        "Chứng thư số của người ký đã hết hạn",
        "The signer's certificate has expired",
    ),
    SubIndication.NO_CERTIFICATE_CHAIN_FOUND: (
        "Không xây dựng được đường dẫn tin cậy tới tổ chức cung cấp dịch vụ chứng thực",
        "No trust path to a configured certification authority",
    ),
    SubIndication.NO_SIGNING_CERTIFICATE_FOUND: (
        "Không xác định được khóa hoặc chứng thư số của người ký",
        "The signer's key or certificate cannot be identified",
    ),
    SubIndication.CRYPTO_CONSTRAINTS_FAILURE: (
        "Thuật toán hoặc độ dài khóa không đáp ứng quy định (SHA-1, RSA dưới 2048 bit, khóa không hỗ trợ)",
        "Algorithm or key size below the policy (SHA-1, RSA under 2048 bits, unsupported key)",
    ),
    SubIndication.CHAIN_CONSTRAINTS_FAILURE: (
        "Chứng thư số không được phép dùng để ký",
        "The certificate is not allowed to sign",
    ),
    SubIndication.REVOKED_NO_POE: (
        "Chứng thư số đã bị thu hồi; không có bằng chứng chữ ký được tạo trước khi thu hồi",
        "The certificate is revoked and nothing proves the signature predates the revocation",
    ),
    SubIndication.TRY_LATER: (
        "Chưa lấy được thông tin thu hồi chứng thư số; hãy thử lại sau",
        "Revocation status is unavailable; try again later",
    ),
    SubIndication.GENERIC: (
        "Không xác định được tính hợp lệ của chữ ký",
        "The signature's validity cannot be determined",
    ),
}


@dataclass(frozen=True)
class Signer:
    """Who signed: the certificate's subject, issuer and serial where there is a certificate,
    and the keystore ``kid`` where the key is one of ours."""

    subject: str | None
    issuer: str | None
    serial: str | None
    kid: str | None
    # What the key is for (signing.purposes): the keystore's purpose for one of our keys, else
    # the purpose the certificate's policies mark; None when neither says.
    purpose: str | None = None

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, kid: str | None, purpose: KeyPurpose | None = None) -> Signer:
        marked = purpose or certificate_purpose(cert)
        return cls(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial=format(cert.serial_number, "x"),
            kid=kid,
            purpose=None if marked is None else marked.value,
        )

    @property
    def display_name(self) -> str | None:
        return self.subject or self.kid

    def to_dict(self) -> dict[str, str | None]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "kid": self.kid,
            "purpose": self.purpose,
        }


@dataclass(frozen=True)
class VerificationResult:
    """The verdict on one signature. ``sub_indication`` None means TOTAL_PASSED, which the
    format modules give only once every check has passed: the signed data is intact and the
    value verifies, the signer chains to a trust anchor (or is a key of the keystore), and no
    certificate or key was expired or revoked. So ``valid`` is the conjunction of all three.

    ``signed_at`` is the signing time the signature claims (B-level: nothing proves it).
    ``algorithm`` is the one name of the algorithm across formats; ``algorithm_identifier`` is
    what the format itself said (the JWS ``alg``, the CMS object identifier, the XMLDSig URI).
    ``reasons`` holds the precise findings in English, for the log and for operators.
    """

    format: str
    sub_indication: SubIndication | None
    key_id: str | None = None
    signer: Signer | None = None
    signed_at: datetime | None = None
    algorithm: SignatureAlgorithm | None = None
    reasons: tuple[str, ...] = ()
    algorithm_identifier: str | None = None

    @property
    def indication(self) -> Indication:
        if self.sub_indication is None:
            return Indication.TOTAL_PASSED
        return self.sub_indication.indication

    @property
    def valid(self) -> bool:
        return self.indication is Indication.TOTAL_PASSED

    @property
    def message_vi(self) -> str:
        return self._message(0)

    @property
    def message_en(self) -> str:
        return self._message(1)

    def _message(self, lang: int) -> str:
        text = _MESSAGES[self.sub_indication][lang]
        who = self.signer.display_name if self.signer else self.key_id
        if self.valid and who:
            by = " (người ký: " if lang == 0 else " (signer: "
            return f"{text}{by}{who})."
        return text + "."

    @classmethod
    def failed(
        cls,
        fmt: str,
        failure: VerificationFailure,
        *,
        key_id: str | None = None,
        signer: Signer | None = None,
        signed_at: datetime | None = None,
        algorithm: SignatureAlgorithm | None = None,
        algorithm_identifier: str | None = None,
    ) -> VerificationResult:
        return cls(
            format=fmt,
            sub_indication=SubIndication(failure.sub_indication),
            key_id=key_id,
            signer=signer,
            signed_at=signed_at,
            algorithm=algorithm,
            reasons=(str(failure),),
            algorithm_identifier=algorithm_identifier,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "valid": self.valid,
            "indication": self.indication.value,
            "sub_indication": self.sub_indication.value if self.sub_indication else None,
            "key_id": self.key_id,
            "signer": self.signer.to_dict() if self.signer else None,
            "signed_at": self.signed_at.isoformat().replace("+00:00", "Z") if self.signed_at else None,
            "algorithm": None if self.algorithm is None else self.algorithm.value,
            "algorithm_identifier": self.algorithm_identifier,
            "reasons": list(self.reasons),
            "message": {"vi": self.message_vi, "en": self.message_en},
        }
