"""``POST /v1/exchange/verify`` and the admin peer registry ``/v1/admin/peers``."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import func, select

from integrity.exchange.tables import exchange_nonces
from signing.httpsig import ExchangeSigningKey, HttpRequest, sign_request
from tests.api.exchange_support import demo_cert_pem, demo_signing_key, utc_now

PORTAL_KEY = demo_signing_key("portal-exchange", "portal")
URL = "https://one-stop.bhxh.internal/v1/dossiers"
BODY = '{"ho_ten": "Lê Văn C"}'.encode()


@pytest.fixture
def svc(service: Any) -> Iterator[Any]:
    yield service


def _register_portal(svc: Any) -> None:
    svc.state.exchange.peers.add(
        "portal", keyid="portal", key_pem=demo_cert_pem("portal-exchange"), routes=["POST /v1/dossiers"]
    )


def _payload(body: bytes = BODY, *, as_pairs: bool = False, key: ExchangeSigningKey = PORTAL_KEY) -> dict[str, Any]:
    request = HttpRequest("POST", URL, {"Content-Type": "application/json"}, body)
    headers = {"Content-Type": "application/json", **sign_request(request, key, clock=utc_now).as_dict()}
    return {
        "method": "POST",
        "url": URL,
        "headers": [[k, v] for k, v in headers.items()] if as_pairs else headers,
        "body_b64": base64.b64encode(body).decode(),
    }


def _entries(svc: Any, action: str) -> list[Any]:
    return [e for e in svc.state.audit.entries(0, 10_000) if e.action == action]


# --- verify ---------------------------------------------------------------------------------------


def _nonces(svc: Any) -> int:
    with svc.state.exchange.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(exchange_nonces)).scalar_one())


def test_verify_accepts_a_signed_message_and_names_the_peer(svc: Any) -> None:
    _register_portal(svc)
    key = svc.api_key("verify")
    response = svc.client.post("/v1/exchange/verify", json=_payload(), headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["valid"] is True and out["peer"] == "portal" and out["reasons"] == []
    assert out["route"] == "POST /v1/dossiers" and out["digest"].startswith("sha-256=:")
    assert out["nonce_seen"] is False
    # Checked, not delivered: the entry says so and no nonce was recorded.
    (entry,) = _entries(svc, "exchange.checked")
    assert entry.seq == out["audit_seq"] and entry.data["via"] == "verify-api"
    assert entry.data["caller"].startswith("client:") and entry.data["consume"] is False
    assert not _entries(svc, "exchange.accepted") and _nonces(svc) == 0


def test_verify_takes_headers_as_pairs(svc: Any) -> None:
    _register_portal(svc)
    out = svc.client.post("/v1/exchange/verify", json=_payload(as_pairs=True), headers=svc.auth("verify")).json()
    assert out["valid"] is True


def test_verify_reports_a_tampered_body_with_its_reason(svc: Any) -> None:
    _register_portal(svc)
    payload = _payload()
    payload["body_b64"] = base64.b64encode(BODY.replace("Lê".encode(), b"Le")).decode()
    out = svc.client.post("/v1/exchange/verify", json=payload, headers=svc.auth("verify")).json()
    assert out["valid"] is False and out["reason"] == "digest-mismatch"
    assert out["reasons"][0].startswith("digest-mismatch")
    assert _entries(svc, "exchange.rejected")[0].data["reason"] == "digest-mismatch"


def test_verifying_twice_without_consume_records_nothing(svc: Any) -> None:
    """Whoever may verify and sees a message in flight cannot use up its nonce before the real
    delivery: a plain verify only looks."""
    _register_portal(svc)
    payload, auth = _payload(), svc.auth("verify")
    first = svc.client.post("/v1/exchange/verify", json=payload, headers=auth).json()
    second = svc.client.post("/v1/exchange/verify", json=payload, headers=auth).json()
    assert first["valid"] is True and second["valid"] is True
    assert first["nonce_seen"] is False and second["nonce_seen"] is False
    assert _nonces(svc) == 0 and len(_entries(svc, "exchange.checked")) == 2
    # The real receiver still gets it through once.
    consumer = svc.auth("verify", "exchange:consume")
    delivered = svc.client.post("/v1/exchange/verify", json={**payload, "consume": True}, headers=consumer).json()
    assert delivered["valid"] is True and delivered["nonce_seen"] is False


def test_consume_records_the_nonce_and_a_second_consume_is_a_replay(svc: Any) -> None:
    _register_portal(svc)
    payload, consumer = {**_payload(), "consume": True}, svc.auth("verify", "exchange:consume")
    first = svc.client.post("/v1/exchange/verify", json=payload, headers=consumer).json()
    assert first["valid"] is True and first["nonce_seen"] is False and _nonces(svc) == 1
    (accepted,) = _entries(svc, "exchange.accepted")
    assert accepted.seq == first["audit_seq"] and accepted.data["consume"] is True
    assert accepted.data["caller"].startswith("client:")
    again = svc.client.post("/v1/exchange/verify", json=payload, headers=consumer).json()
    assert again["valid"] is False and again["reason"] == "replayed-nonce" and again["nonce_seen"] is True
    # A plain check afterwards says the nonce was seen, and records nothing more.
    look = svc.client.post("/v1/exchange/verify", json=_without_consume(payload), headers=svc.auth("verify")).json()
    assert look["valid"] is False and look["reason"] == "replayed-nonce" and look["nonce_seen"] is True
    assert _nonces(svc) == 1 and len(_entries(svc, "exchange.accepted")) == 1
    assert [e.data["consume"] for e in _entries(svc, "exchange.rejected")] == [True, False]


def test_consume_without_its_scope_is_403_records_nothing_and_is_logged(svc: Any) -> None:
    _register_portal(svc)
    payload = {**_payload(), "consume": True}
    response = svc.client.post("/v1/exchange/verify", json=payload, headers=svc.auth("verify"))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith(":forbidden")
    assert _nonces(svc) == 0
    assert not _entries(svc, "exchange.accepted") and not _entries(svc, "exchange.checked")
    (refused,) = _entries(svc, "exchange.consume.refused")
    assert refused.actor.startswith("client:") and refused.data["missing_scope"] == "exchange:consume"
    # The message is still deliverable to the system allowed to consume it.
    consumer = svc.auth("verify", "exchange:consume")
    assert svc.client.post("/v1/exchange/verify", json=payload, headers=consumer).json()["valid"] is True


def test_a_refused_message_says_nothing_about_its_nonce(svc: Any) -> None:
    _register_portal(svc)
    payload = _payload()
    payload["body_b64"] = base64.b64encode(b"{}").decode()
    out = svc.client.post("/v1/exchange/verify", json=payload, headers=svc.auth("verify")).json()
    assert out["valid"] is False and out["reason"] == "digest-mismatch" and out["nonce_seen"] is None


def _without_consume(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "consume"}


def test_verify_reports_an_unknown_key(svc: Any) -> None:
    stranger = ExchangeSigningKey.from_private_key("stranger", ed25519.Ed25519PrivateKey.generate())
    out = svc.client.post("/v1/exchange/verify", json=_payload(key=stranger), headers=svc.auth("verify")).json()
    assert out["valid"] is False and out["reason"] == "unknown-key" and out["peer"] is None


@pytest.mark.parametrize(("scopes", "status"), [((), 401), (("sign",), 403)])
def test_verify_needs_the_verify_scope(svc: Any, scopes: tuple[str, ...], status: int) -> None:
    headers = svc.auth(*scopes) if scopes else {}
    assert svc.client.post("/v1/exchange/verify", json=_payload(), headers=headers).status_code == status
    assert not _entries(svc, "exchange.accepted") and not _entries(svc, "exchange.rejected")


@pytest.mark.parametrize(
    "change",
    [
        {"body_b64": "***"},
        {"method": ""},
        {"extra": 1},
        {"headers": {f"h{i}": "v" for i in range(201)}},
        {"consume": "perhaps"},
    ],
    ids=["bad-base64", "empty-method", "unknown-field", "too-many-headers", "consume-not-a-boolean"],
)
def test_malformed_verify_request_is_422(svc: Any, change: dict[str, Any]) -> None:
    payload = {**_payload(), **change}
    response = svc.client.post("/v1/exchange/verify", json=payload, headers=svc.auth("verify"))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


# --- admin: peers ---------------------------------------------------------------------------------


def _peer_body(**over: Any) -> dict[str, Any]:
    body = {
        "name": "portal",
        "keyid": "portal",
        "key_pem": demo_cert_pem("portal-exchange"),
        "routes": ["POST /gateway/one-stop/v1/dossiers"],
        "base_url": "http://portal.bhxh.internal:8080",
    }
    body.update(over)
    return body


def test_admin_manages_peers_and_every_change_is_logged(svc: Any) -> None:
    auth = svc.auth("admin")
    created = svc.client.post("/v1/admin/peers", json=_peer_body(), headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["algorithm"] == "ed25519" and created.json()["certificate_subject"].startswith("CN=portal")
    assert [p["name"] for p in svc.client.get("/v1/admin/peers", headers=auth).json()] == ["portal"]

    patched = svc.client.patch("/v1/admin/peers/portal", json={"routes": ["GET /gateway/one-stop/**"]}, headers=auth)
    assert patched.status_code == 200 and patched.json()["routes"] == ["GET /gateway/one-stop/**"]
    assert patched.json()["base_url"] == "http://portal.bhxh.internal:8080"
    cleared = svc.client.patch("/v1/admin/peers/portal", json={"base_url": None}, headers=auth)
    assert cleared.json()["base_url"] is None

    assert svc.client.delete("/v1/admin/peers/portal", headers=auth).status_code == 200
    assert svc.client.get("/v1/admin/peers/portal", headers=auth).status_code == 404

    logged = [
        (e.action, e.actor.split(":")[0], e.subject)
        for e in svc.state.audit.entries(0, 10_000)
        if e.action.startswith("exchange.peer.")
    ]
    assert logged == [
        ("exchange.peer.added", "client", "peer:portal"),
        ("exchange.peer.updated", "client", "peer:portal"),
        ("exchange.peer.updated", "client", "peer:portal"),
        ("exchange.peer.removed", "client", "peer:portal"),
    ]


def test_admin_rotates_a_peer_key_with_an_overlap_then_ends_it(svc: Any) -> None:
    _register_portal(svc)
    auth, verify = svc.auth("admin"), {"Authorization": f"Bearer {svc.api_key('verify')}"}
    new_key = ExchangeSigningKey.from_private_key("portal-2", ed25519.Ed25519PrivateKey.generate())
    rotated = svc.client.patch(
        "/v1/admin/peers/portal",
        json={"keyid": "portal-2", "key_pem": new_key.peer_key().public_pem(), "overlap_seconds": 3600},
        headers=auth,
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["keyid"] == "portal-2" and rotated.json()["previous_keyid"] == "portal"
    assert rotated.json()["previous_until"] is not None
    # Both keys verify while the portal's instances switch over.
    for key in (PORTAL_KEY, new_key):
        out = svc.client.post("/v1/exchange/verify", json=_payload(key=key), headers=verify).json()
        assert out["valid"] is True and out["keyid"] == key.keyid

    ended = svc.client.patch("/v1/admin/peers/portal", json={"end_overlap": True}, headers=auth)
    assert ended.status_code == 200 and ended.json()["previous_keyid"] is None
    old = svc.client.post("/v1/exchange/verify", json=_payload(), headers=verify).json()
    assert old["valid"] is False and old["reason"] == "unknown-key" and old["peer"] is None


@pytest.mark.parametrize(
    "patch",
    [
        {"overlap_seconds": 60},
        {"keyid": "portal", "key_pem": "NEW", "overlap_seconds": 60},
        {"keyid": "portal-2", "key_pem": "NEW", "overlap_seconds": 60, "end_overlap": True},
        {"keyid": "portal-2", "key_pem": "NEW", "overlap_seconds": 31 * 86_400},
        {"keyid": "portal-2", "key_pem": "NEW", "overlap_seconds": "soon"},
    ],
    ids=["no-new-key", "same-keyid", "start-and-end", "too-long", "not-a-number"],
)
def test_a_refused_rotation_is_422_and_changes_nothing(svc: Any, patch: dict[str, Any]) -> None:
    _register_portal(svc)
    auth = svc.auth("admin")
    before = svc.client.get("/v1/admin/peers/portal", headers=auth).json()
    if patch.get("key_pem") == "NEW":
        patch = {
            **patch,
            "key_pem": ExchangeSigningKey.from_private_key("x", ed25519.Ed25519PrivateKey.generate())
            .peer_key()
            .public_pem(),
        }
    response = svc.client.patch("/v1/admin/peers/portal", json=patch, headers=auth)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert svc.client.get("/v1/admin/peers/portal", headers=auth).json() == before
    assert not _entries(svc, "exchange.peer.updated")


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        (_peer_body(routes=["FETCH /x"]), 422, "exchange-invalid-peer"),
        (_peer_body(key_pem="garbage"), 422, "exchange-invalid-peer"),
        (_peer_body(base_url="file:///etc/passwd"), 422, "exchange-invalid-peer"),
        (_peer_body(name="Portal Web"), 422, "exchange-invalid-peer"),
    ],
    ids=["route", "key", "base-url", "name"],
)
def test_invalid_peer_is_refused_and_nothing_logged(svc: Any, body: dict[str, Any], status: int, slug: str) -> None:
    response = svc.client.post("/v1/admin/peers", json=body, headers=svc.auth("admin"))
    assert response.status_code == status and response.json()["type"].endswith(slug)
    assert not [e for e in svc.state.audit.entries(0, 10_000) if e.action.startswith("exchange.peer.")]


def test_duplicate_peer_is_409(svc: Any) -> None:
    auth = svc.auth("admin")
    assert svc.client.post("/v1/admin/peers", json=_peer_body(), headers=auth).status_code == 201
    again = svc.client.post("/v1/admin/peers", json=_peer_body(name="portal-2"), headers=auth)
    assert again.status_code == 409 and again.json()["type"].endswith("exchange-peer-exists")


def test_peer_admin_needs_the_admin_scope(svc: Any) -> None:
    assert svc.client.get("/v1/admin/peers", headers=svc.auth("verify")).status_code == 403
    assert svc.client.post("/v1/admin/peers", json=_peer_body(), headers=svc.auth("verify")).status_code == 403
