"""People's login, second factor, TOTP enrolment, step-up and session routes (``/v1/auth``).

Thin: parse, call ``integrity.accounts``, render. Every refusal is a domain exception mapped in
api/errors.py; login and MFA failures all look alike from outside (401, or 429 + Retry-After).
``require_step_up`` is the one dependency every sensitive route (personal signing) reuses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Principal, get_state, session_token
from api.openapi import problems
from api.rate_limit import limit_public, source_address
from integrity.accounts import AccountService, UserPrincipal
from integrity.app_state import AppState

# No scope here: each call spends the sender's address budget (api/rate_limit.py).
router = APIRouter(prefix="/v1/auth", tags=["auth"], dependencies=[Depends(limit_public)])

_MAX_SECRET = 1024  # passwords up to 256 characters after NFKC; anything longer is not one


def get_accounts(state: AppState = Depends(get_state)) -> AccountService:
    return state.accounts


def client_address(request: Request) -> str:
    """The sender's address for the login throttle: the one the rate limits key by."""
    return source_address(request)


def principal_of(user: UserPrincipal) -> Principal:
    return Principal("user", user.id, user.name, user.scopes)


def require_step_up(token: str = Depends(session_token), accounts: AccountService = Depends(get_accounts)) -> Principal:
    """A person whose session passed a second factor within the last 5 minutes; else 401
    ``step-up-required`` (RFC 9470 ``insufficient_user_authentication``). API keys never pass:
    signing with a person's own key needs the person."""
    return principal_of(accounts.require_step_up(token))


# --- models --------------------------------------------------------------------------------


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=_MAX_SECRET)
    device_token: str | None = Field(None, max_length=256, description="from an earlier login on this device")


class LoginOut(BaseModel):
    token: str | None = None
    mfa_required: bool = False
    mfa_token: str | None = None
    enrolment_required: bool = Field(False, description="the session may only enrol TOTP")
    device_token: str | None = None


class MfaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mfa_token: str = Field(min_length=1, max_length=200)
    code: str | None = Field(None, max_length=16)
    recovery_code: str | None = Field(None, max_length=64)
    device_token: str | None = Field(None, max_length=256)


class EnrolOut(BaseModel):
    otpauth_uri: str
    qr_svg: str
    secret: str = Field(description="base32, for manual entry when the QR code cannot be scanned")


class CodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=16)


class ConfirmOut(BaseModel):
    recovery_codes: list[str] = Field(description="shown once; only salted hashes are stored")
    token: str = Field(description="the rotated session token; the old one no longer works")


class StepUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str | None = Field(None, max_length=16)
    recovery_code: str | None = Field(None, max_length=64)


class TokenOut(BaseModel):
    token: str


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str]


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=_MAX_SECRET)
    new_password: str = Field(min_length=1, max_length=_MAX_SECRET)


class MeOut(BaseModel):
    username: str
    role: str
    mfa_enabled: bool
    mfa_required: bool
    enrolment_pending: bool
    session_kind: str
    session_expires_at: datetime
    step_up_valid: bool
    recovery_codes_left: int
    recovery_code_used: bool = Field(description="a recovery code was used since the codes were issued")
    recovery_code_used_at: datetime | None


class EventOut(BaseModel):
    seq: int
    ts: str
    action: str
    data: dict[str, Any]


# --- routes --------------------------------------------------------------------------------


@router.post("/login", response_model=LoginOut, response_model_exclude_none=True, responses=problems(401, 429))
def login(body: LoginIn, request: Request, accounts: AccountService = Depends(get_accounts)) -> Any:
    result = accounts.login(
        body.username, body.password, address=client_address(request), device_token=body.device_token
    )
    return LoginOut(**result.__dict__)


@router.post("/mfa", response_model=LoginOut, response_model_exclude_none=True, responses=problems(401, 429))
def mfa(body: MfaIn, request: Request, accounts: AccountService = Depends(get_accounts)) -> Any:
    result = accounts.complete_mfa(
        body.mfa_token,
        code=body.code,
        recovery_code=body.recovery_code,
        address=client_address(request),
        device_token=body.device_token,
    )
    return LoginOut(**result.__dict__)


@router.post("/totp/enroll", response_model=EnrolOut)
def totp_enroll(token: str = Depends(session_token), accounts: AccountService = Depends(get_accounts)) -> Any:
    enrolment = accounts.begin_totp_enrolment(token)
    return EnrolOut(otpauth_uri=enrolment.otpauth_uri, qr_svg=enrolment.qr_svg, secret=enrolment.secret_b32)


@router.post("/totp/confirm", response_model=ConfirmOut, responses=problems(409, 429))
def totp_confirm(
    body: CodeIn, token: str = Depends(session_token), accounts: AccountService = Depends(get_accounts)
) -> Any:
    done = accounts.confirm_totp_enrolment(token, body.code)
    return ConfirmOut(recovery_codes=done.recovery_codes, token=done.token)


@router.post("/step-up", response_model=TokenOut, responses=problems(409, 429))
def step_up(
    body: StepUpIn,
    request: Request,
    token: str = Depends(session_token),
    accounts: AccountService = Depends(get_accounts),
) -> Any:
    token = accounts.step_up(token, code=body.code, recovery_code=body.recovery_code, address=client_address(request))
    return TokenOut(token=token)


@router.post("/recovery-codes", response_model=RecoveryCodesOut, responses=problems(409))
def regenerate_recovery_codes(
    token: str = Depends(session_token), accounts: AccountService = Depends(get_accounts)
) -> Any:
    return RecoveryCodesOut(recovery_codes=accounts.regenerate_recovery_codes(token))


@router.post("/password", response_model=TokenOut, responses=problems(422, 429))
def change_password(
    body: PasswordIn,
    request: Request,
    token: str = Depends(session_token),
    accounts: AccountService = Depends(get_accounts),
) -> Any:
    token = accounts.change_password(token, body.current_password, body.new_password, address=client_address(request))
    return TokenOut(token=token)


@router.post("/logout", status_code=204)
def logout(token: str = Depends(session_token), accounts: AccountService = Depends(get_accounts)) -> Response:
    accounts.logout(token)
    return Response(status_code=204)


@router.get("/me", response_model=MeOut)
def me(token: str = Depends(session_token), accounts: AccountService = Depends(get_accounts)) -> Any:
    status = accounts.status(token)
    return MeOut(**status.__dict__, recovery_code_used=status.recovery_code_used_at is not None)


@router.get("/events", response_model=list[EventOut])
def events(token: str = Depends(session_token), accounts: AccountService = Depends(get_accounts)) -> Any:
    return [EventOut(seq=e.seq, ts=e.ts, action=e.action, data=dict(e.data)) for e in accounts.security_events(token)]
