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
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request, Response
from starlette.types import Scope

from api.deps import get_state
from api.errors import problem_for, render_problem
from api.gateway_path import GatewayTarget, UnsafeGatewayPath
from api.openapi import content, problems
from api.origin import external_origin
from api.rate_limit import gateway_budget_left, source_address, spend_address, spend_peer
from api.routes.exchange import exchange_service
from integrity.app_state import AppState
from integrity.errors import (
    ExchangeBadTarget,
    ExchangeRejected,
    ExchangeRouteForbidden,
    ExchangeTargetTooLong,
    GatewayNotConfigured,
    PeerNotFound,
    PeerTimeout,
    PeerUnreachable,
    RateLimited,
    RateLimiterUnavailable,
    UpstreamRejected,
)
from integrity.exchange import ExchangeService, ExchangeVerdict, ForwardFailure, Reason
from integrity.refusal_log import flushing
from signing.errors import SigningError, TokenError
from signing.httpsig import HttpRequest, HttpResponse, accept_signature, read_signature_params

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
# The gateway signs anew; the caller's credentials and framing stay on the caller's hop, and so
# do the forwarding fields of a proxy in front of the gateway (RFC 7239 and X-Forwarded-*): they
# describe that hop, and a peer that believed them would check another target URI.
_FORWARDING_FIELDS = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
    }
)
_DROP_FORWARD = (
    _HOP_BY_HOP
    | _FORWARDING_FIELDS
    | {
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
)
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
    RateLimited,
    RateLimiterUnavailable,
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

    async def relay(
        self,
        destination: str,
        incoming: HttpRequest,
        forward_target: str,
        *,
        source: str | None = None,
        admit: Callable[[str], Awaitable[None]] | None = None,
    ) -> HttpResponse:
        """The gateway-signed answer to ``incoming``; raises a domain error for every refusal.
        ``source``: the sender's address, which bounds how many of its refusals are logged
        one by one (integrity.refusal_log). ``admit``: called with the verified keyid before
        anything is forwarded; it raises to refuse the message (the peer's rate limit)."""
        verdict = await self.exchange.verify_request(incoming, via="gateway", source=source)
        if not verdict.accepted:
            refused = ExchangeRouteForbidden if verdict.reason is Reason.ROUTE_NOT_ALLOWED else ExchangeRejected
            raise refused("the message was not accepted", message_id=verdict.message_id, reason=str(verdict.reason))
        if admit is not None:
            try:
                await admit(verdict.keyid or verdict.peer or "")
            except RateLimited:
                # Only a message racing others past the budget gets here (a spent budget is
                # refused before verification): its acceptance is logged, so is this refusal.
                await self._failed(
                    verdict, destination, ForwardFailure.RATE_LIMITED, "the peer's rate limit is reached"
                )
                raise
        try:
            peer = await self.exchange.peers.destination(destination)
        except PeerNotFound:
            await self._failed(verdict, destination, ForwardFailure.UNKNOWN_DESTINATION, "no such peer")
            raise
        if peer.base_url is None:
            await self._failed(verdict, destination, ForwardFailure.NO_BASE_URL, "the peer has no base URL")
            raise GatewayNotConfigured(f"peer {destination!r} has no base URL to forward to")
        headers = [(k, v) for k, v in incoming.headers if k.lower() not in _DROP_FORWARD]
        # Identity coding, so the body the peer signs is the body we digest.
        headers.append(("Accept-Encoding", "identity"))
        try:
            outgoing = await self.exchange.gateway.sign_request(
                HttpRequest(incoming.method, peer.base_url + forward_target, tuple(headers), incoming.body)
            )
        except TokenError as exc:
            # The HSM holding the gateway key does not answer: the accepted message is not
            # forwarded, and the log says why (503 from the error table).
            await self._failed(verdict, destination, ForwardFailure.GATEWAY_KEY_UNAVAILABLE, type(exc).__name__)
            raise
        status, answer_headers, answer_body = await self._send(outgoing, destination=destination, verdict=verdict)
        answer = HttpResponse(status, tuple(answer_headers), answer_body, outgoing)
        checked = await self.exchange.verify_response(
            answer, expected_peer=destination, via="gateway", in_reply_to=verdict.message_id
        )
        if not checked.accepted:
            raise UpstreamRejected(
                "the destination's response was not accepted",
                message_id=checked.message_id,
                reason=str(checked.reason),
            )
        relayed = tuple((k, v) for k, v in answer_headers if k.lower() not in _DROP_RELAY)
        return await self.exchange.gateway.sign_response(HttpResponse(status, relayed, answer_body, incoming))

    async def target_of(self, incoming: HttpRequest, raw_path: str, query: str, *, source: str) -> GatewayTarget:
        """The destination and forwarded path of ``incoming``, read from its raw path; an
        unsafe path is refused (logged like any refusal of an unverified message) before the
        message is verified, and nothing is forwarded."""
        try:
            return GatewayTarget.parse(raw_path, query)
        except UnsafeGatewayPath as exc:
            verdict = await self.exchange.refuse_request(
                incoming, reason=exc.reason, detail=str(exc), via="gateway", source=source
            )
            refused = ExchangeTargetTooLong if exc.reason is Reason.PATH_TOO_LONG else ExchangeBadTarget
            raise refused(str(exc), message_id=verdict.message_id, reason=exc.reason.value) from exc

    async def _send(
        self, outgoing: HttpRequest, *, destination: str, verdict: ExchangeVerdict
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            return await self.forwarder.send(outgoing.method, outgoing.url, list(outgoing.headers), outgoing.body)
        except httpx.TimeoutException as exc:
            await self._failed(verdict, destination, ForwardFailure.TIMEOUT, type(exc).__name__)
            raise PeerTimeout(f"peer {destination!r} did not answer in time") from exc
        except httpx.TransportError as exc:
            await self._failed(verdict, destination, ForwardFailure.UNREACHABLE, type(exc).__name__)
            raise PeerUnreachable(f"peer {destination!r} is unreachable") from exc
        except ResponseTooLarge as exc:
            await self._failed(verdict, destination, ForwardFailure.RESPONSE_TOO_LARGE, str(exc))
            raise UpstreamRejected(
                "the destination's response is too large",
                message_id=verdict.message_id,
                reason=ForwardFailure.RESPONSE_TOO_LARGE.value,
            ) from exc

    async def _failed(self, verdict: ExchangeVerdict, destination: str, reason: ForwardFailure, detail: str) -> None:
        await self.exchange.record_forward_failure(verdict, destination=destination, reason=reason, detail=detail)

    async def signed_problem(self, incoming: HttpRequest, exc: Exception, instance: str) -> Response | None:
        """The problem+json answer to a refusal, signed by the gateway over the response
        components and bound to ``incoming`` (every response between the systems is signed,
        docs/exchange-profile.md). None when the error has no problem row or the gateway has no key: the
        ordinary error handler answers, unsigned."""
        problem = problem_for(exc)
        if problem is None or self.exchange.gateway.key is None:
            return None
        rendered = render_problem(problem, exc, instance)
        lines = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in rendered.raw_headers)
        return _as_response(
            await self.exchange.gateway.sign_response(
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


def _raw_target(scope: Scope) -> tuple[str, str]:
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    return raw_path, scope.get("query_string", b"").decode("latin-1")


async def gateway(request: Request, peer: str, path: str, gw: Gateway = Depends(get_gateway)) -> Response:
    """Any method: the signed message is passed to ``peer`` only if it verifies (see above).
    ``peer`` and ``path`` are the router's decoded view; the gateway reads its own from the raw
    path (api.gateway_path), and checks the signature against the external target URI
    (api.origin: behind a trusted TLS terminator, the URI the sender used)."""
    body = await request.body()
    incoming = HttpRequest(
        request.method,
        external_origin(request.app.state.bhxh).target_uri(request.scope),
        tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]),
        body,
    )
    try:
        # A spent budget (the sender's address, or the peer the message claims to be from) is
        # refused before anything is verified or logged (api/rate_limit.py).
        await gateway_budget_left(request, _claimed_keyid(incoming))
        source = source_address(request)
        target = await gw.target_of(incoming, *_raw_target(request.scope), source=source)
        answer = await gw.relay(
            target.peer, incoming, target.forward, source=source, admit=lambda keyid: spend_peer(request, keyid)
        )
    except _GATEWAY_ERRORS as exc:
        if isinstance(exc, ExchangeRejected) and not isinstance(exc, ExchangeRouteForbidden):
            # The 401 names the signature the gateway takes on this request (RFC 9421 §5.1).
            exc.problem_headers["Accept-Signature"] = accept_signature(incoming)
        if isinstance(exc, ExchangeRejected):
            try:
                await spend_address(request)  # an unverified message is anonymous traffic
            except (RateLimited, RateLimiterUnavailable) as spent:
                exc = spent
        signed = await gw.signed_problem(incoming, exc, request.url.path)
        if signed is None:
            raise
        return signed
    return _as_response(answer)


def _claimed_keyid(incoming: HttpRequest) -> str | None:
    """The keyid the message says it is signed with (not verified): its peer's budget is
    checked before the work of verifying it."""
    try:
        return read_signature_params(incoming).keyid
    except SigningError:
        return None


# One route per method: FastAPI names an operation after its route, and one route for every
# method would give every method the same OpenAPI operationId (an invalid document).
# The peer's answer is relayed whatever its status and media type; the refusals are the gateway's.
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **content(200, "the destination's answer, verified and signed by the gateway", **{"*/*": {}}),
    "default": {"description": "the destination's answer with another status, relayed the same way"},
    **problems(400, 401, 403, 404, 413, 414, 429, 502, 503, 504),
}
for _method in METHODS:
    router.add_api_route(
        GATEWAY_PREFIX + "/{peer}/{path:path}",
        gateway,
        methods=[_method],
        name=f"gateway_{_method.lower()}",
        response_class=Response,
        responses=_RESPONSES,
    )


def create_gateway_app(state: AppState) -> Any:
    """A gateway-only app (``bhxh-integrity exchange gateway``): the gateway route, liveness
    and readiness, the same error table and middleware as the full service. For a gateway
    deployed on its own (e.g. in the zone between the portal and the one-stop network)."""
    from fastapi import FastAPI

    from api.errors import install_error_handlers
    from api.middleware import BodyLimitMiddleware, RequestContextMiddleware
    from api.routes import health

    def lifespan(_app: FastAPI) -> Any:
        return flushing(state.refusals)

    app = FastAPI(title="bhxh-integrity gateway", version="1.0", openapi_url=None, lifespan=lifespan)
    app.state.bhxh = state
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=state.settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
