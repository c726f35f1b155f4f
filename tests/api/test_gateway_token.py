"""The gateway's own RFC 9421 key on a PKCS#11 token (SoftHSM2): forwarded requests and relayed
answers are signed there and verify only with the token's public key; a token that fails while
forwarding is a 503 with the reason logged and nothing forwarded; ``exchange gateway-key``
hands the public key to the peers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from api import cli
from api.client import ExchangeAuth
from api.gateway import Gateway
from signing.algorithms import Algorithm
from signing.errors import MessageSignatureError
from signing.httpsig import PeerKey
from tests.api.exchange_support import LoopbackServer, StandIn, demo_cert_pem, demo_peer_key, demo_signing_key
from tests.conftest import DEMO_KEYS, Service, demo_keys_without
from tests.token_support import SoftToken

PORTAL_KEY = demo_signing_key("portal-exchange", "portal")
ONE_STOP_KEY = demo_signing_key("one-stop-exchange", "one-stop")
FILE_GATEWAY_KEY = demo_peer_key("gateway-exchange", "gateway")
GW = "http://testserver/gateway"
DOSSIER = {"thu_tuc": "1.000.001", "ho_ten": "Lê Văn C", "so_dinh_danh": "079300000002"}
runner = CliRunner()


class TokenGateway:
    """The service with its gateway key on the token, a one-stop stand-in that trusts only
    that key, and the registry set up as an operator would."""

    def __init__(self, db_url: str, soft_token: SoftToken, tmp_path: Path, algorithm: Algorithm) -> None:
        self.label, public = soft_token.officer_key(algorithm, "gateway")
        self.public = PeerKey.from_public_key("gateway", public)
        self.one_stop = StandIn("one-stop", ONE_STOP_KEY, self.public)
        self.server = LoopbackServer(self.one_stop.app())
        keys = demo_keys_without(tmp_path, "gateway-exchange.key.pem")
        self.svc = Service(db_url, keys_dir=keys, gateway_key_label=self.label, **soft_token.settings())
        exchange = self.svc.state.exchange
        self.svc.state.services["gateway"] = Gateway(exchange, timeout_seconds=5)
        exchange.peers.add(
            "portal",
            keyid="portal",
            key_pem=demo_cert_pem("portal-exchange"),
            routes=["POST /gateway/one-stop/v1/dossiers"],
        )
        exchange.peers.add(
            "one-stop", keyid="one-stop", key_pem=demo_cert_pem("one-stop-exchange"), base_url=self.server.url
        )

    def post(self, server_key: PeerKey) -> httpx.Response:
        self.svc.client.auth = ExchangeAuth(PORTAL_KEY, server_key=server_key)
        return self.svc.client.post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER)

    def entries(self, action: str) -> list[Any]:
        audit = self.svc.state.audit
        return [e for e in audit.entries(0, audit.size()) if e.action == action]

    def close(self) -> None:
        self.svc.state.services["gateway"].close()
        self.svc.close()
        self.server.stop()


@pytest.fixture(params=[Algorithm.ED25519, Algorithm.ES256], ids=["ed25519", "p256"])
def token_gateway(
    request: pytest.FixtureRequest, db_url: str, soft_token: SoftToken, tmp_path: Path
) -> Iterator[TokenGateway]:
    gw = TokenGateway(db_url, soft_token, tmp_path, request.param)
    yield gw
    gw.close()


def test_the_gateway_signs_both_ways_with_its_key_on_the_token(token_gateway: TokenGateway) -> None:
    gw = token_gateway
    assert gw.svc.state.exchange.gateway.on_token
    response = gw.post(server_key=gw.public)
    assert response.status_code == 201, response.text
    # The one-stop stand-in accepted the forwarded request with the token's key only…
    (got,) = gw.one_stop.received
    assert got["keyid"] == "gateway" and json.loads(got["body"]) == DOSSIER
    # …and the portal's client checked the relayed answer against the same key.
    assert response.extensions["bhxh_exchange"].keyid == "gateway"
    accepted = gw.entries("exchange.accepted")
    assert [(e.data["direction"], e.data["peer"]) for e in accepted] == [
        ("request", "portal"),
        ("response", "one-stop"),
    ]


def test_a_gateway_answer_signed_on_the_token_does_not_verify_with_the_old_file_key(
    token_gateway: TokenGateway,
) -> None:
    with pytest.raises(MessageSignatureError):
        token_gateway.post(server_key=FILE_GATEWAY_KEY)
    # The message itself went through: only the caller's check of the answer failed.
    assert len(token_gateway.one_stop.received) == 1


def test_a_token_that_fails_while_forwarding_is_503_logged_and_nothing_is_forwarded(
    db_url: str, soft_token: SoftToken, tmp_path: Path
) -> None:
    gw = TokenGateway(db_url, soft_token, tmp_path, Algorithm.ED25519)
    try:
        key = gw.svc.state.exchange.gateway.key
        assert key is not None
        soft_token.erase(key.private_key.object_id)  # type: ignore[union-attr]
        gw.svc.client.auth = ExchangeAuth(PORTAL_KEY, server_key=None)  # a 503 from the error table is unsigned
        response = gw.svc.client.post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"].endswith(":key-token-unavailable")
        assert gw.label not in response.text and soft_token.label not in response.text
        assert gw.one_stop.received == []
        (accepted,) = gw.entries("exchange.accepted")
        (failed,) = gw.entries("exchange.forward.failed")
        assert failed.data["reason"] == "gateway-key-unavailable" and failed.subject == accepted.subject
    finally:
        gw.close()


@pytest.fixture
def cli_env(db_url: str, soft_token: SoftToken, monkeypatch: pytest.MonkeyPatch) -> SoftToken:
    for key, value in {"BHXH_DATABASE_URL": db_url, "BHXH_LOG_LEVEL": "WARNING", **soft_token.env()}.items():
        monkeypatch.setenv(key, value)
    return soft_token


def test_cli_shows_the_public_key_of_the_gateway_for_its_peers(
    cli_env: SoftToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BHXH_KEYS_DIR", str(DEMO_KEYS))
    shown = runner.invoke(cli.app, ["exchange", "gateway-key", "--demo", "--json"])
    assert shown.exit_code == 0, shown.output
    from_file = json.loads(shown.stdout)
    assert from_file["keyid"] == "gateway" and from_file["on_token"] is False
    assert from_file["public_key_pem"] == FILE_GATEWAY_KEY.public_pem()

    label, public = cli_env.officer_key(Algorithm.ED25519, "gateway")
    monkeypatch.setenv("BHXH_KEYS_DIR", str(demo_keys_without(tmp_path, "gateway-exchange.key.pem")))
    monkeypatch.setenv("BHXH_GATEWAY_KEY_LABEL", label)
    shown = runner.invoke(cli.app, ["exchange", "gateway-key", "--demo"])
    assert shown.exit_code == 0, shown.output
    assert "on the PKCS#11 token" in shown.stdout and "ed25519" in shown.stdout
    pem = shown.stdout[shown.stdout.index("-----BEGIN") :]
    assert serialization.load_pem_public_key(pem.encode()) == public


def test_cli_gateway_key_without_any_key_is_one_clear_line(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_LOG_LEVEL": "WARNING",
        "BHXH_KEYS_DIR": str(demo_keys_without(tmp_path, "gateway-exchange.key.pem")),
    }.items():
        monkeypatch.setenv(key, value)
    shown = runner.invoke(cli.app, ["exchange", "gateway-key", "--demo"])
    assert shown.exit_code == 2
    (error,) = [line for line in shown.output.splitlines() if line.startswith("error:")]
    assert "no exchange signing key" in error and "BHXH_GATEWAY_KEY_LABEL" in error
    assert "-----BEGIN" not in shown.output
