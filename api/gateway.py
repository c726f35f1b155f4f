"""The verifying gateway between the portal and the one-stop system: ``/gateway/{peer}/{path}``.

For each request: verify it (``integrity.exchange``: peer, route, signature, digest, time,
replay, all logged); only then forward it to ``{peer}``'s registered base URL, re-signed with
the gateway's own key (keyid ``gateway``); read the whole answer, verify that ``{peer}`` signed
it and that it answers the forwarded request; only then pass it back, signed by the gateway and
bound to the caller's original request. Nothing is half-forwarded: an unsigned or refused
request never leaves, and a response that fails its check never reaches the caller (502).
Refusals are 401 (403 for a route the peer may not use); an unreachable peer is 502, a peer
that does not answer in time 504; each is logged with its reason.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.types import Scope

from api.deps import get_state
from api.routes.exchange import get_exchange
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
from signing.httpsig import HttpRequest, HttpResponse

router = APIRouter(tags=["gateway"])

GATEWAY_PREFIX = "/gateway"
DEFAULT_TIMEOUT_SECONDS = 10.0
SERVICE_KEY = "gateway"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# RFC 9110 §7.6.1 hop-by-hop fields never cross the gateway.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
     "proxy-authenticate", "proxy-authorization"}
)
# The gateway signs anew; the caller's credentials and framing stay on the caller's hop.
_DROP_FORWARD = _HOP_BY_HOP | {
    "host", "content-length", "authorization", "cookie", "signature", "signature-input", "content-digest",
    "accept-encoding", "expect",
}
_DROP_RELAY = _HOP_BY_HOP | {
    "content-length", "signature", "signature-input", "content-digest", "set-cookie", "server", "date",
}


class Gateway:
    """Verify, forward, verify, sign: see the module docstring. Thread-safe (one pooled client)."""

    def __init__(
        self,
        exchange: ExchangeService,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_response_bytes: int = 10 * 1024 * 1024,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if timeout_seconds <= 0 or max_response_bytes < 1:
            raise ValueError("timeout_seconds and max_response_bytes must be positive")
        self.exchange = exchange
        self.max_response_bytes = max_response_bytes
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            transport=transport,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
        )

    def close(self) -> None:
        self._client.close()

    def relay(self, destination: str, incoming: HttpRequest, forward_target: str) -> HttpResponse:
        """The gateway-signed answer to ``incoming``; raises a domain error for every refusal."""
        verdict = self.exchange.verify_request(incoming, via="gateway")
        if not verdict.accepted:
            refused = ExchangeRouteForbidden if verdict.reason == ROUTE_NOT_ALLOWED else ExchangeRejected
            raise refused(
                "the message was not accepted", message_id=verdict.message_id, reason=str(verdict.reason)
            )
        try:
            peer = self.exchange.destination(destination)
        except PeerNotFound:
            self._failed(verdict, destination, "unknown-destination", "no such peer")
            raise
        if peer.base_url is None:
            self._failed(verdict, destination, "no-base-url", "the peer has no base URL")
            raise GatewayNotConfigured(f"peer {destination!r} has no base URL to forward to")
        headers = [(k, v) for k, v in incoming.headers if k.lower() not in _DROP_FORWARD]
        # Identity coding, so the body the peer signs is the body we digest.
        headers.append(("Accept-Encoding", "identity"))
        outgoing = self.exchange.gateway_sign_request(
            HttpRequest(incoming.method, peer.base_url + forward_target, headers, incoming.body)
        )
        status, answer_headers, answer_body = self._send(outgoing, destination=destination, verdict=verdict)
        answer = HttpResponse(status, answer_headers, answer_body, outgoing)
        checked = self.exchange.verify_response(
            answer, expected_peer=destination, via="gateway", in_reply_to=verdict.message_id
        )
        if not checked.accepted:
            raise UpstreamRejected(
                "the destination's response was not accepted", message_id=checked.message_id,
                reason=str(checked.reason),
            )
        relayed = [(k, v) for k, v in answer_headers if k.lower() not in _DROP_RELAY]
        return self.exchange.gateway_sign_response(HttpResponse(status, relayed, answer_body, incoming))

    def _send(
        self, outgoing: HttpRequest, *, destination: str, verdict: ExchangeVerdict
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        request = self._client.build_request(
            outgoing.method, outgoing.url, headers=list(outgoing.headers), content=outgoing.body
        )
        try:
            response = self._client.send(request, stream=True)
            try:
                body = self._read_raw(response)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            self._failed(verdict, destination, "timeout", type(exc).__name__)
            raise PeerTimeout(f"peer {destination!r} did not answer in time") from exc
        except httpx.TransportError as exc:
            self._failed(verdict, destination, "unreachable", type(exc).__name__)
            raise PeerUnreachable(f"peer {destination!r} is unreachable") from exc
        if body is None:
            self._failed(verdict, destination, "response-too-large", f"over {self.max_response_bytes} bytes")
            raise UpstreamRejected(
                "the destination's response is too large", message_id=verdict.message_id, reason="response-too-large"
            )
        return response.status_code, list(response.headers.multi_items()), body

    def _failed(self, verdict: ExchangeVerdict, destination: str, reason: str, detail: str) -> None:
        self.exchange.record_forward_failure(verdict, destination=destination, reason=reason, detail=detail)

    def _read_raw(self, response: httpx.Response) -> bytes | None:
        """The body as sent (not decoded: Content-Digest covers the content as transferred,
        RFC 9530 §2), or None past the size limit."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > self.max_response_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)


def get_gateway(state: AppState = Depends(get_state), exchange: ExchangeService = Depends(get_exchange)) -> Gateway:
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
    rest = raw_path[len(f"{GATEWAY_PREFIX}/{peer}"):] or "/"
    query = scope.get("query_string", b"")
    return rest + (f"?{query.decode('latin-1')}" if query else "")


@router.api_route(GATEWAY_PREFIX + "/{peer}/{path:path}", methods=METHODS, include_in_schema=True)
async def gateway(request: Request, peer: str, path: str, gw: Gateway = Depends(get_gateway)) -> Response:
    """Any method: the signed message is passed to ``peer`` only if it verifies (see above)."""
    body = await request.body()
    incoming = HttpRequest(
        request.method,
        target_uri(request.scope),
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
        body,
    )
    answer = await run_in_threadpool(gw.relay, peer, incoming, _forward_target(request.scope, peer))
    response = Response(content=answer.body, status_code=answer.status)
    for name, value in answer.headers:
        response.headers.append(name, value)
    return response


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
