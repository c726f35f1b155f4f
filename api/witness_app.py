"""The witness's HTTP interface (C2SP tlog-witness): ``POST /add-checkpoint`` and the monitors'
``GET /<origin hash>/checkpoint``, plus ``/healthz``.

A separate, small app: the witness runs at another agency, on its own host, without the
service's database or settings. Its answers are the plain-text ones the protocol fixes (a
refusal's status code is the client's signal, a 409 carries the stored size), not the
problem+json of the service's API, so the mapping from refusal to status lives here.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from audit.checkpoint import MAX_NOTE_BYTES
from audit.errors import CheckpointRefused, WitnessRefusal
from audit.witness import MAX_PROOF_LINES
from integrity.logs import get_logger
from integrity.witness_service import WitnessService

# tlog-witness status codes, one per refusal.
REFUSAL_STATUS = {
    WitnessRefusal.MALFORMED: 400,
    WitnessRefusal.UNTRUSTED: 403,
    WitnessRefusal.UNKNOWN_LOG: 404,
    WitnessRefusal.OLD_SIZE_MISMATCH: 409,
    WitnessRefusal.INCONSISTENT: 422,
}
TLOG_SIZE_TYPE = "text/x.tlog.size"
# A checkpoint note, the old size line and 63 proof lines of 45 bytes each.
MAX_BODY_BYTES = MAX_NOTE_BYTES + 32 + MAX_PROOF_LINES * 45


async def _bounded_body(request: Request) -> bytes | None:
    """The request body, or None once it passes MAX_BODY_BYTES (read no further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_witness_app(service: WitnessService) -> FastAPI:
    app = FastAPI(title="bhxh-integrity witness", openapi_url=None, docs_url=None, redoc_url=None)
    log = get_logger()

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        body = await _bounded_body(request)
        if body is None:
            return PlainTextResponse("the request is too large\n", status_code=413)
        try:
            result = await run_in_threadpool(service.add_checkpoint, body)
        except CheckpointRefused as exc:
            # A refusal of a validly signed checkpoint may be evidence of a fork: it is logged.
            log.warning("witness_refused", reason=exc.reason.value, detail=str(exc))
            if exc.reason is WitnessRefusal.OLD_SIZE_MISMATCH:
                # Exactly this type, without the charset parameter Starlette adds to text/*.
                return Response(f"{exc.stored_size}\n", status_code=409, headers={"content-type": TLOG_SIZE_TYPE})
            return PlainTextResponse(f"{exc}\n", status_code=REFUSAL_STATUS[exc.reason])
        record = result.record
        log.info("witness_cosigned", origin=record.origin, size=record.size)
        return PlainTextResponse(result.body)

    @app.get("/{origin_hash}/checkpoint")
    def latest_checkpoint(origin_hash: str) -> Response:
        record = service.latest(origin_hash)
        if record is None:
            return PlainTextResponse("this witness has cosigned no checkpoint of that log\n", status_code=404)
        return PlainTextResponse(record.to_text())

    @app.get("/healthz")
    def healthz() -> Response:
        return PlainTextResponse("ok\n")

    return app
