"""The published OpenAPI description, completed from what the code enforces.

FastAPI writes the paths, parameters and models. This module adds what it cannot see, taken
from the same objects that act on a request, so the description cannot drift from them:

- the security requirement and scope of each operation, from its ``RequireScope`` or
  ``session_token`` dependency (api/deps.py);
- the refusals every such operation can give (401, 403), the 429 of every rate-limited
  operation (api/rate_limit.py), those of every operation taking a
  body (400, 413 over ``BHXH_MAX_BODY_BYTES``, 415, 422), and the domain refusals a route lists
  with ``problems(...)``; each one RFC 9457 ``application/problem+json`` (api/errors.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from api.deps import RequireScope, session_token
from api.errors import PROBLEM_JSON, TYPE_PREFIX
from api.rate_limit import limit_public

API_KEY_SCHEME = "apiKey"
SESSION_SCHEME = "session"
SCOPE_EXTENSION = "x-required-scope"
_REF = "#/components/schemas/"
_FRAMEWORK_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

BINARY = {"type": "string", "format": "binary"}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    API_KEY_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "bhxh_<key id>_<secret> (API key of a client system)",
        "description": "An API key issued to another BHXH system (`bhxh-integrity clients create` or "
        "`POST /v1/admin/clients`). Each operation names the one scope the key must hold.",
    },
    SESSION_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "opaque session token",
        "description": "A person's session token from `POST /v1/auth/login` (and `/v1/auth/mfa` when a second "
        "factor is asked). A full session carries the scopes of the person's role.",
    },
}

_VALIDATION_ISSUE: dict[str, Any] = {
    "type": "object",
    "title": "ValidationIssue",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"type": "array", "items": {"type": "string"}, "description": "where: body, query, path or header"},
        "msg": {"type": "string"},
        "type": {"type": "string", "description": "pydantic's error type, e.g. missing, string_too_long"},
    },
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details. Credential refusals give the title only: the precise reason "
    "is in the audit log.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "description": f"the kind of problem, `{TYPE_PREFIX}<slug>`",
            "examples": [f"{TYPE_PREFIX}forbidden"],
        },
        "title": {"type": "string", "description": "short, the same for every problem of the kind"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "this occurrence; absent where it could help an attacker"},
        "instance": {"type": "string", "description": "the request path"},
        "errors": {
            "type": "array",
            "items": {"$ref": _REF + "ValidationIssue"},
            "description": "validation-error: every refused field (never the submitted value)",
        },
        "rule": {"type": "string", "description": "password-rejected: the policy rule broken"},
        "message_id": {"type": "string", "description": "exchange refusals: the id of the refused message"},
        "reason": {
            "type": "string",
            "description": "signature-activation-refused and the other refusals of a person's signature: why",
        },
        "verification": {"type": "object", "description": "malformed-signature: the logged verdict"},
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "warn", "fail"]},
                    "reason": {"type": "string"},
                },
                "required": ["status", "reason"],
            },
            "description": "not-ready: each readiness check, its status and why",
        },
    },
}

# What each refusal means, whatever route gives it; a route's own wording is its business.
_MEANING: dict[int, str] = {
    400: "The request is refused (e.g. a body that is not UTF-8 JSON, a field that is not valid base64)",
    401: "Missing, unknown, expired or refused credentials",
    403: "The credentials lack the scope (or the peer may not use the route)",
    404: "No such resource",
    409: "The resource's state does not allow this",
    413: "The body is over the service's limit (BHXH_MAX_BODY_BYTES) or the operation's own",
    415: "The body is not of a media type the operation takes (JSON operations: application/json)",
    422: "The request failed validation (fields, limits, or a domain rule)",
    429: "Too many requests (the caller's rate limit) or too many failed attempts; try again after Retry-After seconds",
    502: "The destination peer failed or answered wrongly",
    503: "A dependency (signing key token, audit log) cannot be used now",
    504: "The destination peer did not answer in time",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the scheme to authenticate with (RFC 9110 §11.6.1); "
            "`insufficient_user_authentication` asks for a recent second factor (RFC 9470)",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "seconds to wait (RFC 9110 §10.2.3)",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for the domain refusals it gives; 401/403/413/415/422 from
    credentials and bodies are added for every route by ``describe``."""
    return {status: {"description": _meaning(status)} for status in statuses}


def content(status: int, description: str, **media: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """A non-JSON answer, e.g. ``content(200, "the PDF", **{"application/pdf": BINARY})``."""
    return {status: {"description": description, "content": {m: {"schema": s} for m, s in media.items()}}}


def _meaning(status: int) -> str:
    return _MEANING.get(status) or HTTPStatus(status).phrase


def _dependencies(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependencies(sub)


def _security(route: RouteContext) -> tuple[list[dict[str, list[str]]], str | None]:
    """The operation's security requirement and its scope, from the dependency enforcing it."""
    calls = list(_dependencies(route.dependant))
    scopes = sorted({call.scope for call in calls if isinstance(call, RequireScope)})
    if scopes:
        # Both requirement objects carry the scope: OpenAPI 3.1 §4.8.30 allows role names for
        # non-OAuth schemes. An API key or a person's full session, holding the scope.
        return [{API_KEY_SCHEME: scopes}, {SESSION_SCHEME: scopes}], ", ".join(scopes)
    if session_token in calls:
        return [{SESSION_SCHEME: []}], None
    return [], None


def _rate_limited(route: RouteContext) -> bool:
    """Whether the operation spends a rate-limit budget: a scope's (``RequireScope``) or the
    sender's address (``limit_public``)."""
    return any(isinstance(call, RequireScope) or call is limit_public for call in _dependencies(route.dependant))


def _may_fail_validation(route: RouteContext) -> bool:
    """Whether request validation can refuse a call: any body, query, header or cookie
    parameter (of the route or a dependency), or a path parameter that is more than any text."""
    stack = [route.dependant]
    while stack:
        node = stack.pop()
        if node.body_params or node.query_params or node.header_params or node.cookie_params:
            return True
        if any(p.field_info.annotation is not str or p.field_info.metadata for p in node.path_params):
            return True
        stack.extend(node.dependencies)
    return False


def _problem_response(status: int, response: dict[str, Any]) -> None:
    response["content"] = {PROBLEM_JSON: {"schema": {"$ref": _REF + "Problem"}}}
    if status in _HEADERS:
        response["headers"] = {**_HEADERS[status], **response.get("headers", {})}
    if status == 422 or not response.get("description"):
        response["description"] = _meaning(status)


def describe(schema: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    """Complete ``schema`` (FastAPI's) in place from the app's routes; returns it."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ValidationIssue"] = _VALIDATION_ISSUE
    components["securitySchemes"] = SECURITY_SCHEMES
    # Route contexts, as FastAPI's own generator reads them: an included router's routes
    # carry its prefix and dependencies there, not in ``app.routes``.
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        security, scope = _security(route)
        for method in sorted(route.methods or ()):
            operation = schema["paths"][route.path_format][method.lower()]
            responses: dict[str, Any] = operation.setdefault("responses", {})
            added: set[int] = set()
            if security:
                operation["security"] = security
                added.add(401)
            if scope is not None:
                operation[SCOPE_EXTENSION] = scope
                note = f"Requires an API key or session holding the scope `{scope}`."
                operation["description"] = (
                    f"{operation['description']}\n\n{note}" if "description" in operation else note
                )
                added.add(403)
            if _rate_limited(route):
                added.add(429)
            if route.body_field is not None:
                # A JSON body: undecodable text is 400 (FastAPI), another media type 415
                # (api/errors.py), a field out of its model 422.
                added |= {400, 413, 415, 422}
            elif "requestBody" in operation:
                added.add(413)  # a raw body the route reads itself (its other refusals it lists)
            if "422" in responses and 422 not in route.responses and not _may_fail_validation(route):
                del responses["422"]  # FastAPI lists it for any parameter, even a bare path segment
            for status in sorted(added):
                responses.setdefault(str(status), {"description": _meaning(status)})
            for key, response in responses.items():
                if key.isdigit() and int(key) >= 400:
                    _problem_response(int(key), response)
    # FastAPI's own 422 body (application/json ``detail``) is never sent: api/errors.py answers
    # validation failures as problem+json. Its schemas go once nothing refers to them.
    text = repr(schema["paths"])
    for name in _FRAMEWORK_VALIDATION_SCHEMAS:
        if _REF + name not in text:
            schemas.pop(name, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve the completed description at ``app.openapi_url`` (built once, on first use)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(build(), app.routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
