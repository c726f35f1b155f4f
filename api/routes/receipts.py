"""Receipts: issue (scope ``receipts:issue``), read (``receipts:read``), verify (``verify``).

Thin: pydantic models in, ``integrity.receipts`` does the work, JSON or the PDF out. Domain
errors propagate to the one problem+json table (api/errors.py).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from api.deps import Principal, get_state, require_scope
from integrity.app_state import AppState
from integrity.receipts import Applicant, Official, ReceiptRecord, ReceiptRequest, ReceiptService
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
    appointment_at: AwareDatetime | date = Field(description="RFC 3339 date-time with offset, or a date")

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


def _pdf_url(request: Request, code: str) -> str:
    return str(request.url_for("receipt_pdf", code=code))


@router.post("", status_code=201, response_model=ReceiptIssued)
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


@router.post("/verify", openapi_extra=_PDF_BODY)
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


def _out(request: Request, record: ReceiptRecord) -> dict[str, Any]:
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
    }


@router.get("/{code}", response_model=ReceiptOut)
def get_receipt(
    code: str,
    request: Request,
    receipts: ReceiptService = Depends(get_receipts),
    _caller: Principal = Depends(require_scope("receipts:read")),
) -> dict[str, Any]:
    return _out(request, receipts.get(code))


@router.get("/{code}/pdf", name="receipt_pdf", response_class=Response)
def get_receipt_pdf(
    code: str,
    receipts: ReceiptService = Depends(get_receipts),
    _caller: Principal = Depends(require_scope("receipts:read")),
) -> Response:
    pdf = receipts.pdf(code)
    digest = hashlib.sha256(pdf).digest()
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{code}.pdf"',
            # RFC 9530: lets the caller check the bytes against the registered SHA-256.
            "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
            "ETag": f'"{digest.hex()}"',
        },
    )
