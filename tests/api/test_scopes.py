"""API keys and scopes: one dependency decides; 401 for missing/unknown/revoked, 403 out of scope."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from audit.tables import audit_entries
from auth import InvalidApiKey
from auth.tables import api_clients
from tests.conftest import Service

ADMIN_ONLY = "/v1/admin/clients"


def test_missing_key_is_401_with_www_authenticate(service: Service) -> None:
    response = service.client.get(ADMIN_ONLY)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "detail" not in response.json()


def test_unknown_key_is_401(service: Service) -> None:
    service.api_key("admin")
    forged = "bhxh_0123456789abcdef_" + "A" * 43
    response = service.client.get(ADMIN_ONLY, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_malformed_key_and_wrong_scheme_are_401(service: Service) -> None:
    key = service.api_key("admin")
    for header in (f"Basic {key}", "Bearer ", "Bearer bhxh_short", key):
        assert service.client.get(ADMIN_ONLY, headers={"Authorization": header}).status_code == 401


def test_right_key_wrong_secret_is_401(service: Service) -> None:
    key = service.api_key("admin")
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert service.client.get(ADMIN_ONLY, headers={"Authorization": f"Bearer {tampered}"}).status_code == 401


def test_key_without_scope_is_403(service: Service) -> None:
    response = service.client.get(ADMIN_ONLY, headers=service.auth("sign", "verify"))
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


def test_key_with_scope_is_allowed(service: Service) -> None:
    response = service.client.get(ADMIN_ONLY, headers=service.auth("admin"))
    assert response.status_code == 200
    assert [c["name"] for c in response.json()] == ["test-client"]


def test_revocation_takes_effect_at_once(service: Service) -> None:
    admin = service.auth("admin")
    created = service.client.post(ADMIN_ONLY, json={"name": "portal", "scopes": ["admin"]}, headers=admin)
    assert created.status_code == 201
    victim = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert service.client.get(ADMIN_ONLY, headers=victim).status_code == 200
    revoked = service.client.post(f"{ADMIN_ONLY}/{created.json()['client_id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert service.client.get(ADMIN_ONLY, headers=victim).status_code == 401


def test_unknown_scope_is_refused_and_nothing_is_created(service: Service) -> None:
    admin = service.auth("admin")
    response = service.client.post(ADMIN_ONLY, json={"name": "x", "scopes": ["root"]}, headers=admin)
    assert response.status_code == 422
    assert "root" in response.json()["detail"]
    with service.state.engine.connect() as conn:
        names = [r.name for r in conn.execute(select(api_clients.c.name))]
    assert names == ["test-client"]


def test_only_a_hash_of_the_key_is_stored(service: Service) -> None:
    key = service.api_key("sign")
    secret = key.split("_", 2)[2]
    with service.state.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(api_clients))]
    flat = repr(rows)
    assert secret not in flat and key not in flat


def test_key_events_are_counted_in_metrics(service: Service) -> None:
    def count(event: str) -> float:
        for line in service.client.get("/metrics").text.splitlines():
            if line.startswith(f'bhxh_api_key_events_total{{event="{event}"}}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    created, refused = count("created"), count("refused")
    service.api_key("admin")
    service.client.get(ADMIN_ONLY, headers={"Authorization": "Bearer bhxh_0123456789abcdef_nope"})
    assert count("created") == created + 1
    assert count("refused") == refused + 1


def test_request_metrics_use_route_templates(service: Service) -> None:
    service.client.get("/healthz")
    text = service.client.get("/metrics").text
    assert 'bhxh_http_requests_total{method="GET",route="/healthz",status="200"}' in text


def test_another_instance_refuses_a_revoked_key_once_its_cache_expires(service: Service) -> None:
    # Instances share the database, not memory: a second ClientService stands for another
    # instance that authenticated the key a moment before this instance revoked it.
    from integrity.clients import ClientService

    state = service.state
    other = ClientService(state.engine, state.clock, state.audit, cache_seconds=0.3)
    issued = state.clients.create("portal", ["sign"])
    assert other.authenticate(issued.api_key).client_id == issued.client.client_id
    state.clients.revoke(issued.client.client_id)
    # Within its cache window the other instance still knows the key (documented bound) ...
    assert other.cached(issued.api_key) is not None
    time.sleep(0.35)
    # ... and after it, the key is refused there too.
    assert other.cached(issued.api_key) is None
    with pytest.raises(InvalidApiKey):
        other.authenticate(issued.api_key)


def test_a_refused_key_is_never_cached(service: Service) -> None:
    key = service.api_key("admin")
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    for _ in range(2):
        assert service.client.get(ADMIN_ONLY, headers={"Authorization": f"Bearer {tampered}"}).status_code == 401
    assert service.state.clients.cached(tampered) is None
    with service.state.engine.connect() as conn:
        refusals = conn.execute(
            select(audit_entries.c.seq).where(audit_entries.c.action == "auth.apikey.refused")
        ).all()
    assert len(refusals) == 2  # each refusal reached the database and the log
