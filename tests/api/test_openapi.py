"""The published description (/openapi.json) says what the service really does, and /docs shows
it from this service's own files under its strict CSP.

Security and scopes are checked against the running app: an operation documented as needing a
scope refuses a call without credentials (401) and one with every other scope (403), and lets
a key holding just that scope past both. Media types, the error format and the 415 answer are
checked over HTTP too; test_fuzz.py checks the converse (every answer it sees is documented).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from api.errors import PROBLEM_JSON, PROBLEMS
from auth.scopes import SCOPES
from tests.conftest import Service

OPENAPI_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Statuses the service answers without a row in the error table: 415 and 422 from request
# validation (api/errors.py), 503 from /readyz.
_FRAMEWORK_STATUSES = frozenset({415, 422, 503})


@pytest.fixture
def schema(service: Service) -> dict[str, Any]:
    response = service.client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in OPENAPI_METHODS
    ]


def _concrete(path: str, operation: dict[str, Any]) -> str:
    """``path`` with each parameter filled by a value of its type."""
    for param in operation.get("parameters", []):
        if param["in"] == "path":
            value = "0" if param["schema"].get("type") == "integer" else "x"
            path = path.replace("{" + param["name"] + "}", value)
    return path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_security_schemes_describe_api_keys_and_sessions(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKey"]["type"] == "http" and schemes["apiKey"]["scheme"] == "bearer"
    assert "bhxh_" in schemes["apiKey"]["bearerFormat"]
    assert schemes["session"]["type"] == "http" and schemes["session"]["scheme"] == "bearer"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_keyed_v1_operation_names_its_scope_and_documents_401_and_403_as_problems(
    schema: dict[str, Any],
) -> None:
    scoped = 0
    for method, path, operation in _operations(schema):
        if not path.startswith("/v1/") or "security" not in operation:
            continue
        responses = operation["responses"]
        assert set(responses["401"]["content"]) == {PROBLEM_JSON}, (method, path)
        assert "WWW-Authenticate" in responses["401"]["headers"], (method, path)
        scope = operation.get("x-required-scope")
        if scope is None:  # a person's own session (/v1/auth)
            assert operation["security"] == [{"session": []}], (method, path)
            continue
        scoped += 1
        assert scope in SCOPES, (method, path, scope)
        assert operation["security"] == [{"apiKey": [scope]}, {"session": [scope]}], (method, path)
        assert f"`{scope}`" in operation["description"]
        assert set(responses["403"]["content"]) == {PROBLEM_JSON}, (method, path)
    assert scoped >= 25  # the loop saw the API, not an empty schema


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_documented_scope_is_the_enforced_one(service: Service, schema: dict[str, Any]) -> None:
    """Without credentials 401; with every scope but the documented one 403; with only that
    scope past both (the call may still fail on its parameters or body, never on the key)."""
    checked = 0
    for method, path, operation in _operations(schema):
        scope = operation.get("x-required-scope")
        if scope is None:
            continue
        url = _concrete(path, operation)
        body: dict[str, Any] = {"json": {}} if "requestBody" in operation and path != "/v1/receipts/verify" else {}
        anonymous = service.client.request(method, url, **body)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        others = service.auth(*sorted(SCOPES - {scope}))
        assert service.client.request(method, url, headers=others, **body).status_code == 403, (method, path)
        allowed = service.client.request(method, url, headers=service.auth(scope), **body)
        assert allowed.status_code not in (401, 403), (method, path, allowed.text)
        checked += 1
    assert checked >= 25


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_error_answer_is_documented_as_problem_json_with_a_status_the_service_gives(
    schema: dict[str, Any],
) -> None:
    producible = {problem.status for problem in PROBLEMS.values()} | _FRAMEWORK_STATUSES
    for method, path, operation in _operations(schema):
        for key, response in operation["responses"].items():
            if not key.isdigit() or int(key) < 400:
                continue
            assert int(key) in producible, (method, path, key)
            assert response["content"] == {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}, (
                method,
                path,
                key,
            )
        if "requestBody" in operation:
            assert {"413", "415", "422"} <= set(operation["responses"]), (method, path)
    problem = schema["components"]["schemas"]["Problem"]
    assert problem["required"] == ["type", "title", "status"]
    assert {"detail", "instance", "errors", "rule", "message_id", "checks"} <= set(problem["properties"])
    # FastAPI's own 422 body is never sent, so it is not described.
    assert "HTTPValidationError" not in schema["components"]["schemas"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_login_documents_the_lockout_429_with_retry_after(schema: dict[str, Any]) -> None:
    for path in ("/v1/auth/login", "/v1/auth/mfa", "/v1/auth/step-up"):
        answer = schema["paths"][path]["post"]["responses"]["429"]
        assert answer["headers"]["Retry-After"]["required"] is True
        assert PROBLEM_JSON in answer["content"]
    assert "security" not in schema["paths"]["/v1/auth/login"]["post"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_binary_and_html_answers_are_not_declared_as_json(schema: dict[str, Any]) -> None:
    pdf = schema["paths"]["/v1/receipts/{code}/pdf"]["get"]["responses"]["200"]["content"]
    assert pdf == {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}
    report = schema["paths"]["/v1/audit/report"]["get"]["responses"]["200"]["content"]
    assert report["text/html"]["schema"] == {"type": "string"}
    assert "application/x-ndjson" in schema["paths"]["/v1/audit/export"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    jwks = schema["paths"]["/.well-known/jwks.json"]["get"]["responses"]["200"]["content"]
    assert list(jwks) == ["application/jwk-set+json"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_receipt_verdict_is_a_typed_model(schema: dict[str, Any]) -> None:
    ok = schema["paths"]["/v1/receipts/verify"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/ReceiptVerdictOut"}
    verdict = schema["components"]["schemas"]["ReceiptVerdictOut"]
    assert {"issued_by_system", "code", "sha256", "registered", "hash_matches", "signature", "reasons"} <= set(
        verdict["required"]
    )
    signature = schema["components"]["schemas"]["SignatureVerdictOut"]
    assert {"intact", "valid", "trusted_signer", "modification_level", "pades_level"} <= set(signature["properties"])


# --- 415: a JSON operation refuses another media type -------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_json_body_in_another_media_type_is_415_and_creates_nothing(
    service: Service, content_type: str | None
) -> None:
    headers = service.auth("admin")
    before = len(service.state.clients.list())
    if content_type is not None:
        headers["content-type"] = content_type
    body = json.dumps({"name": "sneaky", "scopes": ["sign"]}).encode()
    response = service.client.post("/v1/admin/clients", content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.headers["accept"] == "application/json"
    assert response.json()["type"].endswith(":unsupported-media-type")
    assert len(service.state.clients.list()) == before
    # The same body as JSON is taken.
    headers["content-type"] = "application/json"
    assert service.client.post("/v1/admin/clients", content=body, headers=headers).status_code == 201


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_invalid_json_body_is_still_422(service: Service) -> None:
    response = service.client.post("/v1/admin/clients", json={"name": ""}, headers=service.auth("admin"))
    assert response.status_code == 422
    assert response.json()["type"].endswith(":validation-error")


# --- /docs ------------------------------------------------------------------------------


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self._in_script = True
            if values.get("src"):
                self.urls.append((tag, values["src"] or ""))
        elif tag == "link" and values.get("href"):
            self.urls.append((values.get("rel") or tag, values["href"] or ""))
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline_scripts += 1  # an event handler or inline style the CSP would refuse
            assert value is None or not value.startswith("javascript:")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_docs_load_only_same_origin_assets_and_no_inline_script(service: Service) -> None:
    page = service.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["default-src"] == "'none'"
    assert "unsafe" not in csp
    assets = _Assets()
    assets.feed(page.text)
    assert assets.inline_scripts == 0
    kinds = {kind for kind, _ in assets.urls}
    assert {"script", "stylesheet", "icon"} <= kinds
    assert len([u for k, u in assets.urls if k == "script"]) == 2
    texts = [page.text]
    for _kind, url in assets.urls:
        assert url.startswith("/") and not url.startswith("//"), url  # this origin only
        asset = service.client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(_TYPES[url[url.rfind(".") :]]), url
        if not url.endswith(".png"):
            texts.append(asset.text)
    described = re.search(r'data-openapi-url="([^"]+)"', page.text)
    assert described is not None
    texts.append(service.client.get(described.group(1)).text)
    assert all("cdn.jsdelivr" not in text for text in texts)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_docs_serve_nothing_but_their_assets(service: Service) -> None:
    assert service.client.get("/docs/assets/../app.py").status_code == 404
    assert service.client.get("/docs/assets/nothing.js").status_code == 404
    # ReDoc injects inline styles, which the page CSP refuses: it is not offered.
    assert service.client.get("/redoc").status_code == 404
