"""Signatures for data messages: sign (one or a batch) and verify (docs/api.md).

Thin: parse the body, call ``integrity.signatures``, render. Signing is ``async``: the service
makes cheap signatures on the event loop, sends heavy ones to a worker thread and awaits its
audit entry, so a busy signer pays no thread hop per request. Verification stays a plain
``def`` (the CMS/trust code drives its own event loop, so it must run in the worker pool).
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Principal, require_scope
from api.openapi import problems
from integrity.app_state import AppState
from integrity.signatures import (
    MAX_BATCH_ITEMS,
    SignatureService,
    SignRequest,
    decode_base64,
)
from signing.algorithms import SignatureAlgorithm
from signing.errors import MalformedSignature
from signing.results import SubIndication

router = APIRouter(tags=["signatures"])


async def get_signatures(request: Request) -> SignatureService:
    # ``async`` and without sub-dependencies on purpose: a sync dependency would cost a
    # worker-thread hop, and each dependency node FastAPI's bookkeeping, on every request.
    state: AppState = request.app.state.bhxh
    return state.signatures


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignIn(_Strict):
    format: str = Field(max_length=16, examples=["jws"], description="jws, cms or xml")
    payload_b64: str = Field(description="the data to sign, standard base64")
    detached: bool = Field(False, description="JWS only: RFC 7797 detached, unencoded payload")
    key_id: str | None = Field(
        None,
        max_length=64,
        description="an active data-message key; default: the institution's PS256 data-message key "
        "(the receipt key never signs here: 409 key-purpose-mismatch)",
    )


class SignOut(BaseModel):
    format: str
    signature: str = Field(description="JWS compact; base64 DER for cms; base64 signed document for xml")
    key_id: str
    alg: SignatureAlgorithm = Field(description="named as verification results name it")
    signed_at: str
    audit_seq: int


class BatchIn(_Strict):
    items: list[SignIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class BatchOut(BaseModel):
    items: list[SignOut]


class VerifyIn(_Strict):
    format: str = Field(max_length=16, examples=["cms"])
    signature: str = Field(description="JWS compact; base64 DER for cms; base64 signed document for xml")
    payload_b64: str | None = Field(None, description="the signed data (detached JWS, CMS)")


class SignerOut(BaseModel):
    subject: str | None
    issuer: str | None
    serial: str | None
    kid: str | None
    purpose: str | None = Field(
        None, description="receipt, data-message, personal…: the keystore's purpose or the certificate's marking"
    )


class MessageOut(BaseModel):
    vi: str
    en: str


class VerifyOut(BaseModel):
    valid: bool = Field(
        description="true only when the signed data is intact, the signer is trusted and nothing was expired "
        "or revoked (indication TOTAL_PASSED)"
    )
    indication: str
    sub_indication: str | None
    key_id: str | None
    signer: SignerOut | None
    signed_at: str | None
    algorithm: SignatureAlgorithm | None = Field(
        description="the algorithm's one name in every format (its JWS name; ECDSA named by its hash)"
    )
    algorithm_identifier: str | None = Field(
        None, description="the format's own identifier: the JWS alg, the CMS object identifier, the XMLDSig URI"
    )
    reasons: list[str]
    message: MessageOut
    audit_seq: int
    signed_xml_b64: str | None = Field(
        None, description="xml: the element the signature covers; read the data from here"
    )


def _request(body: SignIn, field: str) -> SignRequest:
    return SignRequest(body.format, decode_base64(body.payload_b64, field), body.detached, body.key_id)


@router.post("/v1/signatures", response_model=SignOut, responses=problems(400, 404, 409, 422, 503))
async def sign(
    body: SignIn,
    service: SignatureService = Depends(get_signatures),
    caller: Principal = Depends(require_scope("sign")),
) -> dict[str, Any]:
    return (await service.sign_async(_request(body, "payload_b64"), actor=caller.actor)).to_dict()


@router.post("/v1/signatures/batch", response_model=BatchOut, responses=problems(400, 404, 409, 422, 503))
async def sign_batch(
    body: BatchIn,
    service: SignatureService = Depends(get_signatures),
    caller: Principal = Depends(require_scope("sign")),
) -> dict[str, Any]:
    requests = [_request(item, f"items.{i}.payload_b64") for i, item in enumerate(body.items)]
    return {"items": [s.to_dict() for s in await service.sign_batch_async(requests, actor=caller.actor)]}


@router.post("/v1/signatures/verify", response_model=VerifyOut, responses=problems(400, 422, 503))
def verify(
    body: VerifyIn,
    service: SignatureService = Depends(get_signatures),
    caller: Principal = Depends(require_scope("verify")),
) -> dict[str, Any]:
    payload = None if body.payload_b64 is None else decode_base64(body.payload_b64, "payload_b64")
    outcome = service.verify(body.format, body.signature, payload, actor=caller.actor)
    rendered = {**outcome.result.to_dict(), "audit_seq": outcome.audit_seq}
    if outcome.result.sub_indication is SubIndication.FORMAT_FAILURE:
        # Not a signature at all: a client error, answered as such, with the logged verdict.
        raise MalformedSignature("the signature is malformed", rendered)
    if outcome.signed_xml is not None:
        rendered["signed_xml_b64"] = base64.b64encode(outcome.signed_xml).decode("ascii")
    return rendered
