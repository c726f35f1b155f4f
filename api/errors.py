"""The one table from exception class to RFC 9457 problem+json, and the handlers using it.

Lookup walks the exception's class hierarchy (most specific first), so one row covers a
family. Routers never build error responses by hand. Login, MFA and API-key failures give one
generic answer (STYLE.md rule 4); their precise reason goes to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import auth.errors as auth_errors
import integrity.errors as integrity_errors
from integrity.logs import get_logger

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:bhxh-integrity:problem:"


@dataclass(frozen=True)
class Problem:
    status: int
    slug: str
    title: str
    expose_detail: bool = True  # False: the message may help an attacker; send the title only
    headers: tuple[tuple[str, str], ...] = ()


class BodyTooLarge(Exception):
    """Raised by the body-limit middleware; mapped to 413."""


# Exception class -> problem. Add a row per domain error family; order does not matter.
PROBLEMS: dict[type[BaseException], Problem] = {
    BodyTooLarge: Problem(413, "body-too-large", "Request body too large"),
    auth_errors.InvalidApiKey: Problem(
        401, "unauthenticated", "Authentication required", expose_detail=False,
        headers=(("WWW-Authenticate", 'Bearer realm="bhxh-integrity"'),),
    ),
    auth_errors.MissingScope: Problem(403, "forbidden", "The credentials lack the required scope"),
    auth_errors.UnknownScope: Problem(422, "unknown-scope", "Unknown scope"),
    auth_errors.UnknownClient: Problem(404, "unknown-client", "Unknown API client"),
    auth_errors.InvalidClientName: Problem(422, "invalid-client-name", "Invalid client name"),
    auth_errors.AuthError: Problem(400, "auth-error", "Authentication request refused"),
    integrity_errors.IntegrityError: Problem(400, "bad-request", "Request refused"),
}


def register_problem(exc_type: type[BaseException], problem: Problem) -> None:
    PROBLEMS[exc_type] = problem


def problem_for(exc: BaseException) -> Problem | None:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return None


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _slug_for_status(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-")
    except ValueError:
        return "error"


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    problem = problem_for(exc)
    if problem is None:
        return await _unexpected(request, exc)
    return problem_response(
        problem.status,
        problem.slug,
        problem.title,
        str(exc) if problem.expose_detail else None,
        instance=request.url.path,
        headers=dict(problem.headers) or None,
        extra=getattr(exc, "problem_extra", None),
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    title = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
    return problem_response(
        exc.status_code, _slug_for_status(exc.status_code), title, detail,
        instance=request.url.path, headers=dict(exc.headers) if exc.headers else None,
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Echo where and why, never the submitted value: it may be a password or personal data.
    errors = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return problem_response(
        422, "validation-error", "Request validation failed",
        "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:10]),
        instance=request.url.path, extra={"errors": errors},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    get_logger().error("unhandled_error", error_type=type(exc).__name__, path=request.url.path, exc_info=exc)
    return problem_response(500, "internal-error", "Internal server error", instance=request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    for exc_type in PROBLEMS:
        app.add_exception_handler(exc_type, _domain_error)
    app.add_exception_handler(Exception, _unexpected)
