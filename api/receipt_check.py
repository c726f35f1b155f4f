"""The public receipt check, ``/r/{code}``: the address the QR code on every slip encodes.

No authentication: whoever holds the paper holds the code. ``GET`` tells whether this system
issued a slip under the code, by which unit, when, the SHA-256 of the PDF and whether it was
revoked; ``POST`` takes a PDF (a form upload, or the raw body as ``application/pdf``) and tells
whether it is that slip. One address for people and programs: an ``Accept`` that prefers
``application/json`` gets JSON (errors as problem+json), anything else the page, in Vietnamese
or English (``?lang=``) like the other pages. Nothing personal is shown and no upload is kept.

Every call spends the sender's address budget, as the routes without a scope do
(api/rate_limit.py); a page answer to a refusal is a page too. The upload needs no CSRF token:
it changes nothing, and a forged cross-site post could not read the answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from api.deps import get_state
from api.rate_limit import spend_address
from api.web import Page
from integrity.app_state import AppState
from integrity.errors import (
    RateLimited,
    RateLimiterUnavailable,
    ReceiptFileTooLarge,
    ReceiptNotFound,
    UnreadableReceipt,
)
from integrity.receipt_public import MAX_PUBLIC_FILE_BYTES, CopyVerdict, PublicReceiptCheck

router = APIRouter(include_in_schema=False)

PDF_MEDIA_TYPES = frozenset({"application/pdf", "application/octet-stream"})
JSON_MEDIA_TYPES = frozenset({"application/json", "application/problem+json"})
# What a form upload may add around the file (boundaries, part headers).
MULTIPART_OVERHEAD = 64 * 1024
VARY = {"Vary": "Accept"}

CHECK_TEXTS: dict[str, tuple[str, str]] = {
    "check_title": ("Tra cứu giấy tiếp nhận hồ sơ", "Check a receipt"),
    "issued": (
        "Mã hồ sơ này do Hệ thống thông tin một cửa điện tử cấp.",
        "This dossier code was issued by the one-stop system.",
    ),
    "issued_revoked": (
        "Mã hồ sơ này do hệ thống cấp, nhưng giấy tiếp nhận đã bị thu hồi.",
        "This dossier code was issued by the system, but the receipt has been revoked.",
    ),
    "not_found": (
        "Không có giấy tiếp nhận nào do hệ thống này cấp mang mã này.",
        "No receipt issued by this system carries this code.",
    ),
    "not_found_hint": (
        "Hãy đối chiếu mã trên giấy (dạng 000.00.31.H29-251123-0001).",
        "Compare it with the code on the paper (like 000.00.31.H29-251123-0001).",
    ),
    "dossier_code": ("Mã hồ sơ", "Dossier code"),
    "unit": ("Đơn vị tiếp nhận", "Receiving unit"),
    "issued_at": ("Thời điểm cấp", "Issued at"),
    "sha256": ("Mã băm SHA-256 của tệp PDF đã cấp", "SHA-256 of the issued PDF"),
    "state": ("Trạng thái", "Status"),
    "valid": ("Còn hiệu lực", "In force"),
    "revoked_at": ("Đã thu hồi lúc {at}", "Revoked at {at}"),
    "upload_title": ("Kiểm tra một tệp PDF", "Check a PDF file"),
    "upload_help": (
        "Chọn tệp PDF của giấy tiếp nhận để biết đó có đúng là giấy hệ thống đã cấp cho mã này không. "
        "Tệp chỉ được kiểm tra, không được lưu lại.",
        "Choose the receipt's PDF file to learn whether it is the receipt the system issued for this code. "
        "The file is only checked, never kept.",
    ),
    "file": ("Tệp PDF (tối đa {mib} MiB)", "PDF file (at most {mib} MiB)"),
    "check": ("Kiểm tra", "Check"),
    "genuine": (
        "Đúng là giấy tiếp nhận do hệ thống cấp cho mã này, không bị sửa đổi.",
        "This is the receipt the system issued for this code, unaltered.",
    ),
    "genuine_revoked": (
        "Đúng là giấy do hệ thống cấp cho mã này, nhưng giấy đã bị thu hồi.",
        "This is the receipt the system issued for this code, but it has been revoked.",
    ),
    "altered": (
        "Tệp này đã bị sửa đổi: không phải giấy tiếp nhận hệ thống đã cấp.",
        "This file was altered: it is not the receipt the system issued.",
    ),
    "not_this_receipt": (
        "Tệp này không phải giấy tiếp nhận hệ thống đã cấp cho mã này.",
        "This file is not the receipt the system issued for this code.",
    ),
    "file_sha256": ("Mã băm SHA-256 của tệp vừa chọn", "SHA-256 of the chosen file"),
    "unreadable": ("Tệp không phải là tệp PDF đọc được.", "The file is not a readable PDF."),
    "too_large": (
        "Tệp quá lớn: giấy tiếp nhận nhỏ hơn {mib} MiB rất nhiều.",
        "The file is too large: a receipt is far smaller than {mib} MiB.",
    ),
    "bad_upload": ("Không đọc được tệp gửi lên. Vui lòng thử lại.", "The upload could not be read. Please try again."),
    "wrong_type": ("Hãy gửi một tệp PDF.", "Please send a PDF file."),
    "too_many": (
        "Quá nhiều yêu cầu. Vui lòng thử lại sau {s} giây.",
        "Too many requests. Try again in {s} seconds.",
    ),
    "unavailable": (
        "Dịch vụ tạm thời không trả lời. Vui lòng thử lại sau {s} giây.",
        "The service is not answering for now. Try again in {s} seconds.",
    ),
}


class _CheckPage(Page):
    """The shared page context, with the check's texts and without a CSRF cookie (no form
    here needs one, and a public page sets no cookie it does not need)."""

    own_texts = CHECK_TEXTS

    def __init__(self, request: Request, state: AppState) -> None:
        super().__init__(request, state)
        self.new_csrf = False

    def answer(self, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> Response:
        response: Response = self.render(
            "receipt_check.html", status=status, headers={**VARY, **(headers or {})}, mib=_MIB, **context
        )
        return response

    def not_found(self, code: str) -> Response:
        return self.answer(404, code=code, not_found=True)


_MIB = MAX_PUBLIC_FILE_BYTES // (1024 * 1024)


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return max(0.0, min(1.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


def wants_json(accept: str | None) -> bool:
    """RFC 9110 §12.5.1: JSON when the sender ranks it above HTML; the page otherwise (no
    Accept, ``*/*`` or a tie: a person's browser or a QR scanner)."""
    specific: dict[str, float] = {}
    ranges: dict[str, float] = {}
    for item in (accept or "").split(","):
        media, _, params = item.strip().partition(";")
        media = media.strip().lower()
        if not media:
            continue
        target = ranges if media.endswith("/*") else specific
        target[media] = max(target.get(media, 0.0), _quality(params))

    def rank(exact: tuple[str, ...], family: str) -> float:
        found = [specific[m] for m in exact if m in specific]
        if found:
            return max(found)
        return ranges.get(family, ranges.get("*/*", 0.0))

    return rank(tuple(JSON_MEDIA_TYPES), "application/*") > rank(("text/html",), "text/*")


async def _admitted(request: Request, page: _CheckPage | None) -> Response | None:
    """Spend one request of the sender's address budget; a refusal as a page when one is wanted."""
    try:
        await spend_address(request)
    except (RateLimited, RateLimiterUnavailable) as exc:
        if page is None:
            raise
        status, text = (429, "too_many") if isinstance(exc, RateLimited) else (503, "unavailable")
        retry = exc.problem_headers["Retry-After"]
        return page.answer(status, {"Retry-After": retry}, error=page.t(text, s=retry), code=None)
    return None


def _context(request: Request, state: AppState) -> tuple[_CheckPage | None, PublicReceiptCheck]:
    page = None if wants_json(request.headers.get("accept")) else _CheckPage(request, state)
    return page, PublicReceiptCheck(state.receipts)


@router.get("/r/{code}")
async def receipt_status(code: str, request: Request, state: AppState = Depends(get_state)) -> Response:
    page, check = _context(request, state)
    refused = await _admitted(request, page)
    if refused is not None:
        return refused
    try:
        receipt = await run_in_threadpool(check.status, code)
    except ReceiptNotFound:
        if page is None:
            raise
        return page.not_found(code)
    if page is None:
        return JSONResponse(receipt.to_dict(), headers=VARY)
    return page.answer(code=code, receipt=receipt)


async def _body(request: Request) -> bytes:
    """The presented file: the single part of a form upload, or the raw body; read up to one
    byte past the limit (the body-limit middleware bounds what reaches here at all)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_PUBLIC_FILE_BYTES + MULTIPART_OVERHEAD:
        raise ReceiptFileTooLarge(f"a receipt is far smaller than {_MIB} MiB")
    if media in PDF_MEDIA_TYPES:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_PUBLIC_FILE_BYTES:
                break
        return bytes(data)
    if media == "multipart/form-data":
        async with request.form(max_files=1, max_fields=1) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return b""
            return await upload.read(MAX_PUBLIC_FILE_BYTES + 1)
    raise HTTPException(
        415, "send the PDF as a form upload (field 'file') or as the body with Content-Type: application/pdf"
    )


@router.post("/r/{code}")
async def receipt_copy_check(code: str, request: Request, state: AppState = Depends(get_state)) -> Response:
    page, check = _context(request, state)
    refused = await _admitted(request, page)
    if refused is not None:
        return refused
    try:
        data = await _body(request)
        result = await run_in_threadpool(check.check_copy, code, data)
    except ReceiptNotFound:
        if page is None:
            raise
        return page.not_found(code)
    except (ReceiptFileTooLarge, UnreadableReceipt, HTTPException) as exc:
        if page is None:
            raise
        return await _refused_upload(page, check, code, exc)
    if page is None:
        return JSONResponse(result.to_dict(), headers=VARY)
    return page.answer(code=code, receipt=result.receipt, result=result, verdicts=CopyVerdict)


async def _refused_upload(page: _CheckPage, check: PublicReceiptCheck, code: str, exc: Exception) -> Response:
    """The page again, with what was wrong with the upload (the receipt's facts still shown)."""
    if isinstance(exc, ReceiptFileTooLarge):
        status, message = 413, page.t("too_large", mib=_MIB)
    elif isinstance(exc, UnreadableReceipt):
        status, message = 422, page.t("unreadable")
    elif isinstance(exc, HTTPException) and exc.status_code == 415:
        status, message = 415, page.t("wrong_type")
    else:
        status, message = 400, page.t("bad_upload")
    try:
        receipt = await run_in_threadpool(check.status, code)
    except ReceiptNotFound:
        return page.not_found(code)
    return page.answer(status, code=code, receipt=receipt, error=message)


__all__ = ["router", "wants_json"]
