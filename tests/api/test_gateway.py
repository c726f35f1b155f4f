"""The gateway end to end, on loopback: a portal client (``ExchangeAuth``) → the service's
``/gateway/{peer}/…`` → a stand-in one-stop system served by uvicorn, and back. Every refusal
is a problem+json answer and an audit entry carrying its reason; nothing half-forwarded."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from api.client import ExchangeAuth
from api.gateway import Gateway
from integrity.exchange import ExchangeService
from signing.errors import ContentDigestMismatch, MessageSignatureError
from signing.httpsig import ExchangeSigningKey, HttpRequest, sign_request
from tests.api.exchange_support import (
    LoopbackServer,
    StandIn,
    demo_cert_pem,
    demo_peer_key,
    demo_signing_key,
    utc_now,
)
from tests.loopback import free_port

PORTAL_KEY = demo_signing_key("portal-exchange", "portal")
ONE_STOP_KEY = demo_signing_key("one-stop-exchange", "one-stop")
GATEWAY_PEER_KEY = demo_peer_key("gateway-exchange", "gateway")
GW = "http://testserver/gateway"
DOSSIER = {"thu_tuc": "1.000.001", "ho_ten": "Trần Thị B", "so_dinh_danh": "079300000001"}


@pytest.fixture(scope="module")
def one_stop() -> Iterator[tuple[StandIn, LoopbackServer]]:
    stand_in = StandIn("one-stop", ONE_STOP_KEY, GATEWAY_PEER_KEY, slow_seconds=2.0)
    server = LoopbackServer(stand_in.app())
    yield stand_in, server
    server.stop()


@pytest.fixture(scope="module")
def portal_app() -> Iterator[tuple[StandIn, LoopbackServer]]:
    stand_in = StandIn("portal", PORTAL_KEY, GATEWAY_PEER_KEY)
    server = LoopbackServer(stand_in.app())
    yield stand_in, server
    server.stop()


class Exchange:
    def __init__(self, service: Any, one_stop_url: str, portal_url: str) -> None:
        self.service = service
        self.exchange: ExchangeService = service.state.exchange
        # A short timeout so the "peer does not answer" case is quick.
        service.state.services["gateway"] = Gateway(self.exchange, timeout_seconds=0.5)
        self.exchange.peers.add(
            "portal",
            keyid="portal",
            key_pem=demo_cert_pem("portal-exchange"),
            base_url=portal_url,
            routes=[
                "POST /gateway/one-stop/v1/dossiers",
                "GET /gateway/one-stop/v1/dossiers/*",
                "POST /gateway/one-stop/v1/slow",
                "POST /gateway/one-stop/v1/tamper",
                "POST /gateway/one-stop/v1/unsigned",
                "POST /gateway/archive/**",
                "POST /gateway/ghost/**",
            ],
        )
        self.exchange.peers.add(
            "one-stop",
            keyid="one-stop",
            key_pem=demo_cert_pem("one-stop-exchange"),
            base_url=one_stop_url,
            routes=["POST /gateway/portal/v1/**"],
        )
        self.exchange.peers.add("gateway", keyid="gateway", key_pem=demo_cert_pem("gateway-exchange"))

    def client(self, key: ExchangeSigningKey = PORTAL_KEY, **options: Any) -> httpx.Client:
        self.service.client.auth = ExchangeAuth(key, server_key=GATEWAY_PEER_KEY, **options)
        return self.service.client

    def entries(self, action: str) -> list[Any]:
        return [e for e in self.service.state.audit.entries(0, 10_000) if e.action == action]

    def rejected(self, reason: str) -> Any:
        (entry,) = [e for e in self.entries("exchange.rejected") if e.data["reason"] == reason]
        return entry


@pytest.fixture
def ex(
    service: Any, one_stop: tuple[StandIn, LoopbackServer], portal_app: tuple[StandIn, LoopbackServer]
) -> Iterator[Exchange]:
    yield Exchange(service, one_stop[1].url, portal_app[1].url)
    service.state.services["gateway"].close()


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].endswith(slug)
    return body


def _signed_raw(key: ExchangeSigningKey, path: str, body: bytes, **kw: Any) -> tuple[dict[str, str], bytes]:
    request = HttpRequest("POST", f"{GW}{path}", {"Content-Type": "application/json"}, body)
    headers = {"Content-Type": "application/json", **sign_request(request, key, clock=utc_now, **kw).as_dict()}
    return headers, body


# --- the round trip -------------------------------------------------------------------------------


def test_full_round_trip_through_the_gateway(ex: Exchange, one_stop: tuple[StandIn, LoopbackServer]) -> None:
    stand_in, _ = one_stop
    before = len(stand_in.received)
    response = ex.client().post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["by"] == "one-stop" and json.loads(answer["echo"]) == DOSSIER
    verified = response.extensions["bhxh_exchange"]
    assert verified.keyid == "gateway"  # the portal checked the gateway's signature on the answer
    # The one-stop system got exactly the body the portal signed, re-signed by the gateway.
    (got,) = stand_in.received[before:]
    assert got["keyid"] == "gateway" and json.loads(got["body"]) == DOSSIER and got["path"] == "/v1/dossiers"
    assert "authorization" not in {k.lower() for k in got["headers"]}
    accepted = ex.entries("exchange.accepted")
    assert [(e.data["direction"], e.data["peer"]) for e in accepted] == [
        ("request", "portal"),
        ("response", "one-stop"),
    ]
    assert accepted[1].data["in_reply_to"] == accepted[0].subject
    assert accepted[0].data["route"] == "POST /gateway/one-stop/v1/dossiers"


def test_round_trip_in_the_other_direction(ex: Exchange, portal_app: tuple[StandIn, LoopbackServer]) -> None:
    response = ex.client(ONE_STOP_KEY).post(f"{GW}/portal/v1/ket-qua", json={"trang_thai": "da_tiep_nhan"})
    assert response.status_code == 201 and response.json()["by"] == "portal"
    assert portal_app[0].received[-1]["keyid"] == "gateway"


def test_bodiless_get_round_trip(ex: Exchange) -> None:
    response = ex.client().get(f"{GW}/one-stop/v1/dossiers/000.00.31.H29-251123-0001")
    assert response.status_code == 201


# --- refusals on the way in ---------------------------------------------------------------------------


def test_unsigned_request_gets_401_and_is_not_forwarded(ex: Exchange, one_stop: tuple[StandIn, LoopbackServer]) -> None:
    before = len(one_stop[0].received)
    body = _problem(ex.service.client.post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER), 401, "exchange-unauthenticated")
    assert "message_id" in body and "detail" not in body
    assert ex.rejected("unsigned").subject == body["message_id"]
    assert len(one_stop[0].received) == before


def test_tampered_body_is_refused(ex: Exchange, one_stop: tuple[StandIn, LoopbackServer]) -> None:
    before = len(one_stop[0].received)
    headers, _ = _signed_raw(PORTAL_KEY, "/one-stop/v1/dossiers", b'{"so_tien": 100}')
    response = ex.service.client.post(f"{GW}/one-stop/v1/dossiers", headers=headers, content=b'{"so_tien": 900}')
    _problem(response, 401, "exchange-unauthenticated")
    assert ex.rejected("digest-mismatch").data["peer"] == "portal"
    assert len(one_stop[0].received) == before


def test_changed_header_is_refused(ex: Exchange) -> None:
    headers, body = _signed_raw(PORTAL_KEY, "/one-stop/v1/dossiers", b"{}")
    headers["Content-Type"] = "text/plain"
    _problem(
        ex.service.client.post(f"{GW}/one-stop/v1/dossiers", headers=headers, content=body),
        401,
        "exchange-unauthenticated",
    )
    ex.rejected("bad-signature")


def test_replayed_nonce_is_refused(ex: Exchange, one_stop: tuple[StandIn, LoopbackServer]) -> None:
    headers, body = _signed_raw(PORTAL_KEY, "/one-stop/v1/dossiers", b'{"lan": 1}')
    first = ex.service.client.post(f"{GW}/one-stop/v1/dossiers", headers=headers, content=body)
    assert first.status_code == 201
    before = len(one_stop[0].received)
    _problem(
        ex.service.client.post(f"{GW}/one-stop/v1/dossiers", headers=headers, content=body),
        401,
        "exchange-unauthenticated",
    )
    assert ex.rejected("replayed-nonce").data["peer"] == "portal"
    assert len(one_stop[0].received) == before


def test_stale_created_is_refused(ex: Exchange) -> None:
    stale = ex.client(clock=lambda: utc_now() - timedelta(seconds=400))
    with pytest.raises(MessageSignatureError):
        # The portal's own client refuses the 401 answer, which carries no gateway signature.
        stale.post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER)
    ex.rejected("created-out-of-window")


def test_unknown_key_is_refused(ex: Exchange) -> None:
    stranger = ExchangeSigningKey.from_private_key("vssid", ed25519.Ed25519PrivateKey.generate())
    headers, body = _signed_raw(stranger, "/one-stop/v1/dossiers", b"{}")
    _problem(
        ex.service.client.post(f"{GW}/one-stop/v1/dossiers", headers=headers, content=body),
        401,
        "exchange-unauthenticated",
    )
    assert ex.rejected("unknown-key").data["keyid"] == "vssid"


def test_route_not_allowed_is_refused_with_403(ex: Exchange, one_stop: tuple[StandIn, LoopbackServer]) -> None:
    before = len(one_stop[0].received)
    headers, body = _signed_raw(PORTAL_KEY, "/one-stop/v1/admin/users", b"{}")
    _problem(
        ex.service.client.post(f"{GW}/one-stop/v1/admin/users", headers=headers, content=body),
        403,
        "exchange-route-forbidden",
    )
    assert ex.rejected("route-not-allowed").data["peer"] == "portal"
    assert len(one_stop[0].received) == before


# --- refusals on the way back -------------------------------------------------------------------------


def test_response_tampered_on_the_way_back_is_not_passed_on(ex: Exchange) -> None:
    headers, body = _signed_raw(PORTAL_KEY, "/one-stop/v1/tamper", b"{}")
    response = ex.service.client.post(f"{GW}/one-stop/v1/tamper", headers=headers, content=body)
    problem = _problem(response, 502, "exchange-bad-upstream-response")
    assert "H30" not in response.text and "detail" not in problem
    entry = ex.rejected("digest-mismatch")
    assert entry.data["direction"] == "response" and entry.data["peer"] == "one-stop"


def test_unsigned_response_is_not_passed_on(ex: Exchange) -> None:
    headers, body = _signed_raw(PORTAL_KEY, "/one-stop/v1/unsigned", b"{}")
    _problem(
        ex.service.client.post(f"{GW}/one-stop/v1/unsigned", headers=headers, content=body),
        502,
        "exchange-bad-upstream-response",
    )
    assert ex.rejected("unsigned").data["direction"] == "response"


def test_portal_client_detects_a_response_changed_after_the_gateway(ex: Exchange) -> None:
    """The last hop: a proxy between the gateway and the portal alters the answer."""

    class Tampering(httpx.BaseTransport):
        def __init__(self, inner: httpx.BaseTransport) -> None:
            self.inner = inner

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            r = self.inner.handle_request(request)
            r.read()
            return httpx.Response(r.status_code, headers=r.headers, content=r.content.replace(b"H29", b"H30"))

    client = httpx.Client(
        transport=Tampering(ex.service.client._transport),
        base_url="http://testserver",
        auth=ExchangeAuth(PORTAL_KEY, server_key=GATEWAY_PEER_KEY),
    )
    with pytest.raises(ContentDigestMismatch):
        client.post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER)


# --- peers that are down, slow or unknown -------------------------------------------------------------


def test_peer_that_is_down_gives_502_and_is_logged(ex: Exchange) -> None:
    ex.exchange.peers.add(
        "archive",
        keyid="archive",
        key_pem=ExchangeSigningKey.from_private_key("archive", ed25519.Ed25519PrivateKey.generate())
        .peer_key()
        .public_pem(),
        base_url=f"http://127.0.0.1:{free_port()}",
    )
    headers, body = _signed_raw(PORTAL_KEY, "/archive/v1/store", b"{}")
    _problem(
        ex.service.client.post(f"{GW}/archive/v1/store", headers=headers, content=body),
        502,
        "exchange-peer-unreachable",
    )
    (failed,) = ex.entries("exchange.forward.failed")
    assert failed.data["reason"] == "unreachable" and failed.data["destination"] == "archive"


def test_peer_that_does_not_answer_in_time_gives_504_and_is_logged(ex: Exchange) -> None:
    headers, body = _signed_raw(PORTAL_KEY, "/one-stop/v1/slow", b"{}")
    _problem(
        ex.service.client.post(f"{GW}/one-stop/v1/slow", headers=headers, content=body), 504, "exchange-peer-timeout"
    )
    (failed,) = ex.entries("exchange.forward.failed")
    assert failed.data["reason"] == "timeout" and failed.data["peer"] == "portal"


def test_unknown_destination_is_404_after_verification(ex: Exchange) -> None:
    headers, body = _signed_raw(PORTAL_KEY, "/ghost/v1/x", b"{}")
    _problem(ex.service.client.post(f"{GW}/ghost/v1/x", headers=headers, content=body), 404, "exchange-unknown-peer")
    (failed,) = ex.entries("exchange.forward.failed")
    assert failed.data["reason"] == "unknown-destination"


def test_standalone_gateway_app_serves_only_the_gateway(ex: Exchange) -> None:
    from fastapi.testclient import TestClient

    from api.gateway import create_gateway_app

    client = TestClient(create_gateway_app(ex.service.state), raise_server_exceptions=False)
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/exchange/verify", json={}).status_code == 404
    _problem(client.post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER), 401, "exchange-unauthenticated")
    client.auth = ExchangeAuth(PORTAL_KEY, server_key=GATEWAY_PEER_KEY)
    assert client.post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER).status_code == 201


def test_every_gateway_method_has_its_own_openapi_operation(service: Any) -> None:
    # A duplicated operationId makes the published document invalid for client generators.
    operations = [op for path in service.app.openapi()["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    gateway = service.app.openapi()["paths"]["/gateway/{peer}/{path}"]
    assert {m.upper() for m in gateway} == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


# --- raw paths the gateway refuses before anything else --------------------------------------------


def _raw_post(server: LoopbackServer, raw_path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    """POST with the request target sent byte for byte (an HTTP client would normalise dot
    segments and may re-encode): http.client sends the path as given."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", raw_path, body=body, headers={"Host": "testserver", **headers})
        answer = connection.getresponse()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    finally:
        connection.close()


def _signed_at(url: str, body: bytes) -> tuple[dict[str, str], bytes]:
    request = HttpRequest("POST", url, {"Content-Type": "application/json"}, body)
    return {"Content-Type": "application/json", **sign_request(request, PORTAL_KEY, clock=utc_now).as_dict()}, body


@pytest.fixture
def served_gateway(ex: Exchange) -> Iterator[LoopbackServer]:
    # The portal may use any route to any peer: only the path checks stand between an odd path
    # and the forwarder.
    ex.exchange.peers.update("portal", routes=["* /gateway/*/**", "* /gateway/**"])
    server = LoopbackServer(ex.service.app)
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("raw_path", "status", "reason"),
    [
        ("/gateway/%6Fne-stop/v1/dossiers", 400, "encoded-name"),
        ("/gateway/one-st%6Fp/v1/dossiers", 400, "encoded-name"),
        ("/%67ateway/one-stop/v1/dossiers", 400, "encoded-name"),
        ("/gateway/one-stop/a/../../portal/v1/ket-qua", 400, "dot-segment"),
        ("/gateway/one-stop/./v1/dossiers", 400, "dot-segment"),
        ("/gateway/one-stop//v1/dossiers", 400, "empty-segment"),
        ("/gateway/one-stop/v1//dossiers", 400, "empty-segment"),
        ("/gateway/one-stop/v1%2Fdossiers", 400, "ambiguous-path-byte"),
        ("/gateway/one-stop/v1%2fdossiers", 400, "ambiguous-path-byte"),
        ("/gateway/one-stop/%2E%2E/portal/v1/ket-qua", 400, "ambiguous-path-byte"),
        ("/gateway/one-stop/v1%5Cdossiers", 400, "ambiguous-path-byte"),
        ("/gateway/one-stop/v1/" + "d" * 2100, 414, "path-too-long"),
    ],
    ids=[
        "encoded-peer",
        "encoded-peer-tail",
        "encoded-prefix",
        "dot-dot",
        "dot",
        "double-slash",
        "inner-double-slash",
        "encoded-slash",
        "encoded-slash-lower",
        "encoded-dots",
        "encoded-backslash",
        "overlong",
    ],
)
def test_an_unsafe_gateway_path_is_refused_logged_and_never_forwarded(
    ex: Exchange,
    served_gateway: LoopbackServer,
    one_stop: tuple[StandIn, LoopbackServer],
    portal_app: tuple[StandIn, LoopbackServer],
    raw_path: str,
    status: int,
    reason: str,
) -> None:
    arrived = len(one_stop[0].arrived) + len(portal_app[0].arrived)
    headers, body = _signed_at(f"http://testserver{raw_path}", b'{"ok": 1}')
    response = _raw_post(served_gateway, raw_path, headers, body)
    problem = _problem(response, status, "exchange-target-too-long" if status == 414 else "exchange-bad-target")
    # The gateway signs its refusal like any answer, bound to the request as received.
    assert "signature" in response.headers and "message_id" in problem
    entry = ex.rejected(reason)
    assert entry.subject == problem["message_id"] and entry.data["via"] == "gateway"
    assert entry.data["keyid"] == "portal"
    assert len(one_stop[0].arrived) + len(portal_app[0].arrived) == arrived
    assert not ex.entries("exchange.accepted") and not ex.entries("exchange.forward.failed")


def test_a_plain_path_through_the_served_gateway_still_goes_through(
    ex: Exchange, served_gateway: LoopbackServer, one_stop: tuple[StandIn, LoopbackServer]
) -> None:
    raw_path = "/gateway/one-stop/v1/dossiers/a%20b/?q=1"
    headers, body = _signed_at(f"http://testserver{raw_path}", b'{"ok": 1}')
    response = _raw_post(served_gateway, raw_path, headers, body)
    assert response.status_code == 201, response.text
    # Rebuilt from the checked segments: the encoding and the trailing slash kept, the query too.
    assert one_stop[0].arrived[-1] == "/v1/dossiers/a%20b/"
    assert one_stop[0].received[-1]["path"] == "/v1/dossiers/a b/"


def test_the_gateway_consumes_the_nonce_it_forwards(ex: Exchange) -> None:
    headers, body = _signed_raw(PORTAL_KEY, "/one-stop/v1/dossiers", b'{"lan": 2}')
    assert ex.service.client.post(f"{GW}/one-stop/v1/dossiers", headers=headers, content=body).status_code == 201
    # A look through the verify API afterwards finds the nonce recorded by the delivery.
    payload = {
        "method": "POST",
        "url": f"{GW}/one-stop/v1/dossiers",
        "headers": headers,
        "body_b64": base64.b64encode(body).decode(),
    }
    look = ex.service.client.post("/v1/exchange/verify", json=payload, headers=ex.service.auth("verify")).json()
    assert look["valid"] is False and look["reason"] == "replayed-nonce" and look["nonce_seen"] is True


def test_forwarding_fields_stay_on_the_callers_hop(ex: Exchange, one_stop: tuple[StandIn, LoopbackServer]) -> None:
    """A proxy's Forwarded / X-Forwarded-* describe the hop into the gateway: a peer that
    believed them would rebuild another target URI than the one the gateway signed."""
    forwarding = {
        "Forwarded": "for=192.0.2.1;proto=https;host=gateway.example",
        "X-Forwarded-For": "192.0.2.1",
        "X-Forwarded-Host": "gateway.example",
        "X-Forwarded-Proto": "https",
        "X-Real-IP": "192.0.2.1",
    }
    response = ex.client().post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER, headers=forwarding)
    assert response.status_code == 201, response.text
    passed = {k.lower() for k in one_stop[0].received[-1]["headers"]}
    assert not passed & {k.lower() for k in forwarding}
