"""Readiness: every check is ok, warn or fail with a reason, and one failure is a 503 naming it:
the database, the schema, each certificate the service signs with (expired: fail; close to its
end: warn, and its days left on /metrics), the key token's login, the audit log's writer."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from api.app import create_app
from integrity.app_state import build_state
from signing.keystore import key_id_for
from tests.conftest import DEMO_KEYS, PG_ADMIN_DSN, Service, demo_settings, writer_held
from tests.signing._pki import TestCa
from tests.token_support import SoftToken

DATA_MESSAGE_CERT = "institution-data-message.crt.pem"


def _demo_ca() -> TestCa:
    passphrase = (DEMO_KEYS / "passphrase.txt").read_bytes().strip()
    key = serialization.load_pem_private_key((DEMO_KEYS / "ca.key.pem").read_bytes(), passphrase)
    return TestCa(key, x509.load_pem_x509_certificate((DEMO_KEYS / "ca.crt.pem").read_bytes()))  # type: ignore[arg-type]


def _data_message_key() -> str:
    public = x509.load_pem_x509_certificate((DEMO_KEYS / DATA_MESSAGE_CERT).read_bytes()).public_key()
    return key_id_for(public)


def _keys_with_data_message_certificate(tmp_path: Path, not_after: datetime) -> Path:
    """A copy of the demo keys whose data-message certificate (same key, same CA) ends at
    ``not_after``: what an operator installs when the CA's certificate runs out."""
    keys = tmp_path / "keys"
    keys.mkdir()
    for file in DEMO_KEYS.iterdir():
        (keys / file.name).write_bytes(file.read_bytes())
    public = x509.load_pem_x509_certificate((DEMO_KEYS / DATA_MESSAGE_CERT).read_bytes()).public_key()
    issued = _demo_ca().issue(
        public, "BHXH Data Message Signing (DEMO)", not_before=not_after - timedelta(days=365), not_after=not_after
    )
    (keys / DATA_MESSAGE_CERT).write_bytes(issued.public_bytes(serialization.Encoding.PEM))
    return keys


def _statuses(body: dict[str, object]) -> dict[str, str]:
    checks = body["checks"]
    assert isinstance(checks, dict)
    return {name: check["status"] for name, check in checks.items()}


def test_readyz_is_ready_with_every_check_ok_and_a_reason(service: Service) -> None:
    response = service.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    receipt = key_id_for(service.state.keys.one_stop_certificate.public_key())
    assert _statuses(body) == {
        "database": "ok",
        "schema": "ok",
        f"certificate:data-message:{_data_message_key()}": "ok",
        f"certificate:receipt:{receipt}": "ok",
        "audit_writer": "ok",
    }
    assert all(check["reason"] for check in body["checks"].values())
    assert "2031-12-06" in body["checks"][f"certificate:receipt:{receipt}"]["reason"]


def test_an_expired_signing_certificate_makes_readyz_503_naming_it(db_url: str, tmp_path: Path) -> None:
    keys = _keys_with_data_message_certificate(tmp_path, datetime.now(UTC) - timedelta(days=1))
    svc = Service(db_url, keys_dir=keys)
    try:
        response = svc.client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        name = f"certificate:data-message:{_data_message_key()}"
        assert body["checks"][name]["status"] == "fail"
        assert body["checks"][name]["reason"].startswith("expired at ")
        assert name in body["detail"] and "expired" in body["detail"]
        # Only that check fails: the others still say what they found.
        assert [n for n, status in _statuses(body).items() if status == "fail"] == [name]
        assert svc.client.get("/healthz").status_code == 200
    finally:
        svc.close()


def test_a_certificate_close_to_its_end_warns_and_shows_its_days_left(db_url: str, tmp_path: Path) -> None:
    keys = _keys_with_data_message_certificate(tmp_path, datetime.now(UTC) + timedelta(days=10, hours=1))
    svc = Service(db_url, keys_dir=keys, certificate_warn_days=30)
    try:
        response = svc.client.get("/readyz")
        assert response.status_code == 200
        kid = _data_message_key()
        check = response.json()["checks"][f"certificate:data-message:{kid}"]
        assert check["status"] == "warn" and check["reason"].startswith("expires in 10.0 days")
        metrics = svc.client.get("/metrics").text
        line = re.search(rf'^bhxh_certificate_days_left\{{key="{kid}",purpose="data-message"\}} (\S+)$', metrics, re.M)
        assert line is not None and 10 < float(line.group(1)) < 10.1
        assert re.search(r'^bhxh_certificate_days_left\{key="[^"]+",purpose="receipt"\} [0-9.]+$', metrics, re.M)
        # The day the certificate ends, the same instance is no longer ready.
        svc.clock.advance(timedelta(days=10, hours=2).total_seconds())
        assert svc.client.get("/readyz").status_code == 503
        after = svc.client.get("/metrics").text
        assert re.search(rf'^bhxh_certificate_days_left\{{key="{kid}",purpose="data-message"\}} -0\.0\d+$', after, re.M)
    finally:
        svc.close()


def test_a_stuck_audit_writer_makes_readyz_503(db_url: str) -> None:
    svc = Service(db_url, audit_writer_stall_seconds=0.3)
    try:
        assert svc.client.get("/readyz").status_code == 200
        with writer_held(svc.state.audit, 0):
            time.sleep(0.6)  # a caller has now waited on the writer longer than the setting allows
            stuck = svc.client.get("/readyz")
        assert stuck.status_code == 503
        check = stuck.json()["checks"]["audit_writer"]
        assert check["status"] == "fail" and check["reason"].startswith("stuck: 1 caller(s) waiting")
        assert svc.client.get("/readyz").status_code == 200  # the writer moved on
    finally:
        svc.close()


def test_a_closed_audit_log_makes_readyz_503(service: Service) -> None:
    service.state.audit.close()
    response = service.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["audit_writer"]["status"] == "fail"


def test_a_key_token_that_logged_out_makes_readyz_503(db_url: str, soft_token: SoftToken) -> None:
    svc = Service(db_url, **soft_token.settings())
    try:
        ready = svc.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["key_token"] == {"status": "ok", "reason": "logged in"}
        soft_token.log_out()  # the token drops this process's login (an HSM restart, say)
        response = svc.client.get("/readyz")
        assert response.status_code == 503
        check = response.json()["checks"]["key_token"]
        assert check["status"] == "fail" and check["reason"].startswith("logged out")
        assert soft_token.label not in response.text  # /readyz is public: no token label
    finally:
        svc.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_readyz_is_503_with_reason_when_database_goes_away(service: Service, db_url: str) -> None:
    assert service.client.get("/readyz").status_code == 200
    # The database disappears under the running service (dropped, connections terminated).
    dbname = db_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
    response = service.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["status"] == "fail"
    assert body["checks"]["database"]["reason"].startswith("unreachable")
    assert "database" in body["detail"]
    assert service.client.get("/healthz").status_code == 200


def test_readyz_is_503_when_migrations_are_pending(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = build_state(demo_settings(f"sqlite:///{tmp_path}/empty.db"))
    try:
        response = TestClient(create_app(state=state)).get("/readyz")
        assert response.status_code == 503
        schema = response.json()["checks"]["schema"]
        assert schema["status"] == "fail" and "migrations pending" in schema["reason"]
    finally:
        state.close()
