"""``api.client.ExchangeAuth`` against an in-memory peer (httpx.MockTransport): requests go
out signed, responses come back verified, and every kind of bad response raises."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from api.client import ExchangeAuth, ResponseNotVerified
from signing.errors import (
    ContentDigestMismatch,
    MessageKeyMismatch,
    MessageSignatureInvalid,
    MessageUnsigned,
    ReplayedMessage,
)
from signing.httpsig import ExchangeSigningKey, HttpRequest, HttpResponse, sign_response, verify_request
from tests.api.exchange_support import DEMO, PASSPHRASE, utc_now

CLIENT_KEY = ExchangeSigningKey.from_private_key("portal", ed25519.Ed25519PrivateKey.generate())
SERVER_KEY = ExchangeSigningKey.from_private_key("gateway", ed25519.Ed25519PrivateKey.generate())
URL = "https://gateway.bhxh.test/gateway/one-stop/v1/dossiers"


class Peer:
    """Verifies each request with the client's key, answers signed with ``signer``."""

    def __init__(self, signer: ExchangeSigningKey = SERVER_KEY, *, mangle: Any = None) -> None:
        self.signer = signer
        self.mangle = mangle
        self.seen: list[HttpRequest] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        incoming = HttpRequest(request.method, str(request.url), list(request.headers.multi_items()), request.read())
        verify_request(incoming, CLIENT_KEY.peer_key(), clock=utc_now, skew_seconds=300)
        self.seen.append(incoming)
        answer = HttpResponse(200, {"Content-Type": "application/json"}, b'{"ok": true}', incoming)
        answer = answer.with_headers(sign_response(answer, self.signer, clock=utc_now).as_dict())
        headers, body = list(answer.headers), answer.body
        if self.mangle:
            headers, body = self.mangle(headers, body)
        return httpx.Response(200, headers=headers, content=body)


def _client(peer: Peer, **options: Any) -> httpx.Client:
    options.setdefault("server_key", SERVER_KEY.peer_key())
    return httpx.Client(transport=httpx.MockTransport(peer), auth=ExchangeAuth(CLIENT_KEY, **options))


def test_request_is_signed_and_the_response_verified() -> None:
    peer = Peer()
    response = _client(peer).post(URL, json={"a": 1})
    assert response.json() == {"ok": True}
    assert response.extensions["bhxh_exchange"].keyid == "gateway"
    (seen,) = peer.seen
    assert seen.header("Accept-Encoding") == "identity"


def test_async_client_works_the_same() -> None:
    async def go() -> httpx.Response:
        auth = ExchangeAuth(CLIENT_KEY, server_key=SERVER_KEY.peer_key())
        async with httpx.AsyncClient(transport=httpx.MockTransport(Peer()), auth=auth) as client:
            return await client.post(URL, content=b"x", headers={"Content-Type": "text/plain"})

    assert asyncio.run(go()).status_code == 200


def test_without_a_server_key_responses_are_not_checked() -> None:
    unsigned = Peer(mangle=lambda h, b: ([(k, v) for k, v in h if not k.lower().startswith("signature")], b))
    assert _client(unsigned, server_key=None).get(URL).status_code == 200


def test_unsigned_response_raises() -> None:
    unsigned = Peer(mangle=lambda h, b: ([(k, v) for k, v in h if not k.lower().startswith("signature")], b))
    with pytest.raises(MessageUnsigned):
        _client(unsigned).get(URL)


def test_response_with_a_changed_body_raises() -> None:
    with pytest.raises(ContentDigestMismatch):
        _client(Peer(mangle=lambda h, b: (h, b'{"ok": false}'))).get(URL)


def test_response_signed_by_another_key_raises() -> None:
    with pytest.raises(MessageKeyMismatch):
        _client(Peer(signer=CLIENT_KEY)).get(URL)
    impostor = ExchangeSigningKey.from_private_key("gateway", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(MessageSignatureInvalid):
        _client(Peer(signer=impostor)).get(URL)


def test_replayed_response_raises() -> None:
    canned: list[httpx.Response] = []

    def replaying(request: httpx.Request) -> httpx.Response:
        if not canned:
            canned.append(Peer()(request))
        first = canned[0]
        return httpx.Response(first.status_code, headers=first.headers, content=first.content)

    client = httpx.Client(
        transport=httpx.MockTransport(replaying), auth=ExchangeAuth(CLIENT_KEY, server_key=SERVER_KEY.peer_key())
    )
    assert client.get(URL).status_code == 200
    with pytest.raises(ReplayedMessage):
        client.get(URL)


def test_content_coded_response_is_unverifiable() -> None:
    with pytest.raises(ResponseNotVerified):
        _client(Peer(mangle=lambda h, b: ([*h, ("Content-Encoding", "br")], b))).get(URL)


def test_from_files_loads_the_demo_keys() -> None:
    auth = ExchangeAuth.from_files(
        keyid="portal",
        key_file=DEMO / "portal-exchange.key.pem",
        passphrase=PASSPHRASE,
        server_keyid="gateway",
        server_key_file=DEMO / "gateway-exchange.crt.pem",
    )
    assert auth.key.keyid == "portal" and auth.server_key is not None and auth.server_key.keyid == "gateway"
