"""Bench-only app for bench_signing.py: the service's own app with three probe routes that
peel ``POST /v1/signatures`` apart, so the run shows where a single signature's time goes.

Never served in production (nothing in ``api/`` imports this). The probes sit first in the
route table so that matching them costs no more than matching ``/healthz``:
  * ``/floor/parse`` — the same JSON body model and response model, no work at all;
  * ``/floor/auth``  — plus the API-key check of the real route (``require_scope("sign")``);
  * ``/floor/sign``  — plus the JWS signature with the same key, but no audit entry.
The real route adds the durable audit entry (Article 4.5: a signature is returned only
once its entry is committed).

    uvicorn --factory signing_floor:app_factory   (with bench/ on PYTHONPATH)
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from api.asgi import app_factory as service_app_factory
from api.deps import Principal, require_scope
from api.routes.signatures import SignIn, SignOut, get_signatures
from integrity.signatures import SignatureService, decode_base64
from signing import jws

PROBES = ("/floor/parse", "/floor/auth", "/floor/sign")
_CONSTANT = {"format": "jws", "signature": "-", "key_id": "-", "alg": "Ed25519", "signed_at": "-", "audit_seq": 0}


def app_factory() -> FastAPI:
    app = service_app_factory()

    @app.post("/floor/parse", response_model=SignOut)
    async def parse_only(body: SignIn) -> dict[str, Any]:
        return _CONSTANT

    @app.post("/floor/auth", response_model=SignOut)
    async def parse_and_auth(
        body: SignIn,
        service: SignatureService = Depends(get_signatures),
        caller: Principal = Depends(require_scope("sign")),
    ) -> dict[str, Any]:
        return _CONSTANT

    @app.post("/floor/sign", response_model=SignOut)
    async def sign_without_audit(
        body: SignIn,
        service: SignatureService = Depends(get_signatures),
        caller: Principal = Depends(require_scope("sign")),
    ) -> dict[str, Any]:
        key = service.keystore.signing_key(body.key_id)
        signed = jws.sign(key, decode_base64(body.payload_b64, "payload_b64"), signed_at=service.clock())
        return {**_CONSTANT, "signature": signed.token, "key_id": key.kid, "signed_at": signed.signed_at.isoformat()}

    probes = [r for r in app.router.routes if getattr(r, "path", None) in PROBES]
    app.router.routes[:] = probes + [r for r in app.router.routes if r not in probes]
    return app
