"""Request rate limits (integrity/rate_limits.py, api/rate_limit.py): per API client, per
person, per gateway peer and per source address, per route class; 429 problem+json with
Retry-After; nothing done or written for a refused request; shared through Redis by every
instance; the storage-failure policy; settings checked at start-up."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.cli import app as cli_app
from api.deps import RequireScope
from api.rate_limit import limit_public
from tests.auth.support import STRONG, rfc6238, secret_from_uri, step_of, wire_accounts
from tests.conftest import Service
from tests.tools import missing

PROBLEM = "application/problem+json"
REDIS_URL = "redis://127.0.0.1:6379/13"  # a database of its own; keys under a per-test prefix
SIGN_BODY = {"format": "jws", "payload_b64": base64.b64encode(b"Ho so 000.00.31.H29-251123-0001").decode()}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(response: Any, route_class: str) -> int:
    """The 429 answer's checks; returns its Retry-After."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "urn:bhxh-integrity:problem:rate-limited"
    assert body["title"] == "Too many requests" and body["status"] == 429
    assert repr(route_class) in body["detail"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


@pytest.fixture
def limited(db_url: str) -> Iterator[Service]:
    svc = Service(
        db_url,
        rate_limits={"sign": "3/minute", "audit-read": "2/minute"},
        rate_limit_per_address="4/minute",
    )
    yield svc
    svc.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the test database of the local Redis; its keys are
    removed afterwards. No Redis: a failure in CI, a skip elsewhere."""
    conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        conn.ping()
    except redis.exceptions.ConnectionError as exc:
        missing(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"bhxh-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    for key in conn.scan_iter(match=f"*{prefix}*"):
        conn.delete(key)
    conn.close()


# --- per API client ----------------------------------------------------------------------------


def test_a_client_past_its_sign_budget_gets_429_and_nothing_is_signed(limited: Service) -> None:
    headers = limited.auth("sign")
    for _ in range(3):
        assert limited.client.post("/v1/signatures", json=SIGN_BODY, headers=headers).status_code == 200
    size = limited.state.audit.size()
    _refused(limited.client.post("/v1/signatures", json=SIGN_BODY, headers=headers), "sign")
    assert limited.state.audit.size() == size  # no signature, no audit entry for the refused request
    # Another client has its own budget; the same client's other classes are untouched.
    assert limited.client.post("/v1/signatures", json=SIGN_BODY, headers=limited.auth("sign")).status_code == 200
    verify = limited.client.post("/v1/signatures/verify", json={"format": "jws", "signature": "x.y.z"}, headers=headers)
    assert verify.status_code != 429


def test_the_refusal_is_counted_on_metrics(limited: Service) -> None:
    def count() -> float:
        text = limited.client.get("/metrics").text
        match = re.search(r'^bhxh_rate_limited_total\{caller="client",route_class="sign"\} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    headers = limited.auth("sign")
    before = count()
    for _ in range(5):
        limited.client.post("/v1/signatures", json=SIGN_BODY, headers=headers)
    assert count() == before + 2
    # /metrics, /healthz and /readyz spend no budget.
    for _ in range(6):
        assert limited.client.get("/healthz").status_code == 200


# --- per person --------------------------------------------------------------------------------


def _auditor_session(svc: Service) -> str:
    wire_accounts(svc)
    created = svc.client.post(
        "/v1/admin/users",
        json={"username": "an", "password": STRONG, "role": "auditor", "reason": "new auditor"},
        headers=svc.auth("admin"),
    )
    assert created.status_code == 201, created.text
    first = svc.client.post("/v1/auth/login", json={"username": "an", "password": STRONG}).json()
    secret = secret_from_uri(
        svc.client.post("/v1/auth/totp/enroll", headers=_bearer(first["token"])).json()["otpauth_uri"]
    )
    done = svc.client.post(
        "/v1/auth/totp/confirm", json={"code": rfc6238(secret, step_of(svc.clock))}, headers=_bearer(first["token"])
    )
    assert done.status_code == 200, done.text
    return str(done.json()["token"])


def test_a_person_has_a_budget_of_their_own(db_url: str) -> None:
    svc = Service(db_url, rate_limits={"audit-read": "2/minute"}, rate_limit_per_address="100/minute")
    try:
        token = _auditor_session(svc)
        svc.state.audit.checkpoint_now()
        for _ in range(2):
            assert svc.client.get("/v1/audit/checkpoint", headers=_bearer(token)).status_code == 200
        _refused(svc.client.get("/v1/audit/checkpoint", headers=_bearer(token)), "audit-read")
        # An API client reading the same route spends its own budget, not the person's.
        assert svc.client.get("/v1/audit/checkpoint", headers=svc.auth("audit:read")).status_code == 200
    finally:
        svc.close()


# --- per source address ------------------------------------------------------------------------


def test_anonymous_traffic_shares_one_budget_per_address(limited: Service) -> None:
    admin = limited.auth("admin")
    assert limited.client.get("/v1/admin/clients", headers=admin).status_code == 200
    assert limited.client.get("/v1/audit/public-key").status_code == 200
    assert limited.client.get("/.well-known/jwks.json").status_code == 200
    assert limited.client.post("/v1/auth/login", json={"username": "nobody", "password": "x" * 12}).status_code == 401
    assert limited.client.get("/v1/admin/clients").status_code == 401  # no credentials: anonymous too
    _refused(limited.client.get("/v1/audit/public-key"), "public")
    _refused(limited.client.post("/v1/auth/login", json={"username": "nobody", "password": "x" * 12}), "public")
    # A client from the same address whose key authenticated lately is not held by the
    # anonymous budget; a key not seen lately waits like anonymous traffic (api/rate_limit.py).
    assert limited.client.get("/v1/admin/clients", headers=admin).status_code == 200
    _refused(limited.client.get("/v1/admin/clients", headers=limited.auth("admin")), "public")


def test_refused_keys_past_the_address_budget_are_not_looked_up_nor_logged(limited: Service) -> None:
    forged = _bearer("bhxh_0123456789abcdef_" + "A" * 43)
    for _ in range(4):
        assert limited.client.get("/v1/admin/clients", headers=forged).status_code == 401
    size = limited.state.audit.size()
    for _ in range(3):
        _refused(limited.client.get("/v1/admin/clients", headers=forged), "public")
    limited.state.refusals.flush_all()
    assert limited.state.audit.size() == size


# --- behind a trusted reverse proxy -------------------------------------------------------------

PROXY = "10.0.0.5"
FORGED_KEY = _bearer("bhxh_0123456789abcdef_" + "A" * 43)


@pytest.fixture
def proxied(db_url: str) -> Iterator[Service]:
    svc = Service(db_url, rate_limit_per_address="2/minute", trusted_proxies=["10.0.0.0/24"], refusal_log_per_minute=1)
    yield svc
    svc.close()


def _peer(svc: Service, address: str) -> TestClient:
    """The real app, reached from the TCP address ``address``."""
    return TestClient(svc.app, raise_server_exceptions=False, client=(address, 40000))


def test_senders_behind_a_trusted_proxy_have_budgets_of_their_own(proxied: Service) -> None:
    proxy = _peer(proxied, PROXY)
    alice = {"X-Forwarded-For": "203.0.113.66, 198.51.100.7"}  # the first entry is alice's own
    bob = {"Forwarded": "for=198.51.100.8"}
    for _ in range(2):
        assert proxy.get("/v1/audit/public-key", headers=alice).status_code == 200
    _refused(proxy.get("/v1/audit/public-key", headers=alice), "public")
    _refused(proxy.get("/v1/audit/public-key", headers={"X-Forwarded-For": "198.51.100.9, 198.51.100.7"}), "public")
    assert proxy.get("/v1/audit/public-key", headers=bob).status_code == 200
    # A sender reaching the service directly cannot claim another address to get more budget.
    direct = _peer(proxied, "192.0.2.50")
    for i in range(2):
        assert (
            direct.get("/v1/audit/public-key", headers={"X-Forwarded-For": f"198.51.100.{20 + i}"}).status_code == 200
        )
    _refused(direct.get("/v1/audit/public-key", headers={"X-Forwarded-For": "198.51.100.30"}), "public")
    _refused(direct.get("/v1/audit/public-key", headers={"Forwarded": "for=198.51.100.31"}), "public")
    # Nor take another sender's: bob behind the proxy still has his second request.
    assert direct.get("/v1/audit/public-key", headers=bob).status_code == 429
    assert proxy.get("/v1/audit/public-key", headers=bob).status_code == 200


def test_refusals_behind_a_trusted_proxy_are_counted_per_sender(proxied: Service) -> None:
    proxied.api_key("admin")  # a client exists, so the forged keys are looked up for real
    proxy = _peer(proxied, PROXY)
    start = proxied.state.audit.size()
    for sender in ("198.51.100.7", "198.51.100.8"):
        assert proxy.get("/v1/admin/clients", headers={**FORGED_KEY, "X-Forwarded-For": sender}).status_code == 401
    # One entry of its own per sender and minute (BHXH_REFUSAL_LOG_PER_MINUTE=1): two senders.
    refused = [e for e in proxied.state.audit.entries(start, start + 100) if e.action == "auth.apikey.refused"]
    assert len(refused) == 2
    # From an untrusted peer the forged field makes no second sender: the refusal is only counted.
    direct = _peer(proxied, "192.0.2.50")
    for sender in ("198.51.100.9", "198.51.100.10"):
        assert direct.get("/v1/admin/clients", headers={**FORGED_KEY, "X-Forwarded-For": sender}).status_code == 401
    after = [e for e in proxied.state.audit.entries(start, start + 100) if e.action == "auth.apikey.refused"]
    assert len(after) == 3


# --- what the description says -----------------------------------------------------------------


def test_every_api_route_spends_a_budget_and_documents_429(limited: Service) -> None:
    schema = limited.client.get("/openapi.json").json()
    unmetered = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
    for route in limited.app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema or route.path in unmetered:
            continue
        calls = {dep.call for dep in route.dependant.dependencies}
        calls |= {sub.call for dep in route.dependant.dependencies for sub in dep.dependencies}
        gateway = route.path.startswith("/gateway/")
        assert gateway or limit_public in calls or any(isinstance(c, RequireScope) for c in calls), route.path
        for method in route.methods or ():
            response = schema["paths"][route.path][method.lower()]["responses"]["429"]
            assert "Retry-After" in response["headers"], route.path


# --- shared by every instance (Redis) ----------------------------------------------------------


def test_two_instances_on_one_redis_enforce_one_limit(db_url: str, redis_prefix: str) -> None:
    options: dict[str, Any] = {
        "rate_limits": {"sign": "10/minute"},
        "rate_limit_url": REDIS_URL,
        "rate_limit_key_prefix": redis_prefix,
    }
    first = Service(db_url, **options)
    second = Service(db_url, **options)  # a second app over the same database and Redis
    try:
        headers = first.auth("sign")
        accepted = [
            (first if n % 2 else second).client.post("/v1/signatures", json=SIGN_BODY, headers=headers).status_code
            for n in range(10)
        ]
        assert accepted == [200] * 10
        size = first.state.audit.size()
        _refused(first.client.post("/v1/signatures", json=SIGN_BODY, headers=headers), "sign")
        _refused(second.client.post("/v1/signatures", json=SIGN_BODY, headers=headers), "sign")
        assert first.state.audit.size() == size
    finally:
        first.close()
        second.close()


def test_an_unreachable_redis_admits_clients_and_refuses_anonymous_traffic(db_url: str) -> None:
    # Nothing listens on port 1: every check fails at once (integrity/rate_limits.py's policy).
    svc = Service(db_url, rate_limits={"sign": "1/minute"}, rate_limit_url="redis://127.0.0.1:1/0")
    try:
        headers = svc.auth("sign")
        for _ in range(3):
            assert svc.client.post("/v1/signatures", json=SIGN_BODY, headers=headers).status_code == 200
        refused = svc.client.get("/v1/audit/public-key")
        assert refused.status_code == 503 and refused.headers["content-type"].startswith(PROBLEM)
        assert refused.json()["type"].endswith(":rate-limiter-unavailable")
        assert int(refused.headers["retry-after"]) >= 1
        metrics = svc.client.get("/metrics").text
        assert re.search(r'^bhxh_rate_limit_storage_errors_total\{outcome="allowed"\} [1-9]', metrics, re.M)
        assert re.search(r'^bhxh_rate_limit_storage_errors_total\{outcome="refused"\} [1-9]', metrics, re.M)
    finally:
        svc.close()


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("BHXH_RATE_LIMITS", '{"sign": "lots"}', "'lots' is not a rate limit"),
        ("BHXH_RATE_LIMITS", '{"signing": "5/minute"}', "'signing' is not a route class"),
        ("BHXH_RATE_LIMITS", "sign=5/minute", "BHXH_RATE_LIMITS is not valid JSON"),
        ("BHXH_RATE_LIMIT_PER_ADDRESS", "0/minute", "'0/minute' is not a rate limit"),
        ("BHXH_RATE_LIMIT_URL", "memcached://127.0.0.1:11211", "memory:// or a redis:// URL"),
    ],
)
def test_a_bad_rate_limit_setting_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, variable: str, value: str, said: str
) -> None:
    monkeypatch.setenv("BHXH_DATABASE_URL", f"sqlite:///{tmp_path}/never.db")
    monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(cli_app, ["serve", "--demo"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert variable in message and said in message
    assert not (tmp_path / "never.db").exists()


# --- per gateway peer --------------------------------------------------------------------------


def test_a_peer_past_its_gateway_budget_gets_429_and_nothing_is_verified_or_forwarded(db_url: str) -> None:
    from tests.api.exchange_support import LoopbackServer, StandIn
    from tests.api.test_gateway import DOSSIER, GATEWAY_PEER_KEY, GW, ONE_STOP_KEY, Exchange

    stand_in = StandIn("one-stop", ONE_STOP_KEY, GATEWAY_PEER_KEY)
    server = LoopbackServer(stand_in.app())
    svc = Service(db_url, rate_limits={"gateway": "2/minute"})
    ex = Exchange(svc, server.url, server.url)
    try:
        client = ex.client()
        for _ in range(2):
            assert client.post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER).status_code == 201
        size = svc.state.audit.size()
        forwarded = len(stand_in.received)
        refused = client.post(f"{GW}/one-stop/v1/dossiers", json=DOSSIER)
        _refused(refused, "gateway")
        assert "signature" in refused.headers  # signed by the gateway like its other answers
        assert svc.state.audit.size() == size and len(stand_in.received) == forwarded
    finally:
        svc.state.services["gateway"].close()
        svc.close()
        server.stop()
