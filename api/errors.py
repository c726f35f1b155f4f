"""The one table from exception class to RFC 9457 problem+json, and the handlers using it.

Lookup walks the exception's class hierarchy (most specific first), so one row covers a
family. Routers never build error responses by hand. Login, MFA and API-key failures give one
generic answer (the precise reason would help an attacker); it goes to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import audit.errors as audit_errors
import auth.errors as auth_errors
import integrity.errors as ie
import signing.errors as se
from integrity.logs import get_logger

PROBLEM_JSON = "application/problem+json"
JSON = "application/json"
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


# RFC 9110 §15.5.2: every 401 carries WWW-Authenticate with a challenge for the credentials the
# resource takes (§11.6.1). API keys and people's API sessions are bearer tokens (RFC 6750); a
# refused login or second factor asks for a person's session, which only /v1/auth/login (or the
# web sign-in) opens; the exchange gateway takes RFC 9421 message signatures, and says which
# one in Accept-Signature (RFC 9421 §5.1, api/gateway.py).
WWW_AUTHENTICATE = "WWW-Authenticate"
BEARER_CHALLENGE = 'Bearer realm="bhxh-integrity"'
SESSION_CHALLENGE = 'Session realm="bhxh-integrity"'
SIGNATURE_CHALLENGE = 'Signature realm="bhxh-exchange"'
_BEARER = ((WWW_AUTHENTICATE, BEARER_CHALLENGE),)

# Exception class -> problem. Add a row per domain error family; order does not matter.
PROBLEMS: dict[type[Exception], Problem] = {
    BodyTooLarge: Problem(413, "body-too-large", "Request body too large"),
    # auth: API keys, scopes, accounts. Credential failures say nothing more than the title.
    auth_errors.InvalidApiKey: Problem(
        401, "unauthenticated", "Authentication required", expose_detail=False, headers=_BEARER
    ),
    auth_errors.SessionInvalid: Problem(
        401, "unauthenticated", "Authentication required", expose_detail=False, headers=_BEARER
    ),
    auth_errors.InvalidCredentials: Problem(
        401,
        "invalid-credentials",
        "Invalid credentials",
        expose_detail=False,
        headers=((WWW_AUTHENTICATE, SESSION_CHALLENGE),),
    ),
    auth_errors.LoginThrottled: Problem(429, "too-many-attempts", "Too many failed attempts", expose_detail=False),
    auth_errors.StepUpRequired: Problem(
        401,
        "step-up-required",
        "A recent second factor is required",
        headers=((WWW_AUTHENTICATE, 'Bearer error="insufficient_user_authentication"'),),
    ),
    auth_errors.MissingScope: Problem(403, "forbidden", "The credentials lack the required scope"),
    auth_errors.UnknownScope: Problem(422, "unknown-scope", "Unknown scope"),
    auth_errors.UnknownClient: Problem(404, "unknown-client", "Unknown API client"),
    auth_errors.InvalidClientName: Problem(422, "invalid-client-name", "Invalid client name"),
    auth_errors.MfaNotEnrolled: Problem(409, "mfa-not-enrolled", "No second factor enrolled"),
    auth_errors.EnrolmentNotStarted: Problem(409, "enrolment-not-started", "No TOTP enrolment pending"),
    auth_errors.PasswordRejected: Problem(422, "password-rejected", "Password rejected by policy"),
    auth_errors.InvalidUsername: Problem(422, "invalid-username", "Invalid username"),
    auth_errors.UsernameTaken: Problem(409, "username-taken", "Username taken"),
    auth_errors.UsernameConfusable: Problem(422, "username-confusable", "Username looks like another"),
    auth_errors.UnknownUser: Problem(404, "unknown-user", "Unknown user"),
    auth_errors.InvalidRole: Problem(422, "invalid-role", "Unknown role"),
    auth_errors.SecretUnreadable: Problem(500, "secret-unreadable", "Internal server error", expose_detail=False),
    auth_errors.PasskeyNotFound: Problem(404, "passkey-not-found", "No such passkey"),
    auth_errors.InvalidPasskeyName: Problem(422, "invalid-passkey-name", "Invalid passkey name"),
    auth_errors.PasskeyAlreadyRegistered: Problem(409, "passkey-already-registered", "Passkey already registered"),
    auth_errors.PasskeyRejected: Problem(422, "passkey-rejected", "Passkey not accepted"),
    auth_errors.AuthError: Problem(400, "auth-error", "Authentication request refused"),
    # audit
    audit_errors.InvalidEntry: Problem(422, "invalid-audit-event", "Invalid audit event"),
    audit_errors.EntryNotFound: Problem(404, "audit-entry-not-found", "No such audit entry"),
    audit_errors.InvalidTreeSize: Problem(422, "invalid-tree-size", "Tree size or index outside the log"),
    audit_errors.NoCheckpoint: Problem(404, "no-checkpoint", "No signed checkpoint yet"),
    audit_errors.MalformedTilePath: Problem(400, "malformed-tile-path", "Not a tlog-tiles path"),
    audit_errors.TileNotFound: Problem(404, "tile-not-found", "No such tile at the checkpointed size"),
    audit_errors.EntryTooLong: Problem(500, "entry-too-long", "Internal server error", expose_detail=False),
    audit_errors.PiiAlreadyErased: Problem(409, "personal-data-already-erased", "Personal data already erased"),
    audit_errors.PiiNotFound: Problem(404, "no-personal-data", "The entry has no personal data"),
    audit_errors.LogRolledBack: Problem(
        503,
        "audit-log-rolled-back",
        "The audit log was rolled back behind its witnesses; an administrator must acknowledge the loss",
    ),
    audit_errors.NothingToAcknowledge: Problem(409, "nothing-to-acknowledge", "The audit log is not rolled back"),
    audit_errors.AuditUnavailable: Problem(503, "audit-unavailable", "The audit log cannot take entries now"),
    audit_errors.AuditError: Problem(400, "audit-error", "Audit request refused"),
    # signing
    se.UnknownKey: Problem(404, "unknown-key", "Unknown signing key"),
    se.KeyPurposeMismatch: Problem(409, "key-purpose-mismatch", "The key is not for this purpose"),
    se.KeyNotUsable: Problem(409, "key-not-usable", "The key cannot be used for this"),
    se.ActiveKeyExists: Problem(409, "active-key-exists", "An active key of that algorithm exists"),
    se.DuplicateKey: Problem(409, "duplicate-key", "The key is already in the keystore"),
    se.InvalidKeyState: Problem(409, "invalid-key-state", "The key's state does not allow this"),
    # An unavailable HSM is the service's fault, not the caller's; the detail (token label,
    # failed step) stays in the service's log.
    se.TokenError: Problem(503, "key-token-unavailable", "The key token cannot be used now", expose_detail=False),
    se.KeystoreError: Problem(422, "key-refused", "The key material was refused"),
    se.UnknownFormat: Problem(422, "unknown-signature-format", "Unknown signature format"),
    se.InvalidEncoding: Problem(400, "invalid-base64", "A field is not valid base64"),
    se.PayloadTooLarge: Problem(413, "payload-too-large", "Payload too large"),
    se.BatchTooLarge: Problem(413, "batch-too-large", "Too many items in one batch"),
    se.InvalidXml: Problem(422, "invalid-xml", "The XML is malformed or unsafe"),
    se.MalformedSignature: Problem(422, "malformed-signature", "The signature is malformed"),
    se.InvalidRequest: Problem(400, "invalid-signature-request", "The signature request is invalid"),
    se.MalformedPdf: Problem(422, "unreadable-pdf", "Not a readable PDF"),
    se.SigningError: Problem(400, "signing-error", "Signing request refused"),
    # integrity: events of other systems
    ie.AuditNamespaceRefused: Problem(
        403, "audit-namespace-reserved", "The action is outside the caller's own event namespace"
    ),
    ie.ApproverNotAdmin: Problem(403, "approver-not-admin", "The approver is not an administrator"),
    # integrity: receipts
    ie.UnknownReceivingUnit: Problem(422, "unknown-receiving-unit", "Unknown receiving unit"),
    ie.InvalidReceiptRequest: Problem(422, "invalid-receipt-request", "Invalid receipt request"),
    ie.InvalidDossierCode: Problem(422, "invalid-dossier-code", "Invalid dossier code"),
    ie.DailySequenceExhausted: Problem(409, "daily-sequence-exhausted", "Daily dossier sequence exhausted"),
    ie.IdempotencyKeyReused: Problem(422, "idempotency-key-reused", "Idempotency-Key reused with a different request"),
    ie.ReceiptNotFound: Problem(404, "receipt-not-found", "Receipt not found"),
    ie.UnreadableReceipt: Problem(422, "unreadable-pdf", "Not a readable PDF"),
    ie.ReceiptSigningFailed: Problem(503, "receipt-signing-unavailable", "Receipt signing unavailable"),
    ie.ReceiptAlreadyRevoked: Problem(409, "receipt-already-revoked", "Receipt already revoked"),
    ie.ReceiptFileTooLarge: Problem(413, "receipt-file-too-large", "The file is too large to be a receipt"),
    # integrity: exchange (who is refused learns the kind, never the check that failed)
    ie.ExchangeRouteForbidden: Problem(
        403, "exchange-route-forbidden", "The peer may not use this route", expose_detail=False
    ),
    ie.ExchangeBadTarget: Problem(400, "exchange-bad-target", "The gateway does not forward this path"),
    ie.ExchangeTargetTooLong: Problem(414, "exchange-target-too-long", "The gateway path is too long"),
    ie.ExchangeRejected: Problem(
        401,
        "exchange-unauthenticated",
        "Message signature not accepted",
        expose_detail=False,
        headers=((WWW_AUTHENTICATE, SIGNATURE_CHALLENGE),),
    ),
    ie.UpstreamRejected: Problem(
        502, "exchange-bad-upstream-response", "The destination's response failed verification", expose_detail=False
    ),
    ie.PeerUnreachable: Problem(502, "exchange-peer-unreachable", "The destination peer is unreachable"),
    ie.PeerTimeout: Problem(504, "exchange-peer-timeout", "The destination peer did not answer in time"),
    ie.GatewayNotConfigured: Problem(503, "exchange-gateway-not-configured", "The gateway cannot forward this message"),
    ie.PeerNotFound: Problem(404, "exchange-unknown-peer", "Unknown peer"),
    ie.PeerAlreadyExists: Problem(409, "exchange-peer-exists", "The peer or its keyid is already registered"),
    ie.InvalidPeer: Problem(422, "exchange-invalid-peer", "Invalid peer definition"),
    # integrity: personal signing (the reason is in ``reason`` and in the audit entry)
    ie.ActivationNotFound: Problem(404, "unknown-signature-activation", "No such signature activation"),
    ie.PersonalKeyUnavailable: Problem(409, "personal-key-unavailable", "No personal key can make this signature"),
    ie.PersonalSigningRefused: Problem(409, "signature-activation-refused", "The signature activation was refused"),
    ie.UnknownPerson: Problem(404, "unknown-user", "Unknown user"),
    # integrity: request rate limits (the detail names the route class; Retry-After the wait)
    ie.RateLimited: Problem(429, "rate-limited", "Too many requests"),
    ie.RateLimiterUnavailable: Problem(503, "rate-limiter-unavailable", "The rate limiter cannot be reached now"),
    ie.IntegrityError: Problem(400, "bad-request", "Request refused"),
}


def register_problem(exc_type: type[Exception], problem: Problem) -> None:
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
    if status == 401 and not any(name.lower() == "www-authenticate" for name in headers or {}):
        # A 401 without a challenge breaks RFC 9110 §15.5.2; the API's own scheme is the default.
        headers = {**(headers or {}), WWW_AUTHENTICATE: BEARER_CHALLENGE}
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


def render_problem(problem: Problem, exc: BaseException, instance: str) -> JSONResponse:
    """The problem+json answer to ``exc`` by its row, with the headers and members the exception
    adds. The one place exceptions become answers: the handler below and the gateway's signed
    refusals (api/gateway.py) both use it."""
    return problem_response(
        problem.status,
        problem.slug,
        problem.title,
        str(exc) if problem.expose_detail else None,
        instance=instance,
        headers={**dict(problem.headers), **getattr(exc, "problem_headers", {})} or None,
        extra=getattr(exc, "problem_extra", None),
    )


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    problem = problem_for(exc)
    if problem is None:
        return await _unexpected(request, exc)
    if problem.status >= 500:
        # The service's own fault (a token, the audit log or a peer unavailable): the operator
        # needs the reason, which the caller may not get.
        get_logger().error("service_unavailable", problem=problem.slug, detail=str(exc), path=request.url.path)
    return render_problem(problem, exc, request.url.path)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    title = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
    return problem_response(
        exc.status_code,
        _slug_for_status(exc.status_code),
        title,
        detail,
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
    )


def _unparsed_media_type(request: Request) -> str | None:
    """The media type of a body that a JSON operation could not take, or None.

    FastAPI parses a body as JSON only when its Content-Type says so (``application/json``,
    ``application/*+json``); any other body reaches validation as raw bytes and fails there.
    That is the wrong media type (RFC 9110 §15.5.16: 415), not a malformed field."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    if body_field is None or isinstance(body_field.field_info, params.Form):
        return None
    declared = request.headers.get("content-type")
    if declared is None:
        sent = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        return "none" if sent else None
    media = declared.partition(";")[0].strip().lower()
    if media == JSON or (media.startswith("application/") and media.endswith("+json")):
        return None
    return media


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    media = _unparsed_media_type(request)
    if media is not None:
        return problem_response(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            f"the body must be {JSON}, not {media}",
            instance=request.url.path,
            headers={"Accept": JSON},  # RFC 9110 §12.5.1: what the operation takes
        )
    # Echo where and why, never the submitted value: it may be a password or personal data.
    errors = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return problem_response(
        422,
        "validation-error",
        "Request validation failed",
        "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:10]),
        instance=request.url.path,
        extra={"errors": errors},
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
