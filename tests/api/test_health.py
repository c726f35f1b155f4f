"""Readiness reports the database and the keys; 503 with the reason when a check fails."""

from __future__ import annotations

from api.app import create_app
from fastapi.testclient import TestClient
from integrity.app_state import build_state
from tests.conftest import Service, demo_settings


def test_readyz_is_ready_with_database_schema_and_keys(service: Service) -> None:
    response = service.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "schema": "ok", "keys": "ok"}


def test_readyz_is_503_with_reason_when_database_unreachable() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    settings = demo_settings("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    state = build_state(settings)
    try:
        client = TestClient(create_app(state=state))
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["checks"]["database"].startswith("unreachable")
        assert "database" in body["detail"]
        assert client.get("/healthz").status_code == 200
    finally:
        state.close()


def test_readyz_is_503_when_migrations_are_pending(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = build_state(demo_settings(f"sqlite:///{tmp_path}/empty.db"))
    try:
        response = TestClient(create_app(state=state)).get("/readyz")
        assert response.status_code == 503
        assert "migrations pending" in response.json()["checks"]["schema"]
    finally:
        state.close()
