"""Public signing keys: ``GET /.well-known/jwks.json`` (RFC 7517 key set with ``x5c``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.rate_limit import limit_public
from api.routes.signatures import get_signatures
from integrity.signatures import SignatureService

router = APIRouter(tags=["keys"], dependencies=[Depends(limit_public)])
# Verifiers may cache the key set briefly; a rotation shows within this many seconds.
JWKS_MAX_AGE_SECONDS = 300


JWK_SET_MEDIA_TYPE = "application/jwk-set+json"  # RFC 7517 §8.5.1


class JwkSetResponse(JSONResponse):
    media_type = JWK_SET_MEDIA_TYPE


@router.get("/.well-known/jwks.json", response_class=JwkSetResponse)
def jwks(service: SignatureService = Depends(get_signatures)) -> JwkSetResponse:
    body: dict[str, Any] = service.jwks()
    return JwkSetResponse(body, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"})
