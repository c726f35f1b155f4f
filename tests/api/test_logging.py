"""Logs: JSON lines, a request id on every line of a request, and no API key in any line."""

from __future__ import annotations

import io
import json

import pytest

from integrity.logs import configure_logging, get_logger
from tests.conftest import Service


@pytest.fixture
def log_stream() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    yield stream
    configure_logging("INFO")


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_line_of_a_request_carries_its_request_id(service: Service, log_stream: io.StringIO) -> None:
    @service.app.get("/log-for-test")
    def logs_inside() -> dict[str, str]:
        get_logger("bhxh.test").info("inside_handler")
        return {"ok": "yes"}

    response = service.client.get("/log-for-test", headers={"X-Request-ID": "req-abc-12345"})
    assert response.headers["x-request-id"] == "req-abc-12345"
    lines = [line for line in _lines(log_stream) if line.get("event") in {"inside_handler", "request"}]
    assert {line["event"] for line in lines} == {"inside_handler", "request"}
    assert all(line["request_id"] == "req-abc-12345" for line in lines)


def test_unsafe_request_id_is_replaced(service: Service, log_stream: io.StringIO) -> None:
    response = service.client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    generated = response.headers["x-request-id"]
    assert generated != "bad id\twith spaces" and len(generated) == 16
    assert _lines(log_stream)[-1]["request_id"] == generated


def test_no_api_key_appears_in_any_log_line(service: Service, log_stream: io.StringIO) -> None:
    key = service.api_key("admin")
    secret = key.split("_", 2)[2]
    headers = {"Authorization": f"Bearer {key}"}
    service.client.get("/v1/admin/clients", headers=headers)
    created = service.client.post("/v1/admin/clients", json={"name": "p", "scopes": ["sign"]}, headers=headers)
    service.client.get("/v1/admin/clients", headers={"Authorization": f"Bearer {key}x"})
    service.client.get("/v1/admin/clients?api_key=" + key)
    output = log_stream.getvalue()
    assert output, "the flow must have produced log lines"
    for needle in (key, secret, created.json()["api_key"], created.json()["api_key"].split("_", 2)[2]):
        assert needle not in output


def test_sensitive_field_names_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream)
    try:
        get_logger().info("oops", password="pw-123", token="tok-456", route="/x")
    finally:
        configure_logging("INFO")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["password"] == "[redacted]" and line["token"] == "[redacted]" and line["route"] == "/x"
