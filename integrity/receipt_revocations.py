"""Revocation of an issued receipt: the one-stop system withdraws a slip it issued (issued by
mistake, the dossier withdrawn by the applicant, or replaced by a new slip under another code).

A revocation is recorded once, in the issuing database and in the audit log (``receipt.revoked``)
in one transaction, and never undone: the code stays registered, so a check of the slip still
says that the system issued it, and also since when it no longer stands. The reason is one of a
fixed list, never free text, because the public check shows it to anyone holding the code and
free text could carry personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select

from integrity.clock import stored_utc
from integrity.receipt_tables import receipt_revocations

ACTION_REVOKED = "receipt.revoked"


class RevocationReason(StrEnum):
    ISSUED_IN_ERROR = "issued_in_error"
    DOSSIER_WITHDRAWN = "dossier_withdrawn"
    REPLACED = "replaced"


REVOCATION_LABELS: dict[RevocationReason, tuple[str, str]] = {
    RevocationReason.ISSUED_IN_ERROR: ("Giấy tiếp nhận được cấp nhầm.", "The receipt was issued by mistake."),
    RevocationReason.DOSSIER_WITHDRAWN: ("Người nộp đã rút hồ sơ.", "The applicant withdrew the dossier."),
    RevocationReason.REPLACED: (
        "Giấy tiếp nhận đã được thay bằng một giấy khác.",
        "The receipt was replaced by another one.",
    ),
}


@dataclass(frozen=True)
class Revocation:
    code: str
    reason: RevocationReason
    revoked_by: str
    revoked_at: datetime
    audit_seq: int

    @property
    def reason_vi(self) -> str:
        return REVOCATION_LABELS[self.reason][0]

    @property
    def reason_en(self) -> str:
        return REVOCATION_LABELS[self.reason][1]

    def public_dict(self) -> dict[str, Any]:
        """What may be said of a revocation to anyone: when and why, never who."""
        return {
            "revoked_at": self.revoked_at.isoformat(),
            "reason": {"code": self.reason.value, "vi": self.reason_vi, "en": self.reason_en},
        }


def revocation_of(conn: Connection, code: str) -> Revocation | None:
    row = conn.execute(select(receipt_revocations).where(receipt_revocations.c.code == code)).first()
    if row is None:
        return None
    return Revocation(
        code=row.code,
        reason=RevocationReason(row.reason),
        revoked_by=row.revoked_by,
        revoked_at=stored_utc(row.revoked_at),
        audit_seq=row.audit_seq,
    )


def insert_revocation(conn: Connection, revocation: Revocation) -> None:
    """Store ``revocation``; a second one for the same code violates the primary key."""
    conn.execute(
        insert(receipt_revocations).values(
            code=revocation.code,
            reason=revocation.reason.value,
            revoked_by=revocation.revoked_by,
            revoked_at=revocation.revoked_at,
            audit_seq=revocation.audit_seq,
        )
    )
