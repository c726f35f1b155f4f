"""Liveness, readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import get_state
from api.errors import problem_response
from api.openapi import content, problems
from integrity.app_state import AppState

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=problems(503))
def readyz(state: AppState = Depends(get_state)) -> JSONResponse:
    readiness = state.readiness()
    if readiness.ready:
        return JSONResponse({"status": "ready", "checks": readiness.checks})
    reasons = "; ".join(f"{k}: {v}" for k, v in readiness.checks.items() if v != "ok")
    return problem_response(503, "not-ready", "Service not ready", reasons, extra={"checks": readiness.checks})


@router.get(
    "/metrics",
    response_class=Response,
    responses=content(200, "Prometheus text format", **{"text/plain": {"type": "string"}}),
)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
