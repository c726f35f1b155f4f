"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import audit_report_page, gateway, personal_signing_page, receipt_check, web, web_passkeys
from api.docs import install_docs
from api.errors import install_error_handlers
from api.middleware import BodyLimitMiddleware, RequestContextMiddleware, SecurityHeadersMiddleware
from api.openapi import install_openapi
from api.routes import (
    admin_clients,
    admin_users,
    audit,
    auth,
    exchange,
    health,
    keys,
    passkeys,
    personal_signatures,
    receipts,
    signatures,
    tlog,
)
from integrity.app_state import AppState, build_state
from integrity.clock import Clock, system_clock
from integrity.refusal_log import flushing
from integrity.settings import Settings

ROUTERS = (
    health.router,
    keys.router,
    signatures.router,
    receipts.router,
    audit.router,
    tlog.router,
    exchange.router,
    gateway.router,
    auth.router,
    passkeys.auth_router,
    passkeys.me_router,
    personal_signatures.router,
    admin_users.router,
    admin_clients.router,
    web.router,
    web_passkeys.router,
    receipt_check.router,
    personal_signing_page.router,
    audit_report_page.router,
)


def create_app(
    settings: Settings | None = None, *, clock: Clock | None = None, state: AppState | None = None
) -> FastAPI:
    """Build the app. Settings and keys are checked here, so a bad key stops start-up at once."""
    owned = state is None
    app_state = state or build_state(settings or Settings(), clock=clock or system_clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Anonymous refusals' summaries are written once their minute closes, even when no
        # further refusal comes (integrity.refusal_log).
        async with flushing(app_state.refusals):
            yield
        if owned:
            app_state.close()

    app = FastAPI(
        title="bhxh-integrity",
        version="1.0",
        summary="Security and integrity layer between the BHXH portal and the one-stop system",
        lifespan=lifespan,
        # Observability is the service's own (structlog lines, Prometheus /metrics); FastAPI's
        # built-in OpenTelemetry hooks would only cost a provider lookup on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # /docs is served from this service's own files (api/docs.py), never from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.bhxh = app_state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_docs(app)
    install_openapi(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=app_state.settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app
