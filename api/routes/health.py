"""Liveness, readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import get_state
from api.errors import problem_response
from api.openapi import content, problems
from integrity.app_state import AppState
from integrity.readiness import publish_certificate_days

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=problems(503))
def readyz(state: AppState = Depends(get_state)) -> JSONResponse:
    """Each check with ``ok``, ``warn`` or ``fail`` and its reason; 503 when one fails
    (integrity.readiness). Sync: the checks ask the database and the token."""
    readiness = state.readiness()
    checks = readiness.as_dict()
    if readiness.ready:
        return JSONResponse({"status": "ready", "checks": checks})
    return problem_response(503, "not-ready", "Service not ready", readiness.failures(), extra={"checks": checks})


@router.get(
    "/metrics",
    response_class=Response,
    responses=content(200, "Prometheus text format", **{"text/plain": {"type": "string"}}),
)
def metrics(state: AppState = Depends(get_state)) -> Response:
    # The days left of each signing certificate as of this scrape, not of the last /readyz.
    publish_certificate_days(state.signing_certificates(), state.clock())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
