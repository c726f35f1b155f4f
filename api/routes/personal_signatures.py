"""A person's own signatures (``/v1/me/signatures``): ask, see what will be signed, confirm with
a fresh second factor (docs/api.md, docs/keys.md).

Only a person's full session reaches these routes: an API key is no session and is refused
(401), so no system signs in a person's name. The document travels as JSON (``document_b64``)
or as ``multipart/form-data`` (a file part ``document``), under the same size limit as
``/v1/signatures``. Thin: parse, call ``integrity.personal_signing``, render.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from api.deps import session_token
from api.openapi import BINARY, problems
from api.rate_limit import limit_public
from api.routes.auth import client_address
from integrity.app_state import AppState
from integrity.personal_documents import Channel, Document, parse_format
from integrity.personal_signing import PersonalSigningService
from integrity.second_factor import TotpCode
from integrity.signatures import decode_base64

router = APIRouter(prefix="/v1/me/signatures", tags=["personal signatures"], dependencies=[Depends(limit_public)])

JSON = "application/json"
MULTIPART = "multipart/form-data"
ACTIVATION_ID = r"^[A-Za-z0-9_-]{1,64}$"
_FORM_FIELDS = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Base64Document(BaseModel):
    document_b64: str = Field(description="the document, standard base64")


class RequestForm(_Strict):
    format: Literal["jws", "cms", "pdf"] = Field(description="jws (attached), cms (detached CAdES) or pdf (PAdES)")
    name: str | None = Field(None, max_length=200, description="the document's name, shown back; never stored")
    key_id: str | None = Field(
        None, max_length=64, description="one of your active personal keys; default: the newest that can"
    )


class RequestIn(RequestForm, _Base64Document):
    pass


class ActivateForm(_Strict):
    code: str = Field(min_length=1, max_length=16, description="a fresh TOTP code")


class ActivateIn(ActivateForm, _Base64Document):
    """The same document again (``document_b64``) and a fresh code."""


class DisplayText(BaseModel):
    vi: str
    en: str


class DisplayOut(BaseModel):
    name: str | None
    bytes: int
    sha256: str
    format: str
    signer: str = Field(description="the common name of your certificate, or the key id of a key without one")
    text: DisplayText


class ActivationOut(BaseModel):
    id: str
    format: str
    digest: str = Field(description="sha256:<hex> of the document; the activation signs this document only")
    key_id: str
    expires_at: str = Field(description="at most five minutes after the request; single use")
    display: DisplayOut


class PersonalSignatureOut(BaseModel):
    activation_id: str
    format: str
    signature: str = Field(description="JWS compact; base64 DER for cms; base64 of the signed PDF for pdf")
    key_id: str
    alg: str
    digest: str
    signed_at: str
    audit_seq: int


def _body(json_model: type[BaseModel], form_fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads JSON or multipart itself."""
    form = {
        "type": "object",
        "required": ["document", *[n for n in form_fields if n in ("format", "code")]],
        "properties": {"document": BINARY, **form_fields},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": json_model.model_json_schema()}, MULTIPART: {"schema": form}},
        }
    }


_TEXT = {"type": "string"}
_REQUEST_BODY = _body(
    RequestIn, {"format": {"type": "string", "enum": ["jws", "cms", "pdf"]}, "name": _TEXT, "key_id": _TEXT}
)
_ACTIVATE_BODY = _body(ActivateIn, {"code": _TEXT})

F = TypeVar("F", bound=_Strict)


def get_personal(request: Request) -> PersonalSigningService:
    state: AppState = request.app.state.bhxh
    return state.personal_signing


def _validated(model: type[F], data: Any = None, *, json_text: bytes | None = None) -> F:
    try:
        return model.model_validate_json(json_text) if json_text is not None else model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
        ) from None


async def _read(request: Request, form_model: type[F], json_model: type[F], limit: int) -> tuple[F, Document]:
    """The fields and the document, from a JSON or a multipart body (anything else: 415)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == JSON:
        model = _validated(json_model, json_text=await request.body())
        assert isinstance(model, _Base64Document)
        return model, Document(decode_base64(model.document_b64, "document_b64"), getattr(model, "name", None))
    if media != MULTIPART:
        raise HTTPException(415, f"send {JSON} (document_b64) or {MULTIPART} (a file part named document)")
    async with request.form(max_files=1, max_fields=_FORM_FIELDS) as form:
        upload = form.get("document")
        fields = _validated(form_model, {k: v for k, v in form.multi_items() if isinstance(v, str)})
        if not isinstance(upload, UploadFile):
            raise RequestValidationError(
                [{"loc": ("body", "document"), "msg": "a file part named document is required", "type": "missing"}]
            )
        content = await upload.read(limit + 1)
        return fields, Document(content, getattr(fields, "name", None) or upload.filename)


@router.post(
    "",
    status_code=201,
    response_model=ActivationOut,
    openapi_extra=_REQUEST_BODY,
    responses=problems(400, 409, 413, 415, 422, 503),
)
async def request_signature(
    request: Request,
    token: str = Depends(session_token),
    personal: PersonalSigningService = Depends(get_personal),
) -> dict[str, Any]:
    """Ask to sign a document with your own key: the answer is an activation bound to the
    document's digest, and what you are about to sign. Nothing is signed yet."""
    person = await run_in_threadpool(personal.session_person, token)
    fields, document = await _read(request, RequestForm, RequestIn, personal.signatures.max_payload_bytes)
    fmt = parse_format(fields.format)
    activation = await run_in_threadpool(
        lambda: personal.request(person, document, fmt, key_id=fields.key_id, channel=Channel.API)
    )
    return activation.to_dict()


@router.post(
    "/{activation_id}/activate",
    response_model=PersonalSignatureOut,
    openapi_extra=_ACTIVATE_BODY,
    responses=problems(400, 404, 409, 413, 415, 422, 429, 503),
)
async def activate_signature(
    request: Request,
    activation_id: str = Path(pattern=ACTIVATION_ID),
    token: str = Depends(session_token),
    personal: PersonalSigningService = Depends(get_personal),
) -> dict[str, Any]:
    """Confirm with a fresh TOTP code and the same document: the signature, once (the
    activation is then spent). Another document, a used or expired activation, or another
    person's are refused; a wrong code counts toward the account's lockout."""
    person = await run_in_threadpool(personal.session_person, token)
    fields, document = await _read(request, ActivateForm, ActivateIn, personal.signatures.max_payload_bytes)
    state: AppState = request.app.state.bhxh
    factor = TotpCode(state.accounts, fields.code)
    address = client_address(request)
    signed = await run_in_threadpool(
        lambda: personal.activate(person, activation_id, document, factor, address=address, channel=Channel.API)
    )
    return signed.to_dict()
