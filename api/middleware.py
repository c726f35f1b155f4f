"""ASGI middleware: request id + access log + metrics, and the request-body limit.

Plain ASGI classes wrapping the next app (the starlette habit): no buffering of bodies here.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import BodyTooLarge, problem_response
from integrity.logs import get_logger
from integrity.metrics import HTTP_LATENCY, HTTP_REQUESTS

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{8,64}$")


class RequestContextMiddleware:
    """Binds a request id to every log line of the request, logs one access line, counts metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = get_logger("bhxh.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"")
        # Accept a caller's id only if it is harmless; it ends up in logs and headers.
        request_id = incoming.decode() if _SAFE_REQUEST_ID.match(incoming) else secrets.token_hex(8)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            HTTP_LATENCY.labels(route, scope["method"]).observe(elapsed)
            # The route template, never the raw path or query: those may carry codes or ids.
            self.log.info("request", method=scope["method"], route=route, status=status, ms=round(elapsed * 1000, 2))
            structlog.contextvars.clear_contextvars()


class BodyLimitMiddleware:
    """413 for bodies over the limit: at once from Content-Length, else while streaming in,
    so an oversized body is never read whole into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await self._reject(scope, send, 400, "bad-request", "Bad Request", "invalid Content-Length")
                return
            if too_big:
                await self._reject_too_large(scope, send)
                return
        seen = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(f"the body exceeds the limit of {self.max_bytes} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Whatever the app made of the interrupted body (frameworks may call it a parse
            # error), the caller is told the truth: 413.
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject_too_large(scope, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await self._reject_too_large(scope, send)

    async def _reject_too_large(self, scope: Scope, send: Send) -> None:
        await self._reject(
            scope,
            send,
            413,
            "body-too-large",
            "Request body too large",
            f"the body exceeds the limit of {self.max_bytes} bytes",
        )

    @staticmethod
    async def _reject(scope: Scope, send: Send, status: int, slug: str, title: str, detail: str) -> None:
        response = problem_response(status, slug, title, detail, instance=scope.get("path"))
        await response(scope, _no_body, send)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


# The API answers JSON and never needs to be framed or to run script; the server-rendered pages
# load only their own static files (no inline script, no external assets).
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The API documentation page (api/docs.py) is the page CSP plus fetching the description from
# this origin (and "Try it out" calls to it): still no inline script and nothing from elsewhere.
DOCS_CSP = PAGE_CSP.replace("default-src 'none';", "default-src 'none'; connect-src 'self';")


def page_csp_with_styles(sources: tuple[str, ...]) -> str:
    """The page CSP that also admits the named inline style sheets (hash sources) and no other."""
    return PAGE_CSP.replace("style-src 'self';", "style-src 'self' " + " ".join(sources) + ";")


# Caching is opt-in: nearly every answer is private (sessions, TOTP secrets, recovery codes,
# receipts with the applicant's name and ID number, audit exports), so any response that does
# not set its own Cache-Control (the stylesheet, JWKS do) is no-store.
NO_STORE = b"no-store"


class SecurityHeadersMiddleware:
    """Adds CSP, framing, sniffing and referrer headers; no-store unless the answer opts in.

    A response that sets its own Content-Security-Policy keeps it (a page may need a stricter
    or a hash-based one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                ctype = dict(headers).get(b"content-type", b"")
                if b"content-security-policy" not in names:
                    csp = PAGE_CSP if ctype.startswith(b"text/html") else API_CSP
                    headers.append((b"content-security-policy", csp.encode()))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", NO_STORE))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)
