"""Security headers on every answer; no-store on sensitive ones."""

from __future__ import annotations

from tests.conftest import Service


def test_api_answers_forbid_framing_sniffing_and_script(service: Service) -> None:
    response = service.client.get("/healthz")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_admin_answers_are_not_stored(service: Service) -> None:
    response = service.client.get("/v1/admin/clients", headers=service.auth("admin"))
    assert response.headers["cache-control"] == "no-store"


def test_errors_carry_the_headers_too(service: Service) -> None:
    response = service.client.get("/nowhere")
    assert response.status_code == 404
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
