"""Test support for the exchange: two stand-in services (a tiny portal and a tiny one-stop
system) served by uvicorn on free loopback ports, the demo exchange keys, and the exchange
rows of the problem table (until the lead adds them to api/errors.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.origin import connection_target_uri
from signing.errors import MessageSignatureError
from signing.httpsig import ExchangeSigningKey, HttpRequest, HttpResponse, PeerKey, sign_response, verify_request

DEMO = Path(__file__).resolve().parents[2] / "keys.example"
PASSPHRASE = (DEMO / "passphrase.txt").read_bytes().strip()


def demo_signing_key(stem: str, keyid: str) -> ExchangeSigningKey:
    private = serialization.load_pem_private_key((DEMO / f"{stem}.key.pem").read_bytes(), PASSPHRASE)
    return ExchangeSigningKey.from_private_key(keyid, private)


def demo_peer_key(stem: str, keyid: str) -> PeerKey:
    return PeerKey.from_pem(keyid, (DEMO / f"{stem}.crt.pem").read_bytes())


def demo_cert_pem(stem: str) -> str:
    return (DEMO / f"{stem}.crt.pem").read_text()


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class StandIn:
    """A peer system: verifies what the gateway forwards, answers signed with its own key.

    Paths: ``/slow`` sleeps before answering; ``/tamper`` changes its body after signing;
    ``/unsigned`` answers without a signature; anything else echoes a small JSON answer."""

    name: str
    key: ExchangeSigningKey
    gateway_key: PeerKey
    received: list[dict[str, Any]] = field(default_factory=list)
    slow_seconds: float = 2.0
    # The raw path of every request that reached it, verified or not.
    arrived: list[str] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.arrived.append((request.scope.get("raw_path") or b"").decode("latin-1"))
        body = await request.body()
        incoming = HttpRequest(
            request.method,
            connection_target_uri(request.scope),
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
            body,
        )
        try:
            verified = verify_request(incoming, self.gateway_key, clock=utc_now, skew_seconds=300)
        except MessageSignatureError as exc:
            return Response(json.dumps({"refused": exc.reason}), status_code=401, media_type="application/json")
        self.received.append(
            {"path": request.url.path, "body": body, "keyid": verified.keyid, "headers": dict(incoming.headers)}
        )
        if request.url.path.endswith("/slow"):
            await asyncio.sleep(self.slow_seconds)
        answer_body = json.dumps(
            {"by": self.name, "ma_ho_so": "000.00.31.H29-251123-0001", "echo": body.decode("utf-8", "replace")},
            ensure_ascii=False,
        ).encode()
        answer = HttpResponse(201, {"Content-Type": "application/json; charset=utf-8"}, answer_body, incoming)
        if not request.url.path.endswith("/unsigned"):
            answer = answer.with_headers(sign_response(answer, self.key, clock=utc_now).as_dict())
        if request.url.path.endswith("/tamper"):
            answer_body = answer_body.replace(b"H29", b"H30")
        response = Response(answer_body, status_code=answer.status)
        for name, value in answer.headers:
            response.headers.append(name, value)
        return response

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])


class LoopbackServer:
    """An ASGI app served by uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # As ``bhxh-integrity serve`` runs it: uvicorn's own proxy-header handling off, so the
        # scheme and client address are the connection's.
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
