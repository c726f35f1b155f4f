"""The public check of a receipt: what the QR code on a slip opens, for anyone holding the code.

It says whether this system issued a slip under the code, by which unit and when, the SHA-256
of the PDF it issued, and whether the slip was revoked. It says nothing personal: not the
applicant, not the official, not even the procedure (the name of a benefit applied for can
reveal a person's health or family situation; Decree 13/2023/NĐ-CP Art. 2). A person may also
present a PDF to learn whether it is the slip issued under that code; the file is checked in
the sandboxed validator and kept nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from integrity.dossier_code import DossierCode
from integrity.errors import InvalidDossierCode, ReceiptFileTooLarge, ReceiptNotFound, UnreadableReceipt
from integrity.receipt_revocations import Revocation
from integrity.receipts import Reason, ReceiptService, ReceiptVerdict

# A slip is a one-page PDF of about 60 KB (B-T adds a few KB of timestamp); anything near this
# limit is not a slip, and a small limit keeps anonymous uploads cheap to refuse.
MAX_PUBLIC_FILE_BYTES = 5 * 1024 * 1024


ANOTHER_CODE = Reason(
    "another_code",
    "Tệp mang một mã hồ sơ khác, không phải mã đang tra cứu.",
    "The file carries another dossier code than the one being checked.",
)


class CopyVerdict(StrEnum):
    """What a presented file is, with respect to the code it was presented for."""

    GENUINE = "genuine"  # the very file the system issued under the code, its signature intact
    REVOKED = "revoked"  # that very file, but the receipt was revoked since: no longer valid
    ALTERED = "altered"  # signed for this code, but changed since, or not the file registered
    NOT_THIS_RECEIPT = "not_this_receipt"  # no valid signature for this code (another slip, a forgery)


@dataclass(frozen=True)
class PublicReceipt:
    """What anyone holding the code may learn about it."""

    code: str
    unit_code: str
    unit_name: str
    receipt_date: date
    issued_at: datetime
    sha256: str
    size_bytes: int
    pades_level: str
    revocation: Revocation | None

    @property
    def revoked(self) -> bool:
        return self.revocation is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "valid": not self.revoked,
            "issued_by_system": True,
            "unit": {"code": self.unit_code, "name": self.unit_name},
            "receipt_date": self.receipt_date.isoformat(),
            "issued_at": self.issued_at.isoformat(),
            "pdf_sha256": self.sha256,
            "pdf_size_bytes": self.size_bytes,
            "pades_level": self.pades_level,
            "revoked": self.revoked,
            "revocation": None if self.revocation is None else self.revocation.public_dict(),
        }


@dataclass(frozen=True)
class CopyCheck:
    """The answer for a presented file: the verdict and the reasons behind a "no"."""

    receipt: PublicReceipt
    verdict: CopyVerdict
    sha256: str
    reasons: tuple[Reason, ...]

    @property
    def genuine(self) -> bool:
        """The issued file, and a receipt that stands (a revoked one is not genuine any more)."""
        return self.verdict is CopyVerdict.GENUINE

    @property
    def issued_file(self) -> bool:
        """The very file the system issued under the code, whether it still stands or not."""
        return self.verdict in (CopyVerdict.GENUINE, CopyVerdict.REVOKED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.receipt.code,
            "verdict": self.verdict.value,
            "genuine": self.genuine,
            "issued_by_system": self.issued_file,
            "revoked": self.receipt.revoked,
            "sha256": self.sha256,
            "issued_sha256": self.receipt.sha256,
            "reasons": [{"code": r.code, "vi": r.vi, "en": r.en} for r in self.reasons],
            "receipt": self.receipt.to_dict(),
        }


def copy_verdict(code: str, verdict: ReceiptVerdict) -> CopyVerdict:
    """Genuine only when every fact of the full verification holds for this very code and the
    receipt was not revoked; the issued file of a revoked receipt is ``revoked``."""
    if verdict.code == code and verdict.issued_by_system:
        return CopyVerdict.GENUINE if verdict.revocation is None else CopyVerdict.REVOKED
    if verdict.code == code and verdict.signature.signature_found:
        return CopyVerdict.ALTERED
    return CopyVerdict.NOT_THIS_RECEIPT


class PublicReceiptCheck:
    """The public answers, built on the receipt service; holds no state of its own."""

    def __init__(self, receipts: ReceiptService) -> None:
        self._receipts = receipts

    def status(self, code: str) -> PublicReceipt:
        """The public facts of the receipt under ``code``. ReceiptNotFound when there is none,
        and for text that is not a dossier code: whoever probes learns nothing from the difference."""
        try:
            DossierCode.from_text(code)
        except InvalidDossierCode:
            raise ReceiptNotFound("no receipt issued by this system has this code") from None
        try:
            record = self._receipts.get(code)
            revocation = self._receipts.revocation(code)
        except ReceiptNotFound:
            raise ReceiptNotFound("no receipt issued by this system has this code") from None
        unit = self._receipts.units
        name = unit.get(record.unit_code).name if record.unit_code in unit else record.unit_code
        return PublicReceipt(
            code=record.code,
            unit_code=record.unit_code,
            unit_name=name,
            receipt_date=record.receipt_day,
            issued_at=record.issued_at,
            sha256=record.sha256,
            size_bytes=record.size_bytes,
            pades_level=record.pades_level,
            revocation=revocation,
        )

    def check_copy(self, code: str, data: bytes) -> CopyCheck:
        """Whether ``data`` is the slip issued under ``code``. Raises ReceiptNotFound,
        ReceiptFileTooLarge, or UnreadableReceipt for a file that is not a readable PDF."""
        receipt = self.status(code)
        if len(data) > MAX_PUBLIC_FILE_BYTES:
            raise ReceiptFileTooLarge(f"a receipt is far smaller than {MAX_PUBLIC_FILE_BYTES // (1024 * 1024)} MiB")
        if not data:
            raise UnreadableReceipt("no file was sent")
        # The full verification (sandboxed parse, signature, trust, modifications, registry):
        # the registered hash alone would not say why another file is not the slip.
        verdict = self._receipts.verify(data)
        reasons = verdict.reasons
        if verdict.code is not None and verdict.code != code:
            reasons = (ANOTHER_CODE, *reasons)
        return CopyCheck(receipt=receipt, verdict=copy_verdict(code, verdict), sha256=verdict.sha256, reasons=reasons)
