"""Every error is RFC 9457 problem+json, including the framework's own 404/405/422/413."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.errors import PROBLEM_JSON, TYPE_PREFIX
from tests.conftest import Service


def _assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith(TYPE_PREFIX)
    assert body["title"]
    return body


def test_unknown_path_is_problem_404(service: Service) -> None:
    _assert_problem(service.client.get("/no/such/thing"), 404)


def test_wrong_method_is_problem_405(service: Service) -> None:
    _assert_problem(service.client.post("/healthz"), 405)


def test_invalid_body_is_problem_422_without_echoing_the_input(service: Service) -> None:
    secret_looking = "hunter2-should-not-echo"
    response = service.client.post(
        "/v1/admin/clients",
        json={"name": "", "scopes": [], "extra": secret_looking},
        headers=service.auth("admin"),
    )
    body = _assert_problem(response, 422)
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "name"), ("body", "scopes"), ("body", "extra")}
    assert secret_looking not in response.text


def test_malformed_json_is_problem_422(service: Service) -> None:
    response = service.client.post(
        "/v1/admin/clients",
        content=b"{not json",
        headers={**service.auth("admin"), "content-type": "application/json"},
    )
    _assert_problem(response, 422)


def test_declared_oversized_body_is_413_before_reading(service: Service) -> None:
    limit = service.settings.max_body_bytes
    response = service.client.post(
        "/v1/admin/clients", content=b"x" * (limit + 1), headers={"content-type": "application/json"}
    )
    body = _assert_problem(response, 413)
    assert str(limit) in body["detail"]


def test_streamed_oversized_body_without_length_is_413(service: Service) -> None:
    limit = service.settings.max_body_bytes
    chunk = b"y" * 65536

    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent <= limit:
            sent += len(chunk)
            yield chunk

    response = service.client.post(
        "/v1/admin/clients", content=chunks(), headers={**service.auth("admin"), "content-type": "application/json"}
    )
    _assert_problem(response, 413)


def test_unexpected_error_is_problem_500_without_internals(service: Service) -> None:
    @service.app.get("/boom-for-test")
    def boom() -> None:
        raise RuntimeError("internal detail /etc/secret")

    response = service.client.get("/boom-for-test")
    body = _assert_problem(response, 500)
    assert "secret" not in response.text
    assert "detail" not in body


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_health_endpoints_need_no_credentials(service: Service, path: str) -> None:
    assert service.client.get(path).status_code == 200
