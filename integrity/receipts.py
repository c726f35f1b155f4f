"""Receipts (phiếu tiếp nhận và hẹn trả kết quả): issued only here, and verified here.

Issuing is one database transaction: the next sequence of the unit's day, the slip rendered
with its code, signed (PAdES), the stored PDF, the audit entry ``receipt.issued``, then the
registry row. If any step fails the transaction rolls back, the sequence increment with it,
so codes never repeat and never skip (Regulation Art. 5.6 and Art. 10; Decree 61/2018/NĐ-CP
Art. 26). The sequence row of a unit's day is locked from allocation to commit: issuing for
one unit is serial by design, units proceed in parallel on PostgreSQL.

Verifying answers five questions separately (signature intact, trusted one-stop signer, no
modification after signing, code registered, registered hash equal) and derives
``issued_by_system`` from them; a receipt the system issued and later revoked is no longer
``valid``. Every "no" carries a reason in Vietnamese and English.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from integrity.audit_service import AuditService
from integrity.clock import stored_utc
from integrity.db import READ_ONLY
from integrity.dossier_code import MAX_SEQUENCE, DossierCode, receipt_day
from integrity.errors import (
    ConfigurationError,
    DailySequenceExhausted,
    IdempotencyKeyReused,
    InvalidDossierCode,
    InvalidReceiptRequest,
    ReceiptAlreadyRevoked,
    ReceiptNotFound,
    ReceiptSigningFailed,
    UnreadableReceipt,
)
from integrity.keys import CertifiedKey, ServiceKeys
from integrity.receipt_revocations import (
    ACTION_REVOKED,
    Revocation,
    RevocationReason,
    insert_revocation,
    revocation_of,
)
from integrity.receipt_tables import receipt_idempotency_keys, receipt_pdfs, receipt_sequences, receipts
from integrity.settings import Settings
from integrity.units import UnitRegistry, load_units
from signing.errors import MalformedPdf, SigningError
from signing.pdf import MAX_PDF_BYTES, PdfSignatureVerdict, PdfSigner, sha256_hex
from signing.pdf_sandbox import validate_pdf_sandboxed
from signing.receipt_pdf import MAX_DOSSIER_SETS, ReceiptRenderer, ReceiptSlip, SlipDocument

ACTION_ISSUED = "receipt.issued"
MAX_TEXT = 500
MAX_NAME = 200
MAX_DOCUMENTS = 50
MAX_COPIES = 100
MAX_PLACE = 100
MAX_PROCESSING_DAYS = 365
# A dossier may be keyed in a little after the applicant handed it over, never ahead of time.
MAX_RECEIVED_AGE = timedelta(hours=24)
MAX_CLOCK_SKEW = timedelta(minutes=5)
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
# What the slip's QR code opens: the public check of the code (api/receipt_check.py).
VERIFY_PATH = "/r/{code}"
MAX_VERIFY_BYTES = MAX_PDF_BYTES


Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Applicant:
    name: str
    id_number: str
    phone: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class Official:
    name: str
    title: str


@dataclass(frozen=True)
class ReceiptRequest:
    unit_code: str
    procedure_code: str
    procedure_name: str
    applicant: Applicant
    official: Official
    appointment_at: datetime | date
    unit_name: str | None = None
    documents: tuple[SlipDocument, ...] = ()
    received_at: datetime | None = None
    # Items of form 01 (Circular 01/2018/TT-VPCP); the defaults are what the slip prints without them.
    dossier_sets: int = 1
    processing_days: int | None = None
    processing_working_days: bool = True
    result_place: str | None = None
    place_name: str | None = None

    def fingerprint(self) -> str:
        """SHA-256 of the request's content: a retried Idempotency-Key must carry the same request."""
        body: dict[str, Any] = {
            "unit": [self.unit_code, self.unit_name],
            "procedure": [self.procedure_code, self.procedure_name],
            "applicant": [self.applicant.name, self.applicant.id_number, self.applicant.phone, self.applicant.address],
            "official": [self.official.name, self.official.title],
            "documents": [[d.name, d.copies, d.original] for d in self.documents],
            "received_at": None if self.received_at is None else self.received_at.isoformat(),
            "appointment_at": self.appointment_at.isoformat(),
        }
        # Form items only when given: a request without them keeps the fingerprint it had
        # before they existed, so a retry across an upgrade still finds its receipt.
        form = {
            "dossier_sets": self.dossier_sets,
            "processing_days": self.processing_days,
            "processing_working_days": self.processing_working_days,
            "result_place": self.result_place,
            "place_name": self.place_name,
        }
        defaults = {"dossier_sets": 1, "processing_working_days": True}
        body.update({k: v for k, v in form.items() if v is not None and defaults.get(k) != v})
        return hashlib.sha256(json.dumps(body, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ReceiptRecord:
    """A registry row: what the system issued under a code."""

    code: str
    unit_code: str
    receipt_day: date
    sequence: int
    sha256: str
    size_bytes: int
    signer_certificate_sha256: str
    pades_level: str
    procedure_code: str
    issued_by: str
    official_name: str
    official_title: str
    issued_at: datetime
    audit_seq: int


@dataclass(frozen=True)
class IssuedReceipt:
    record: ReceiptRecord
    replayed: bool = False  # True: an earlier request with the same Idempotency-Key made it

    @property
    def code(self) -> str:
        return self.record.code


@dataclass(frozen=True)
class Reason:
    """Why a receipt is not (or cannot be shown to be) issued by the system, or no longer stands."""

    code: str
    vi: str
    en: str


_REASONS = {
    "no_signature": (
        "Tệp không có chữ ký số: phiếu không do Hệ thống thông tin một cửa điện tử cấp.",
        "The file carries no digital signature: the receipt was not issued by the one-stop system.",
    ),
    "signature_unreadable": (
        "Chữ ký số bị hỏng, không kiểm tra được.",
        "The digital signature is damaged and cannot be checked.",
    ),
    "signature_not_intact": (
        "Nội dung đã ký bị thay đổi: chữ ký số không còn toàn vẹn.",
        "The signed content was changed: the digital signature is not intact.",
    ),
    "signature_invalid": (
        "Giá trị chữ ký số không hợp lệ.",
        "The signature value does not verify.",
    ),
    "signer_certificate_expired": (
        "Chứng thư số của người ký đã hết hạn (hoặc chưa có hiệu lực) tại thời điểm kiểm tra.",
        "The signer's certificate was expired (or not yet valid) at the validation time.",
    ),
    "signer_certificate_revoked": (
        "Chứng thư số của người ký đã bị thu hồi.",
        "The signer's certificate is revoked.",
    ),
    "untrusted_signer": (
        "Chứng thư số của người ký không thuộc chuỗi tin cậy của hệ thống.",
        "The signer's certificate does not chain to a trusted root of the system.",
    ),
    "not_one_stop_signer": (
        "Người ký không phải là khóa ký của Hệ thống thông tin một cửa điện tử.",
        "The signer is not a signing key of the one-stop system.",
    ),
    "modified_after_signing": (
        "Tài liệu đã bị sửa đổi sau khi ký (thay nội dung trang, thêm chú thích hoặc biểu mẫu).",
        "The document was modified after signing (page content replaced, annotations or forms added).",
    ),
    "modification_unknown": (
        "Không xác định được tài liệu có bị sửa đổi sau khi ký hay không.",
        "Whether the document was modified after signing could not be determined.",
    ),
    "code_missing": (
        "Phần nội dung đã ký không chứa mã hồ sơ hợp lệ.",
        "The signed content holds no valid dossier code.",
    ),
    "code_not_registered": (
        "Mã hồ sơ không có trong sổ đăng ký phiếu của hệ thống.",
        "The dossier code is not in the system's receipt registry.",
    ),
    "hash_mismatch": (
        "Tệp khác với phiếu đã đăng ký cho mã hồ sơ này.",
        "The file differs from the receipt registered under this dossier code.",
    ),
    "receipt_revoked": (
        "Giấy tiếp nhận mang mã hồ sơ này đã bị thu hồi: không còn giá trị.",
        "The receipt under this dossier code was revoked: it is no longer valid.",
    ),
}


def _reason(code: str) -> Reason:
    vi, en = _REASONS[code]
    return Reason(code, vi, en)


@dataclass(frozen=True)
class ReceiptVerdict:
    """The answer to "did the one-stop system issue this file?", fact by fact."""

    sha256: str
    code: str | None
    signature: PdfSignatureVerdict
    registered: bool | None
    hash_matches: bool | None
    registered_at: datetime | None
    validated_at: datetime
    reasons: tuple[Reason, ...] = field(default_factory=tuple)
    revocation: Revocation | None = None  # the registered receipt under ``code`` was revoked

    @property
    def revoked(self) -> bool | None:
        """Whether the receipt registered under the code was revoked (None: no registered code)."""
        return None if self.registered is not True else self.revocation is not None

    @property
    def intact(self) -> bool | None:
        return self.signature.intact

    @property
    def trusted_signer(self) -> bool | None:
        return self.signature.trusted_signer

    @property
    def modified_after_signing(self) -> bool | None:
        return self.signature.modified_after_signing

    @property
    def issued_by_system(self) -> bool:
        # Every fact must be a definite yes; unknown counts as no.
        return (
            self.intact is True
            and self.signature.valid is True
            and self.trusted_signer is True
            and self.modified_after_signing is False
            and self.registered is True
            and self.hash_matches is True
        )

    @property
    def valid(self) -> bool:
        """A receipt that stands: issued by the system and not revoked since."""
        return self.issued_by_system and self.revocation is None

    def to_dict(self) -> dict[str, Any]:
        """The machine form (HTTP and ``--json``)."""
        sig = self.signature
        return {
            "valid": self.valid,
            "issued_by_system": self.issued_by_system,
            "code": self.code,
            "sha256": self.sha256,
            "registered": self.registered,
            "hash_matches": self.hash_matches,
            "registered_at": None if self.registered_at is None else self.registered_at.isoformat(),
            "modified_after_signing": self.modified_after_signing,
            "signature": {
                "found": sig.signature_found,
                "count": sig.signature_count,
                "intact": sig.intact,
                "valid": sig.valid,
                "value_verifies": sig.value_verifies,
                "trusted_signer": sig.trusted_signer,
                "chain_trusted": sig.chain_trusted,
                "one_stop_signer": sig.expected_signer,
                "trust_problem": sig.trust_problem,
                "coverage": sig.coverage,
                "modification_level": None if sig.modification_level is None else sig.modification_level.value,
                "signer": sig.signer,
                "signer_purpose": sig.signer_purpose,
                "signer_certificate_sha256": sig.signer_certificate_sha256,
                "signed_at": None if sig.signing_time is None else sig.signing_time.isoformat(),
                "timestamp": None if sig.timestamp_time is None else sig.timestamp_time.isoformat(),
                "pades_level": sig.pades_level,
            },
            "validated_at": self.validated_at.isoformat(),
            "reasons": [{"code": r.code, "vi": r.vi, "en": r.en} for r in self.reasons],
            "revoked": self.revoked,
            "revocation": None if self.revocation is None else self.revocation.public_dict(),
        }


def _signature_reasons(sig: PdfSignatureVerdict) -> list[str]:
    if not sig.signature_found:
        return ["no_signature"]
    if sig.problem is not None:
        return ["signature_unreadable"]
    found: list[str] = []
    if sig.intact is not True:
        found.append("signature_not_intact")
    elif sig.value_verifies is not True:
        found.append("signature_invalid")
    if sig.chain_trusted is not True:
        if sig.trust_problem in {"EXPIRED", "OUT_OF_BOUNDS_NO_POE", "NOT_YET_VALID", "OUT_OF_BOUNDS_NOT_REVOKED"}:
            found.append("signer_certificate_expired")
        elif sig.trust_problem in {"REVOKED", "REVOKED_NO_POE", "REVOKED_CA_NO_POE"}:
            found.append("signer_certificate_revoked")
        else:
            found.append("untrusted_signer")
    if sig.expected_signer is not True:
        found.append("not_one_stop_signer")
    if sig.modified_after_signing is None:
        found.append("modification_unknown")
    elif sig.modified_after_signing:
        found.append("modified_after_signing")
    return found


def _row_to_record(row: Any) -> ReceiptRecord:
    return ReceiptRecord(
        code=row.code,
        unit_code=row.unit_code,
        receipt_day=row.receipt_day,
        sequence=row.sequence,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        signer_certificate_sha256=row.signer_certificate_sha256,
        pades_level=row.pades_level,
        procedure_code=row.procedure_code,
        issued_by=row.issued_by,
        official_name=row.official_name,
        official_title=row.official_title,
        issued_at=stored_utc(row.issued_at),
        audit_seq=row.audit_seq,
    )


def _text(value: str, what: str, limit: int = MAX_NAME, *, required: bool = True) -> str:
    clean = unicodedata.normalize("NFC", value).strip()
    if required and not clean:
        raise InvalidReceiptRequest(f"{what} must not be empty")
    if len(clean) > limit:
        raise InvalidReceiptRequest(f"{what} must be at most {limit} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in clean):
        raise InvalidReceiptRequest(f"{what} must not contain control characters")
    return clean


def _optional(value: str | None, what: str, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    clean = _text(value, what, limit, required=False)
    return clean or None


class ReceiptService:
    """Issue, look up and verify receipts. Built once; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        audit: AuditService,
        *,
        signer: PdfSigner,
        renderer: ReceiptRenderer,
        units: UnitRegistry,
        trust_roots: Sequence[x509.Certificate],
        one_stop_certificates: Sequence[x509.Certificate],
        public_base_url: str,
    ) -> None:
        if not trust_roots or not one_stop_certificates:
            # An empty list never means "anything": a verifier that trusts nobody is useless, so refuse.
            raise ConfigurationError("receipt verification needs trust roots and the one-stop signing certificates")
        self._engine = engine
        self._clock = clock
        self._audit = audit
        self._signer = signer
        self._renderer = renderer
        self._units = units
        self._trust_roots = tuple(trust_roots)
        self._one_stop = tuple(one_stop_certificates)
        self._base_url = public_base_url.rstrip("/")
        self._signer_fp = sha256_hex(signer.certificate.public_bytes(Encoding.DER))
        names = signer.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self._signer_name = str(names[0].value) if names else signer.certificate.subject.rfc4514_string()

    @property
    def units(self) -> UnitRegistry:
        return self._units

    def verify_url(self, code: str) -> str:
        return self._base_url + VERIFY_PATH.format(code=code)

    # ------------------------------------------------------------------ issue

    def issue(self, request: ReceiptRequest, *, issued_by: str, idempotency_key: str | None = None) -> IssuedReceipt:
        """Allocate the code, render, sign, log and register, as one transaction."""
        if idempotency_key is not None and not IDEMPOTENCY_KEY_PATTERN.fullmatch(idempotency_key):
            raise InvalidReceiptRequest("Idempotency-Key must be 1–255 visible ASCII characters")
        unit = self._units.resolve(request.unit_code, request.unit_name)
        now = self._clock()
        received_at = request.received_at or now
        self._check_times(received_at, request.appointment_at, now)
        slip_fields = self._clean(request)
        place_name = slip_fields.pop("place_name") or unit.place
        fingerprint = request.fingerprint()
        try:
            with self._engine.begin() as conn:
                if idempotency_key is not None:
                    earlier = self._earlier(conn, issued_by, idempotency_key, fingerprint)
                    if earlier is not None:
                        return earlier
                    # Claimed first, so a concurrent retry waits here instead of rendering.
                    conn.execute(
                        insert(receipt_idempotency_keys).values(
                            issued_by=issued_by,
                            idempotency_key=idempotency_key,
                            request_sha256=fingerprint,
                            code=None,
                            created_at=now,
                        )
                    )
                day = receipt_day(received_at)
                sequence = self._allocate(conn, unit.code, day)
                code = DossierCode(unit.code, day, sequence).to_text()
                slip = ReceiptSlip(
                    code=code,
                    unit_code=unit.code,
                    unit_name=unit.name,
                    received_at=received_at,
                    appointment_at=request.appointment_at,
                    verify_url=self.verify_url(code),
                    unit_parent=unit.parent,
                    place_name=place_name,
                    signer_name=self._signer_name,
                    signed_at=now,
                    **slip_fields,
                )
                try:
                    signed = self._signer.sign(self._renderer.render(slip), signing_time=now)
                except SigningError as exc:
                    # Raised inside the transaction: the sequence increment rolls back with it.
                    raise ReceiptSigningFailed(f"the receipt could not be signed, nothing was issued: {exc}") from exc
                digest = sha256_hex(signed)
                pades_level = "B-T" if self._signer.timestamped else "B-B"
                # The bulky PDF first: the audit append below takes the log's lock, held until
                # commit, so only small writes follow it.
                conn.execute(insert(receipt_pdfs).values(code=code, pdf=signed))
                audit_seq = self._audit.record(
                    issued_by,
                    ACTION_ISSUED,
                    code,
                    {
                        "unit_code": unit.code,
                        "procedure_code": slip.procedure_code,
                        "sha256": digest,
                        "signer_certificate_sha256": self._signer_fp,
                        "pades_level": pades_level,
                        "documents": len(slip.documents),
                    },
                    {
                        "applicant": {"name": slip.applicant_name, "id_number": slip.applicant_id_number},
                        "official": {"name": slip.official_name, "title": slip.official_title},
                    },
                    conn=conn,
                )
                record = ReceiptRecord(
                    code=code,
                    unit_code=unit.code,
                    receipt_day=day,
                    sequence=sequence,
                    sha256=digest,
                    size_bytes=len(signed),
                    signer_certificate_sha256=self._signer_fp,
                    pades_level=pades_level,
                    procedure_code=slip.procedure_code,
                    issued_by=issued_by,
                    official_name=slip.official_name,
                    official_title=slip.official_title,
                    issued_at=now,
                    audit_seq=audit_seq,
                )
                conn.execute(insert(receipts).values(**asdict(record)))
                if idempotency_key is not None:
                    conn.execute(
                        update(receipt_idempotency_keys)
                        .where(receipt_idempotency_keys.c.issued_by == issued_by)
                        .where(receipt_idempotency_keys.c.idempotency_key == idempotency_key)
                        .values(code=code)
                    )
                return IssuedReceipt(record)
        except sa_exc.IntegrityError:
            # Only a concurrent request with the same Idempotency-Key gets here (its claim row
            # collided); everything this attempt did, the sequence increment included, rolled back.
            if idempotency_key is None:
                raise
            with self._engine.connect() as conn:
                earlier = self._earlier(conn, issued_by, idempotency_key, fingerprint)
            if earlier is None:
                raise
            return earlier

    def _clean(self, request: ReceiptRequest) -> dict[str, Any]:
        if len(request.documents) > MAX_DOCUMENTS:
            raise InvalidReceiptRequest(f"at most {MAX_DOCUMENTS} documents per receipt")
        if not 1 <= request.dossier_sets <= MAX_DOSSIER_SETS:
            raise InvalidReceiptRequest(f"dossier_sets must be 1–{MAX_DOSSIER_SETS}")
        if request.processing_days is not None and not 1 <= request.processing_days <= MAX_PROCESSING_DAYS:
            raise InvalidReceiptRequest(f"processing_days must be 1–{MAX_PROCESSING_DAYS}")
        documents = []
        for document in request.documents:
            if not 1 <= document.copies <= MAX_COPIES:
                raise InvalidReceiptRequest(f"copies must be 1–{MAX_COPIES}")
            documents.append(
                SlipDocument(_text(document.name, "document name", MAX_TEXT), document.copies, document.original)
            )
        return {
            "procedure_code": _text(request.procedure_code, "procedure_code", 64),
            "procedure_name": _text(request.procedure_name, "procedure_name", MAX_TEXT),
            "applicant_name": _text(request.applicant.name, "applicant.name"),
            "applicant_id_number": _text(request.applicant.id_number, "applicant.id_number", 32),
            "applicant_phone": _optional(request.applicant.phone, "applicant.phone", 32),
            "applicant_address": _optional(request.applicant.address, "applicant.address"),
            "official_name": _text(request.official.name, "official.name"),
            "official_title": _text(request.official.title, "official.title"),
            "documents": tuple(documents),
            "dossier_sets": request.dossier_sets,
            "processing_days": request.processing_days,
            "processing_working_days": request.processing_working_days,
            "result_place": _optional(request.result_place, "result_place"),
            "place_name": _optional(request.place_name, "place_name", MAX_PLACE),
        }

    @staticmethod
    def _check_times(received_at: datetime, appointment_at: datetime | date, now: datetime) -> None:
        if received_at.tzinfo is None:
            raise InvalidReceiptRequest("received_at must carry a UTC offset (RFC 3339)")
        if received_at > now + MAX_CLOCK_SKEW:
            raise InvalidReceiptRequest("received_at is in the future")
        if received_at < now - MAX_RECEIVED_AGE:
            raise InvalidReceiptRequest("received_at is more than 24 hours ago")
        if isinstance(appointment_at, datetime):
            if appointment_at.tzinfo is None:
                raise InvalidReceiptRequest("appointment_at must carry a UTC offset (RFC 3339), or be a date")
            if appointment_at < received_at:
                raise InvalidReceiptRequest("appointment_at is before the receipt")
        elif appointment_at < receipt_day(received_at):
            raise InvalidReceiptRequest("appointment_at is before the receipt date")

    @staticmethod
    def _allocate(conn: Connection, unit_code: str, day: date) -> int:
        """The next sequence of the unit's day: one atomic upsert that also locks the row
        until commit, so concurrent issuers (any number of instances) queue on it."""
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        table = receipt_sequences
        stmt = (
            dialect.insert(table)
            .values(unit_code=unit_code, receipt_day=day, last_value=1)
            .on_conflict_do_update(
                index_elements=[table.c.unit_code, table.c.receipt_day],
                set_={"last_value": table.c.last_value + 1},
                where=table.c.last_value < MAX_SEQUENCE,
            )
            .returning(table.c.last_value)
        )
        value = conn.execute(stmt).scalar_one_or_none()
        if value is None:
            raise DailySequenceExhausted(
                f"unit {unit_code} has issued all {MAX_SEQUENCE} dossier codes of {day:%d/%m/%Y}; "
                "no further code can be given today"
            )
        return int(value)

    def _earlier(self, conn: Connection, issued_by: str, key: str, fingerprint: str) -> IssuedReceipt | None:
        row = conn.execute(
            select(receipt_idempotency_keys.c.request_sha256, receipt_idempotency_keys.c.code)
            .where(receipt_idempotency_keys.c.issued_by == issued_by)
            .where(receipt_idempotency_keys.c.idempotency_key == key)
        ).first()
        if row is None or row.code is None:
            return None
        if not hmac.compare_digest(row.request_sha256, fingerprint):
            raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
        return IssuedReceipt(self._record(conn, row.code), replayed=True)

    # ------------------------------------------------------------------ read

    @staticmethod
    def _record(conn: Connection, code: str) -> ReceiptRecord:
        row = conn.execute(select(receipts).where(receipts.c.code == code)).first()
        if row is None:
            raise ReceiptNotFound(f"no receipt is registered under {code}")
        return _row_to_record(row)

    def get(self, code: str) -> ReceiptRecord:
        DossierCode.from_text(code)  # a malformed code is a bad request, not a miss
        with self._engine.connect().execution_options(**READ_ONLY) as conn:
            return self._record(conn, code)

    def pdf(self, code: str) -> bytes:
        DossierCode.from_text(code)
        with self._engine.connect().execution_options(**READ_ONLY) as conn:
            data = conn.execute(select(receipt_pdfs.c.pdf).where(receipt_pdfs.c.code == code)).scalar_one_or_none()
        if data is None:
            raise ReceiptNotFound(f"no receipt is registered under {code}")
        return bytes(data)

    def revocation(self, code: str) -> Revocation | None:
        """The revocation of the receipt registered under ``code``, if it was revoked."""
        DossierCode.from_text(code)
        with self._engine.connect().execution_options(**READ_ONLY) as conn:
            self._record(conn, code)
            return revocation_of(conn, code)

    # ------------------------------------------------------------------ revoke

    def revoke(self, code: str, reason: RevocationReason, *, revoked_by: str) -> Revocation:
        """Withdraw an issued receipt: the registry row and the audit entry ``receipt.revoked``
        in one transaction. A receipt is revoked once (ReceiptAlreadyRevoked after that)."""
        DossierCode.from_text(code)
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                record = self._record(conn, code)
                if revocation_of(conn, code) is not None:
                    raise ReceiptAlreadyRevoked(f"the receipt {code} is already revoked")
                audit_seq = self._audit.record(
                    revoked_by,
                    ACTION_REVOKED,
                    code,
                    {"reason": reason.value, "sha256": record.sha256, "issued_audit_seq": record.audit_seq},
                    conn=conn,
                )
                revocation = Revocation(code, reason, revoked_by, now, audit_seq)
                insert_revocation(conn, revocation)
                return revocation
        except sa_exc.IntegrityError:
            # Another instance revoked it between our read and our write; ours rolled back whole.
            raise ReceiptAlreadyRevoked(f"the receipt {code} is already revoked") from None

    # ------------------------------------------------------------------ verify

    def verify(self, data: bytes) -> ReceiptVerdict:
        """Check a PDF presented as a receipt. Raises UnreadableReceipt for non-PDF input."""
        digest = sha256_hex(data)
        with self._engine.connect().execution_options(**READ_ONLY) as conn:
            by_hash = conn.execute(
                select(receipts.c.code, receipts.c.issued_at).where(receipts.c.sha256 == digest)
            ).first()
        now = self._clock()
        # The registry is our proof of existence: bytes registered at issue time are judged
        # at that time, so a receipt outlives its signer certificate; anything else is judged now.
        at = stored_utc(by_hash.issued_at) if by_hash is not None else now
        try:
            # The bytes come from outside: parsed in a child process under memory and CPU limits,
            # so a PDF bomb costs a refused request, never the service.
            sig = validate_pdf_sandboxed(data, trust_roots=self._trust_roots, expected_signers=self._one_stop, at=at)
        except MalformedPdf as exc:
            raise UnreadableReceipt(str(exc)) from exc
        reasons = _signature_reasons(sig)
        code = self._code_in(sig)
        registered: bool | None = None
        hash_matches: bool | None = None
        registered_at: datetime | None = None
        revocation: Revocation | None = None
        if code is None:
            if sig.signature_found:
                reasons.append("code_missing")
        else:
            with self._engine.connect().execution_options(**READ_ONLY) as conn:
                row = conn.execute(
                    select(receipts.c.sha256, receipts.c.issued_at).where(receipts.c.code == code)
                ).first()
                revocation = None if row is None else revocation_of(conn, code)
            registered = row is not None
            if revocation is not None:
                reasons.append("receipt_revoked")
            if row is None:
                reasons.append("code_not_registered")
            else:
                registered_at = stored_utc(row.issued_at)
                hash_matches = hmac.compare_digest(row.sha256, digest)
                if not hash_matches:
                    reasons.append("hash_mismatch")
        return ReceiptVerdict(
            sha256=digest,
            code=code,
            signature=sig,
            registered=registered,
            hash_matches=hash_matches,
            registered_at=registered_at,
            validated_at=at,
            reasons=tuple(_reason(r) for r in reasons),
            revocation=revocation,
        )

    @staticmethod
    def _code_in(sig: PdfSignatureVerdict) -> str | None:
        # Only the signed revision counts: a code written by a later update proves nothing.
        if sig.signed_subject is None:
            return None
        try:
            return DossierCode.from_text(sig.signed_subject.strip()).to_text()
        except InvalidDossierCode:
            return None


def build_receipt_service(
    settings: Settings, engine: Engine, clock: Clock, audit: AuditService, keys: ServiceKeys, signing: CertifiedKey
) -> ReceiptService:
    """The service as the application wires it: ``signing`` (``integrity.keys.receipt_key``: the
    one-stop signing key, parsed once, or its token key), B-T when ``BHXH_TSA_URL`` is set, units
    from ``BHXH_UNITS_FILE`` (or the demo list)."""
    if not isinstance(signing.private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ConfigurationError("the one-stop signing key must be RSA or ECDSA for PAdES receipts")
    try:
        signer = PdfSigner(
            signing.private_key,
            signing.certificate,
            keys.ca_certificates,
            tsa_url=settings.tsa_url,
            reason="Giấy tiếp nhận hồ sơ và hẹn trả kết quả",
            location="Hệ thống thông tin một cửa điện tử",
        )
        renderer = ReceiptRenderer()
    except SigningError as exc:
        raise ConfigurationError(f"cannot set up receipt signing: {exc}") from exc
    return ReceiptService(
        engine,
        clock,
        audit,
        signer=signer,
        renderer=renderer,
        units=load_units(settings.units_file),
        trust_roots=keys.ca_certificates,
        one_stop_certificates=(signing.certificate,),
        public_base_url=settings.public_base_url,
    )
