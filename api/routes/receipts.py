"""Receipts: issue and revoke (scope ``receipts:issue``), read (``receipts:read``), verify (``verify``).

Thin: pydantic models in, ``integrity.receipts`` does the work, JSON or the PDF out. Domain
errors propagate to the one problem+json table (api/errors.py).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from api.deps import Principal, get_state, require_scope
from api.openapi import BINARY, content, problems
from api.origin import external_origin
from integrity.app_state import AppState
from integrity.receipt_revocations import RevocationReason
from integrity.receipts import Applicant, Official, ReceiptRecord, ReceiptRequest, ReceiptService
from signing.pdf import ModificationLevel
from signing.receipt_pdf import SlipDocument

router = APIRouter(prefix="/v1/receipts", tags=["receipts"])

PDF_MEDIA_TYPES = frozenset({"application/pdf", "application/octet-stream"})
REPLAYED_HEADER = "Idempotent-Replayed"


def get_receipts(state: AppState = Depends(get_state)) -> ReceiptService:
    return state.receipts  # type: ignore[attr-defined,no-any-return]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UnitIn(_Strict):
    code: str = Field(min_length=1, max_length=32, examples=["000.00.31.H29"])
    name: str | None = Field(None, max_length=200, examples=["Bảo hiểm xã hội Thành phố Hồ Chí Minh"])


class ApplicantIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    id_number: str = Field(min_length=1, max_length=32)
    phone: str | None = Field(None, max_length=32)
    address: str | None = Field(None, max_length=500)


class DocumentIn(_Strict):
    name: str = Field(min_length=1, max_length=500)
    copies: int = Field(1, ge=1, le=100)
    original: bool = False


class OfficialIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=200)


class ReceiptIn(_Strict):
    receiving_unit: UnitIn
    procedure_code: str = Field(min_length=1, max_length=64)
    procedure_name: str = Field(min_length=1, max_length=500)
    applicant: ApplicantIn
    documents: list[DocumentIn] = Field(default_factory=list, max_length=50)
    official: OfficialIn
    received_at: AwareDatetime | None = None
    appointment_at: AwareDatetime | date = Field(
        description="when the result is handed back (form 01 item 5): RFC 3339 date-time with offset "
        "(the slip prints the hour), or a date"
    )
    dossier_sets: int = Field(1, ge=1, le=99, description="number of dossier sets handed in (form 01 item 2)")
    processing_days: int | None = Field(
        None, ge=1, le=365, description="the procedure's processing time in days (form 01 item 3)"
    )
    processing_working_days: bool = Field(True, description="processing_days counts working days")
    result_place: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="where the result is collected (form 01 item 6); default: the unit's one-stop section",
    )
    place_name: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="place name of the date line, e.g. Hà Nội; default: the unit's configured place",
    )

    def to_domain(self) -> ReceiptRequest:
        return ReceiptRequest(
            unit_code=self.receiving_unit.code,
            unit_name=self.receiving_unit.name,
            procedure_code=self.procedure_code,
            procedure_name=self.procedure_name,
            applicant=Applicant(
                self.applicant.name, self.applicant.id_number, self.applicant.phone, self.applicant.address
            ),
            official=Official(self.official.name, self.official.title),
            documents=tuple(SlipDocument(d.name, d.copies, d.original) for d in self.documents),
            received_at=self.received_at,
            appointment_at=self.appointment_at,
            dossier_sets=self.dossier_sets,
            processing_days=self.processing_days,
            processing_working_days=self.processing_working_days,
            result_place=self.result_place,
            place_name=self.place_name,
        )


class ReceiptIssued(BaseModel):
    code: str
    sha256: str
    audit_seq: int
    pdf_url: str
    issued_at: datetime


class OfficialOut(BaseModel):
    name: str
    title: str


class RevocationReasonOut(BaseModel):
    code: RevocationReason
    vi: str
    en: str


class RevocationOut(BaseModel):
    revoked_at: datetime
    reason: RevocationReasonOut


class RevokeIn(_Strict):
    reason: RevocationReason = Field(description="why the slip is withdrawn; one of a fixed list, never free text")


class RevokedOut(RevocationOut):
    code: str
    audit_seq: int


class ReceiptOut(BaseModel):
    code: str
    unit_code: str
    receipt_date: date
    sequence: int
    sha256: str
    size_bytes: int
    signer_certificate_sha256: str
    pades_level: str
    procedure_code: str
    issued_by: str
    official: OfficialOut
    issued_at: datetime
    audit_seq: int
    pdf_url: str
    revocation: RevocationOut | None = Field(description="set once the receipt was revoked")


# RFC 3339 text as the verdict gives it (``isoformat``), typed as such in the schema.
_Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class ReasonOut(BaseModel):
    code: str = Field(description="stable reason code, e.g. hash_mismatch, untrusted_signer, no_signature")
    vi: str = Field(description="the reason, in Vietnamese")
    en: str = Field(description="the reason, in English")


class SignatureVerdictOut(BaseModel):
    """The first signature of the file; ``null`` wherever validation could not tell."""

    found: bool = Field(description="the file carries a PDF signature")
    count: int = Field(description="how many signatures the file carries")
    intact: bool | None = Field(description="the signed byte ranges are unchanged")
    valid: bool | None = Field(
        description="the signature holds: intact, value_verifies and chain_trusted all true (false if any is false)"
    )
    value_verifies: bool | None = Field(description="the signature value verifies under the signer's key")
    trusted_signer: bool | None = Field(description="chain_trusted and one_stop_signer")
    chain_trusted: bool | None = Field(description="the certificate chains to a trust root of the system")
    one_stop_signer: bool | None = Field(description="the certificate is a one-stop system signing certificate")
    trust_problem: str | None = Field(description="AdES sub-indication when not trusted, e.g. EXPIRED")
    coverage: str | None = Field(description="entire_file, entire_revision, contiguous_block_from_start or unclear")
    modification_level: ModificationLevel | None = Field(description="what changed after the signed revision")
    signer: str | None = Field(description="the signer certificate's subject")
    signer_purpose: str | None = Field(
        None, description="what the signer certificate's policies mark it for (receipt, data-message…), if any"
    )
    signer_certificate_sha256: str | None
    signed_at: _Timestamp | None = Field(description="the time the signer claims, not proven")
    timestamp: _Timestamp | None = Field(description="the time proven by an RFC 3161 token")
    pades_level: Literal["B-B", "B-T"] | None


class ReceiptVerdictOut(BaseModel):
    """Did the one-stop system issue this file, and does it still stand? ``issued_by_system`` is
    true only when every fact below is a definite yes; ``valid`` besides needs the receipt not
    revoked; ``reasons`` says why not."""

    valid: bool = Field(description="issued_by_system and not revoked: a receipt that stands")
    issued_by_system: bool
    code: str | None = Field(description="the dossier code in the signed revision")
    sha256: str = Field(description="SHA-256 of the file as sent, lowercase hex")
    registered: bool | None = Field(description="the code is in the receipt registry (null: no code)")
    hash_matches: bool | None = Field(description="the file is the one registered under the code")
    registered_at: _Timestamp | None
    modified_after_signing: bool | None
    signature: SignatureVerdictOut
    validated_at: _Timestamp = Field(description="the time the signature was judged at")
    reasons: list[ReasonOut]
    revoked: bool | None = Field(
        description="the registered receipt under the code was revoked after issue (null: no registered code); "
        "issued_by_system still says that the system issued it, valid is then false"
    )
    revocation: RevocationOut | None


class PdfResponse(Response):
    media_type = "application/pdf"


def _pdf_url(request: Request, code: str) -> str:
    # Under the external origin (api.origin): behind a TLS terminator the connection says http://.
    path = str(request.app.url_path_for("receipt_pdf", code=code))
    return external_origin(request.app.state.bhxh).url(request.scope, path)


@router.post("", status_code=201, response_model=ReceiptIssued, responses=problems(409, 422, 503))
def issue_receipt(
    body: ReceiptIn,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
    receipts: ReceiptService = Depends(get_receipts),
    caller: Principal = Depends(require_scope("receipts:issue")),
) -> dict[str, Any]:
    issued = receipts.issue(body.to_domain(), issued_by=caller.actor, idempotency_key=idempotency_key)
    response.headers["Location"] = f"{router.prefix}/{issued.code}"
    if issued.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    record = issued.record
    return {
        "code": record.code,
        "sha256": record.sha256,
        "audit_seq": record.audit_seq,
        "pdf_url": _pdf_url(request, record.code),
        "issued_at": record.issued_at,
    }


# The body is read raw (not a pydantic model), so the schema says what it is: OpenAPI clients
# and the schema fuzzer (tests/api/test_fuzz.py) then send PDF bytes, not nothing.
_PDF_BODY = {
    "requestBody": {
        "required": True,
        "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in sorted(PDF_MEDIA_TYPES)},
    }
}


@router.post("/verify", response_model=ReceiptVerdictOut, openapi_extra=_PDF_BODY, responses=problems(415, 422))
async def verify_receipt(
    request: Request,
    receipts: ReceiptService = Depends(get_receipts),
    _caller: Principal = Depends(require_scope("verify")),
) -> dict[str, Any]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in PDF_MEDIA_TYPES:
        raise HTTPException(415, "send the receipt as the raw request body with Content-Type: application/pdf")
    data = await request.body()
    # pyHanko runs its own event loop (asyncio.run): validate on a worker thread, not this loop.
    verdict = await run_in_threadpool(receipts.verify, data)
    return verdict.to_dict()


def _out(request: Request, record: ReceiptRecord, receipts: ReceiptService) -> dict[str, Any]:
    revocation = receipts.revocation(record.code)
    return {
        "code": record.code,
        "unit_code": record.unit_code,
        "receipt_date": record.receipt_day,
        "sequence": record.sequence,
        "sha256": record.sha256,
        "size_bytes": record.size_bytes,
        "signer_certificate_sha256": record.signer_certificate_sha256,
        "pades_level": record.pades_level,
        "procedure_code": record.procedure_code,
        "issued_by": record.issued_by,
        "official": {"name": record.official_name, "title": record.official_title},
        "issued_at": record.issued_at,
        "audit_seq": record.audit_seq,
        "pdf_url": _pdf_url(request, record.code),
        "revocation": None if revocation is None else revocation.public_dict(),
    }


@router.get("/{code}", response_model=ReceiptOut, responses=problems(404, 422))
def get_receipt(
    code: str,
    request: Request,
    receipts: ReceiptService = Depends(get_receipts),
    _caller: Principal = Depends(require_scope("receipts:read")),
) -> dict[str, Any]:
    return _out(request, receipts.get(code), receipts)


@router.post("/{code}/revocation", status_code=201, response_model=RevokedOut, responses=problems(404, 409, 422))
def revoke_receipt(
    code: str,
    body: RevokeIn,
    receipts: ReceiptService = Depends(get_receipts),
    caller: Principal = Depends(require_scope("receipts:issue")),
) -> dict[str, Any]:
    revocation = receipts.revoke(code, body.reason, revoked_by=caller.actor)
    return {"code": revocation.code, "audit_seq": revocation.audit_seq, **revocation.public_dict()}


@router.get(
    "/{code}/pdf",
    name="receipt_pdf",
    response_class=PdfResponse,
    responses={**content(200, "the signed receipt (PAdES)", **{"application/pdf": BINARY}), **problems(404, 422)},
)
def get_receipt_pdf(
    code: str,
    receipts: ReceiptService = Depends(get_receipts),
    _caller: Principal = Depends(require_scope("receipts:read")),
) -> Response:
    pdf = receipts.pdf(code)
    digest = hashlib.sha256(pdf).digest()
    return PdfResponse(
        pdf,
        headers={
            "Content-Disposition": f'attachment; filename="{code}.pdf"',
            # RFC 9530: lets the caller check the bytes against the registered SHA-256.
            "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
            "ETag": f'"{digest.hex()}"',
        },
    )
