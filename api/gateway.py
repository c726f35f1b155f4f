"""The verifying gateway between the portal and the one-stop system: ``/gateway/{peer}/{path}``.

For each request: verify it (``integrity.exchange``: peer, route, signature, digest, time,
replay, all logged); only then forward it to ``{peer}``'s registered base URL, re-signed with
the gateway's own key (keyid ``gateway``); read the whole answer, verify that ``{peer}`` signed
it and that it answers the forwarded request; only then pass it back, signed by the gateway and
bound to the caller's original request. Nothing is half-forwarded: an unsigned or refused
request never leaves, and a response that fails its check never reaches the caller (502).
Refusals are 401 (403 for a route the peer may not use); an unreachable peer is 502, a peer
that does not answer in time 504; each is logged with its reason. The gateway signs its own
problem+json answers too, so a caller can tell them from a forgery on the way back.

Async end to end: the checks run on the event loop (CPU only once a peer is cached), the
evidence goes through the audit log's group commit (awaited, no worker-thread hop), and the
forwarding uses one pooled ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request, Response
from starlette.types import Scope

from api.deps import get_state
from api.errors import problem_for, problem_response
from api.routes.exchange import exchange_service
from integrity.app_state import AppState
from integrity.errors import (
    ExchangeRejected,
    ExchangeRouteForbidden,
    GatewayNotConfigured,
    PeerNotFound,
    PeerTimeout,
    PeerUnreachable,
    UpstreamRejected,
)
from integrity.exchange import ROUTE_NOT_ALLOWED, ExchangeService, ExchangeVerdict
from signing.errors import TokenError
from signing.httpsig import HttpRequest, HttpResponse

router = APIRouter(tags=["gateway"])

GATEWAY_PREFIX = "/gateway"
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 200
MAX_KEEPALIVE_CONNECTIONS = 100
SERVICE_KEY = "gateway"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# RFC 9110 §7.6.1 hop-by-hop fields never cross the gateway.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# The gateway signs anew; the caller's credentials and framing stay on the caller's hop.
_DROP_FORWARD = _HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "cookie",
    "signature",
    "signature-input",
    "content-digest",
    "accept-encoding",
    "expect",
}
_DROP_RELAY = _HOP_BY_HOP | {
    "content-length",
    "signature",
    "signature-input",
    "content-digest",
    "set-cookie",
    "server",
    "date",
}
# The refusals the gateway answers itself, as problem+json signed with its key.
_GATEWAY_ERRORS = (
    ExchangeRejected,
    ExchangeRouteForbidden,
    UpstreamRejected,
    PeerUnreachable,
    PeerTimeout,
    GatewayNotConfigured,
    PeerNotFound,
)


class ResponseTooLarge(Exception):
    """The answer grew past the forwarder's limit while it was being read."""


class Forwarder:
    """Send a request and read the whole answer as transferred (not decoded: Content-Digest
    covers the content as sent, RFC 9530 §2), through a pooled ``httpx.AsyncClient``.

    One client per event loop, made on first use: a pool's connections belong to the loop
    that opened them (a server has one loop per process; a test client may start several)."""

    def __init__(
        self,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_response_bytes: int = 10 * 1024 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if timeout_seconds <= 0 or max_response_bytes < 1:
            raise ValueError("timeout_seconds and max_response_bytes must be positive")
        self.timeout_seconds = timeout_seconds
        self.max_response_bytes = max_response_bytes
        self._transport = transport
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            with self._lock:
                client = self._clients.get(loop)
                if client is None:
                    client = httpx.AsyncClient(
                        timeout=httpx.Timeout(self.timeout_seconds),
                        follow_redirects=False,
                        transport=self._transport,
                        limits=httpx.Limits(
                            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS
                        ),
                    )
                    self._clients[loop] = client
        return client

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, header lines and raw body; raises ``httpx.TransportError`` (incl. timeouts)
        or ``ResponseTooLarge``."""
        client = self._client()
        response = await client.send(client.build_request(method, url, headers=headers, content=body), stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise ResponseTooLarge(f"over {self.max_response_bytes} bytes")
                chunks.append(chunk)
        finally:
            await response.aclose()
        return response.status_code, response.headers.multi_items(), b"".join(chunks)

    def close(self) -> None:
        """Close every pooled client whose loop still exists (idempotent, from any thread)."""
        with self._lock:
            clients = list(self._clients.items())
            self._clients.clear()
        for loop, client in clients:
            if loop.is_closed():
                continue  # its connections went with it
            try:
                current = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            if current is loop:
                # Shutting down on that very loop (a lifespan hook): it cannot be waited for here.
                _closing.add(task := loop.create_task(client.aclose()))
                task.add_done_callback(_closing.discard)
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
                try:
                    future.result(timeout=self.timeout_seconds)
                except (TimeoutError, RuntimeError, httpx.HTTPError):
                    future.cancel()  # best effort: the process is going away anyway
            # A loop that is stopped but not closed cannot be driven from here: its sockets
            # close with it.


_closing: set[asyncio.Task[None]] = set()  # keeps close tasks alive until they finish


class Gateway:
    """Verify, forward, verify, sign: see the module docstring. Safe to share between
    requests and event loops."""

    def __init__(
        self,
        exchange: ExchangeService,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_response_bytes: int = 10 * 1024 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.exchange = exchange
        self.forwarder = Forwarder(
            timeout_seconds=timeout_seconds, max_response_bytes=max_response_bytes, transport=transport
        )

    @property
    def max_response_bytes(self) -> int:
        return self.forwarder.max_response_bytes

    def close(self) -> None:
        self.forwarder.close()

    async def relay(self, destination: str, incoming: HttpRequest, forward_target: str) -> HttpResponse:
        """The gateway-signed answer to ``incoming``; raises a domain error for every refusal."""
        verdict = await self.exchange.verify_request_async(incoming, via="gateway")
        if not verdict.accepted:
            refused = ExchangeRouteForbidden if verdict.reason == ROUTE_NOT_ALLOWED else ExchangeRejected
            raise refused("the message was not accepted", message_id=verdict.message_id, reason=str(verdict.reason))
        try:
            peer = await self.exchange.destination_async(destination)
        except PeerNotFound:
            await self._failed(verdict, destination, "unknown-destination", "no such peer")
            raise
        if peer.base_url is None:
            await self._failed(verdict, destination, "no-base-url", "the peer has no base URL")
            raise GatewayNotConfigured(f"peer {destination!r} has no base URL to forward to")
        headers = [(k, v) for k, v in incoming.headers if k.lower() not in _DROP_FORWARD]
        # Identity coding, so the body the peer signs is the body we digest.
        headers.append(("Accept-Encoding", "identity"))
        try:
            outgoing = await self.exchange.gateway_sign_request_async(
                HttpRequest(incoming.method, peer.base_url + forward_target, headers, incoming.body)
            )
        except TokenError as exc:
            # The HSM holding the gateway key does not answer: the accepted message is not
            # forwarded, and the log says why (503 from the error table).
            await self._failed(verdict, destination, "gateway-key-unavailable", type(exc).__name__)
            raise
        status, answer_headers, answer_body = await self._send(outgoing, destination=destination, verdict=verdict)
        answer = HttpResponse(status, answer_headers, answer_body, outgoing)
        checked = await self.exchange.verify_response_async(
            answer, expected_peer=destination, via="gateway", in_reply_to=verdict.message_id
        )
        if not checked.accepted:
            raise UpstreamRejected(
                "the destination's response was not accepted",
                message_id=checked.message_id,
                reason=str(checked.reason),
            )
        relayed = [(k, v) for k, v in answer_headers if k.lower() not in _DROP_RELAY]
        return await self.exchange.gateway_sign_response_async(HttpResponse(status, relayed, answer_body, incoming))

    async def _send(
        self, outgoing: HttpRequest, *, destination: str, verdict: ExchangeVerdict
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            return await self.forwarder.send(outgoing.method, outgoing.url, list(outgoing.headers), outgoing.body)
        except httpx.TimeoutException as exc:
            await self._failed(verdict, destination, "timeout", type(exc).__name__)
            raise PeerTimeout(f"peer {destination!r} did not answer in time") from exc
        except httpx.TransportError as exc:
            await self._failed(verdict, destination, "unreachable", type(exc).__name__)
            raise PeerUnreachable(f"peer {destination!r} is unreachable") from exc
        except ResponseTooLarge as exc:
            await self._failed(verdict, destination, "response-too-large", str(exc))
            raise UpstreamRejected(
                "the destination's response is too large", message_id=verdict.message_id, reason="response-too-large"
            ) from exc

    async def _failed(self, verdict: ExchangeVerdict, destination: str, reason: str, detail: str) -> None:
        await self.exchange.record_forward_failure_async(verdict, destination=destination, reason=reason, detail=detail)

    async def signed_problem(self, incoming: HttpRequest, exc: Exception, instance: str) -> Response | None:
        """The problem+json answer to a refusal, signed by the gateway over the response
        components and bound to ``incoming`` (DESIGN.md: every response between the systems is
        signed). None when the error has no problem row or the gateway has no key: the
        ordinary error handler answers, unsigned."""
        problem = problem_for(exc)
        if problem is None or self.exchange.gateway_key is None:
            return None
        rendered = problem_response(
            problem.status,
            problem.slug,
            problem.title,
            str(exc) if problem.expose_detail else None,
            instance=instance,
            headers={**dict(problem.headers), **getattr(exc, "problem_headers", {})} or None,
            extra=getattr(exc, "problem_extra", None),
        )
        lines = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in rendered.raw_headers]
        return _as_response(
            await self.exchange.gateway_sign_response_async(
                HttpResponse(rendered.status_code, lines, bytes(rendered.body), incoming)
            )
        )


def _as_response(message: HttpResponse) -> Response:
    response = Response(content=message.body, status_code=message.status)  # sets Content-Length
    for name, value in message.headers:
        if name.lower() != "content-length":
            response.headers.append(name, value)
    return response


async def get_gateway(
    state: AppState = Depends(get_state), exchange: ExchangeService = Depends(exchange_service)
) -> Gateway:
    # ``async``: building the gateway does no I/O, and a sync dependency costs a thread hop.
    gateway = state.services.get(SERVICE_KEY)
    if gateway is None:
        timeout = state.settings.exchange_timeout_seconds
        built = Gateway(exchange, timeout_seconds=timeout, max_response_bytes=state.settings.max_body_bytes)
        gateway = state.services.setdefault(SERVICE_KEY, built)
        if gateway is not built:
            built.close()
    return gateway  # type: ignore[no-any-return]


def target_uri(scope: Scope) -> str:
    """The absolute target URI as this server received it (RFC 9110 §7.1), byte for byte:
    the raw path, never the decoded one, so that it matches what the sender signed."""
    headers = dict(scope["headers"])
    host = headers.get(b"host", b"").decode("latin-1")
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return f"{scope['scheme']}://{host}{raw_path.decode('latin-1')}" + (f"?{query.decode('latin-1')}" if query else "")


def _forward_target(scope: Scope, peer: str) -> str:
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    rest = raw_path[len(f"{GATEWAY_PREFIX}/{peer}") :] or "/"
    query = scope.get("query_string", b"")
    return rest + (f"?{query.decode('latin-1')}" if query else "")


async def gateway(request: Request, peer: str, path: str, gw: Gateway = Depends(get_gateway)) -> Response:
    """Any method: the signed message is passed to ``peer`` only if it verifies (see above)."""
    body = await request.body()
    incoming = HttpRequest(
        request.method,
        target_uri(request.scope),
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
        body,
    )
    try:
        answer = await gw.relay(peer, incoming, _forward_target(request.scope, peer))
    except _GATEWAY_ERRORS as exc:
        signed = await gw.signed_problem(incoming, exc, request.url.path)
        if signed is None:
            raise
        return signed
    return _as_response(answer)


# One route per method: FastAPI names an operation after its route, and one route for every
# method would give every method the same OpenAPI operationId (an invalid document).
for _method in METHODS:
    router.add_api_route(
        GATEWAY_PREFIX + "/{peer}/{path:path}", gateway, methods=[_method], name=f"gateway_{_method.lower()}"
    )


def create_gateway_app(state: AppState) -> Any:
    """A gateway-only app (``bhxh-integrity exchange gateway``): the gateway route, liveness
    and readiness, the same error table and middleware as the full service. For a gateway
    deployed on its own (e.g. in the zone between the portal and the one-stop network)."""
    from fastapi import FastAPI

    from api.errors import install_error_handlers
    from api.middleware import BodyLimitMiddleware, RequestContextMiddleware
    from api.routes import health

    app = FastAPI(title="bhxh-integrity gateway", version="1.0", openapi_url=None)
    app.state.bhxh = state
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=state.settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
