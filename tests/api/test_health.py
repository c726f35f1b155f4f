"""Readiness reports the database and the keys; 503 with the reason when a check fails."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from integrity.app_state import build_state
from tests.conftest import PG_ADMIN_DSN, Service, demo_settings


def test_readyz_is_ready_with_database_schema_and_keys(service: Service) -> None:
    response = service.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "schema": "ok", "keys": "ok"}


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
    assert body["checks"]["database"].startswith("unreachable")
    assert "database" in body["detail"]
    assert service.client.get("/healthz").status_code == 200


def test_readyz_is_503_when_migrations_are_pending(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = build_state(demo_settings(f"sqlite:///{tmp_path}/empty.db"))
    try:
        response = TestClient(create_app(state=state)).get("/readyz")
        assert response.status_code == 503
        assert "migrations pending" in response.json()["checks"]["schema"]
    finally:
        state.close()
