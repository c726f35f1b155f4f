"""The personal signing page, ``/account/signing`` (Ký số cá nhân / Personal signing).

The person uploads a document and a format; the page shows what will be signed (name, size,
SHA-256, format, whose key) and asks for a fresh TOTP code; the answer to the code is the
signature as a download. The same use case as ``/v1/me/signatures``: the activation holds the
document's digest, so the document carried back in the confirmation form (the page keeps it
in a hidden field; the service stores no document) is signed only if it is that very one.
Forms carry the double-submit CSRF token like the other pages; a session cookie is required.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from api.deps import get_state
from api.routes.auth import client_address
from api.routes.personal_signatures import ACTIVATION_ID
from api.web import Page
from auth.errors import InvalidCredentials, LoginThrottled, MfaNotEnrolled, SessionInvalid
from integrity.app_state import AppState
from integrity.errors import ActivationRefusal, PersonalKeyUnavailable, PersonalSigningRefused
from integrity.personal_documents import Activation, Channel, Document, Person, PersonalFormat, PersonalSignature
from integrity.personal_signing import PersonalSigningService
from integrity.second_factor import TotpCode
from signing.errors import MalformedPdf, PayloadTooLarge, SigningError

router = APIRouter(include_in_schema=False)

PAGE = "/account/signing"
ACTIVATE = "/account/signing/activate"
_FIELDS = 8
_ACTIVATION_ID = re.compile(ACTIVATION_ID)
_FORMATS = frozenset(f.value for f in PersonalFormat)
_NAME_CHARS = 200
# What a signature is downloaded as.
_DOWNLOAD = {
    PersonalFormat.JWS: ("application/jose", ".jws"),
    PersonalFormat.CMS: ("application/pkcs7-signature", ".p7s"),
    PersonalFormat.PDF: ("application/pdf", ".signed.pdf"),
}

SIGN_TEXTS: dict[str, tuple[str, str]] = {
    "sign_title": ("Ký số cá nhân", "Personal signing"),
    "sign_intro": (
        "Ký một tài liệu bằng khóa cá nhân của bạn. Bạn sẽ thấy tài liệu sẽ được ký và xác nhận bằng mã "
        "từ ứng dụng xác thực; mỗi lần xác nhận chỉ ký đúng tài liệu đó, một lần, trong 5 phút.",
        "Sign a document with your own personal key. You will see what is to be signed and confirm with a "
        "code from your authenticator app; each confirmation signs that document only, once, within 5 minutes.",
    ),
    "document": ("Tài liệu", "Document"),
    "format": ("Định dạng chữ ký", "Signature format"),
    "format_jws": ("JWS (tài liệu nằm trong chữ ký)", "JWS (the document inside the signature)"),
    "format_cms": ("CMS tách rời (tệp .p7s)", "Detached CMS (a .p7s file)"),
    "format_pdf": ("PDF (PAdES, chữ ký trong tệp PDF)", "PDF (PAdES, the signature inside the PDF)"),
    "review": ("Xem lại", "Review"),
    "review_title": ("Bạn sắp ký", "You are about to sign"),
    "name": ("Tên tệp", "File name"),
    "size": ("Kích thước", "Size"),
    "bytes": ("{n} byte", "{n} bytes"),
    "sha256": ("Mã băm SHA-256", "SHA-256"),
    "signer": ("Khóa của", "Key of"),
    "expires": ("Hết hạn lúc", "Expires at"),
    "sign_now": ("Ký", "Sign"),
    "start_over": ("Chọn tài liệu khác", "Choose another document"),
    "no_key": (
        "Bạn chưa có khóa cá nhân ký được định dạng này. Hãy liên hệ quản trị viên.",
        "You have no personal key that signs this format. Ask an administrator.",
    ),
    "empty": ("Hãy chọn một tệp không rỗng.", "Choose a file that is not empty."),
    "too_large": ("Tệp quá lớn.", "The file is too large."),
    "unreadable_pdf": ("Tệp không phải là tệp PDF đọc được.", "The file is not a readable PDF."),
    "bad_upload": ("Không đọc được tệp gửi lên. Vui lòng thử lại.", "The upload could not be read. Please try again."),
    "activation_refused": (
        "Không ký được: {why}. Hãy chọn lại tài liệu.",
        "Not signed: {why}. Choose the document again.",
    ),
    "why_expired": ("đã quá 5 phút", "more than 5 minutes passed"),
    "why_already_used": ("xác nhận này đã được dùng", "this confirmation was already used"),
    "why_digest_mismatch": ("tài liệu đã thay đổi", "the document changed"),
    "why_other": ("yêu cầu không còn hiệu lực", "the request is no longer valid"),
    "need_totp": (
        "Cần bật xác thực hai lớp (TOTP) trước khi ký.",
        "Turn on two-step verification (TOTP) before signing.",
    ),
    "signing_unavailable": (
        "Thiết bị ký tạm thời không dùng được. Vui lòng thử lại sau.",
        "The signing device cannot be used now. Please try again later.",
    ),
}


class _SignPage(Page):
    own_texts = SIGN_TEXTS

    def _toggle_path(self) -> str:
        return PAGE  # every step's language link starts the page again

    def show(self, status: int = 200, **context: Any) -> Response:
        response: Response = self.render(
            "personal_signing.html", status=status, formats=list(PersonalFormat), **context
        )
        return response


def _context(request: Request, state: AppState) -> tuple[_SignPage, PersonalSigningService]:
    return _SignPage(request, state), state.personal_signing


def _person(page: _SignPage, personal: PersonalSigningService) -> Person | None:
    try:
        return personal.session_person(page.session())
    except SessionInvalid:
        return None


@router.get(PAGE)
async def signing_page(request: Request, state: AppState = Depends(get_state)) -> Response:
    page, personal = _context(request, state)
    if await run_in_threadpool(_person, page, personal) is None:
        return page.redirect("/login")
    return page.show()


def _part_limit(limit: int) -> int:
    # The confirmation carries the document back as base64 in a field: room for it.
    return limit * 4 // 3 + 4


@router.post(PAGE)
async def upload(request: Request, state: AppState = Depends(get_state)) -> Response:
    page, personal = _context(request, state)
    person = await run_in_threadpool(_person, page, personal)
    if person is None:
        return page.redirect("/login")
    limit = personal.signatures.max_payload_bytes
    try:
        async with request.form(max_files=1, max_fields=_FIELDS, max_part_size=_part_limit(limit)) as form:
            if not page.csrf_ok(str(form.get("csrf", ""))):
                return page.show(400, error=page.t("form_expired"))
            upload_file = form.get("document")
            chosen = str(form.get("format", ""))
            if not isinstance(upload_file, UploadFile) or chosen not in _FORMATS:
                return page.show(400, error=page.t("bad_upload"))
            document = Document(await upload_file.read(limit + 1), _name(upload_file.filename))
    except HTTPException:
        return page.show(400, error=page.t("bad_upload"))
    fmt = PersonalFormat(chosen)
    try:
        activation = await run_in_threadpool(lambda: personal.request(person, document, fmt, channel=Channel.WEB))
    except PersonalKeyUnavailable:
        return page.show(409, error=page.t("no_key"))
    except PayloadTooLarge:
        return page.show(413, error=page.t("too_large"))
    except MalformedPdf:
        return page.show(422, error=page.t("unreadable_pdf"))
    except SigningError:
        return page.show(400, error=page.t("empty"))
    return _review(page, activation, document)


def _review(page: _SignPage, activation: Activation, document: Document, status: int = 200, **extra: Any) -> Response:
    return page.show(
        status,
        activation=activation,
        document_b64=base64.b64encode(document.content).decode("ascii"),
        **extra,
    )


@router.post(ACTIVATE)
async def confirm(request: Request, state: AppState = Depends(get_state)) -> Response:
    page, personal = _context(request, state)
    person = await run_in_threadpool(_person, page, personal)
    if person is None:
        return page.redirect("/login")
    try:
        limit = personal.signatures.max_payload_bytes
        async with request.form(max_files=1, max_fields=_FIELDS, max_part_size=_part_limit(limit)) as form:
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    except HTTPException:
        return page.show(400, error=page.t("bad_upload"))
    if not page.csrf_ok(fields.get("csrf", "")):
        return page.show(400, error=page.t("form_expired"))
    try:
        content = base64.b64decode(fields.get("document_b64", ""), validate=True)
    except (binascii.Error, ValueError):
        return page.show(400, error=page.t("bad_upload"))
    document = Document(content, _name(fields.get("name")))
    activation_id = fields.get("activation", "")
    if not _ACTIVATION_ID.fullmatch(activation_id):
        return page.show(400, error=page.t("bad_upload"))
    factor = TotpCode(state.accounts, fields.get("code", "").strip()[:16])
    address = client_address(request)
    try:
        signed = await run_in_threadpool(
            lambda: personal.activate(person, activation_id, document, factor, address=address, channel=Channel.WEB)
        )
    except (InvalidCredentials, LoginThrottled) as exc:
        again = await run_in_threadpool(personal.pending, person, activation_id, document)
        if isinstance(exc, LoginThrottled):
            message = page.t("throttled", s=exc.retry_after)
            return _review(page, again, document, 429, error=message, headers={"Retry-After": str(exc.retry_after)})
        return _review(page, again, document, 401, error=page.t("bad_code"))
    except MfaNotEnrolled:
        return page.show(409, error=page.t("need_totp"))
    except PersonalSigningRefused as exc:
        why = {
            ActivationRefusal.EXPIRED: "why_expired",
            ActivationRefusal.ALREADY_USED: "why_already_used",
            ActivationRefusal.DIGEST_MISMATCH: "why_digest_mismatch",
        }.get(exc.reason, "why_other")
        return page.show(409, error=page.t("activation_refused", why=page.t(why)))
    except SigningError:
        return page.show(503, error=page.t("signing_unavailable"))
    return _download(signed, document.name)


def _name(raw: object) -> str | None:
    """The file's own name (no folders a browser may send along), bounded."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    return PurePath(raw.replace("\\", "/")).name[:_NAME_CHARS] or None


def _download(signed: PersonalSignature, name: str | None) -> Response:
    media_type, suffix = _DOWNLOAD[signed.format]
    stem = name or "document"
    if signed.format is PersonalFormat.PDF and stem.lower().endswith(".pdf"):
        stem = stem[:-4]
    filename = stem + suffix
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename)
    # RFC 6266 §4.3: an ASCII fallback, and the exact name in RFC 8187 encoding.
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
    return Response(signed.content, media_type=media_type, headers={"Content-Disposition": disposition})


__all__ = ["SIGN_TEXTS", "router"]
