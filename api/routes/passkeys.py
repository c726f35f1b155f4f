"""Passkey routes: the owner's list under ``/v1/me/passkeys``; the login's and step-up's passkey
answer under ``/v1/auth``. Thin: parse, call ``integrity.passkeys``, render.

Bodies carry the browser's ``PublicKeyCredential`` in its JSON form (WebAuthn L3 §5.1.10:
``PublicKeyCredential.toJSON()``, bytes as base64url); options come back in the form
``PublicKeyCredential.parseCreationOptionsFromJSON`` / ``parseRequestOptionsFromJSON`` take.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import get_state, session_token
from api.openapi import problems
from api.rate_limit import limit_public
from api.routes.auth import LoginOut, TokenOut, client_address
from auth.passkeys import Passkey
from integrity.app_state import AppState
from integrity.passkeys import PasskeyOptions, PasskeyService

me_router = APIRouter(prefix="/v1/me/passkeys", tags=["passkeys"], dependencies=[Depends(limit_public)])
auth_router = APIRouter(prefix="/v1/auth", tags=["auth"], dependencies=[Depends(limit_public)])

_PASSKEY_ID = Path(min_length=1, max_length=64)


def get_passkeys(state: AppState = Depends(get_state)) -> PasskeyService:
    return state.passkeys


# --- models --------------------------------------------------------------------------------


class PasskeyOut(BaseModel):
    passkey_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    transports: list[str] = Field(description="how the browser said it reaches the authenticator")
    flagged_clone: bool = Field(description="refused since an answer came with a signature counter that did not grow")


class OptionsOut(BaseModel):
    public_key: dict[str, Any] = Field(
        description="PublicKeyCredentialCreationOptions or …RequestOptions in their JSON form (bytes as base64url)"
    )


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credential: dict[str, Any] = Field(description="the result of navigator.credentials.create(), as JSON")
    name: str = Field(min_length=1, max_length=200, description="what the owner calls it (1–64 characters)")


class RenameIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class MfaOptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mfa_token: str = Field(min_length=1, max_length=200)


class MfaPasskeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mfa_token: str = Field(min_length=1, max_length=200)
    credential: dict[str, Any] = Field(description="the result of navigator.credentials.get(), as JSON")
    device_token: str | None = Field(None, max_length=256)


class AssertionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credential: dict[str, Any] = Field(description="the result of navigator.credentials.get(), as JSON")


def passkey_out(p: Passkey) -> PasskeyOut:
    return PasskeyOut(
        passkey_id=p.passkey_id,
        name=p.name,
        created_at=p.created_at,
        last_used_at=p.last_used_at,
        transports=list(p.transports),
        flagged_clone=p.flagged_clone,
    )


def options_out(options: PasskeyOptions) -> OptionsOut:
    return OptionsOut(public_key=options.public_key)


# --- the owner's passkeys ------------------------------------------------------------------


@me_router.get("", response_model=list[PasskeyOut])
def list_passkeys(token: str = Depends(session_token), passkeys: PasskeyService = Depends(get_passkeys)) -> Any:
    return [passkey_out(p) for p in passkeys.list_passkeys(token)]


@me_router.post("/registration-options", response_model=OptionsOut, responses=problems(409, 422))
def registration_options(token: str = Depends(session_token), passkeys: PasskeyService = Depends(get_passkeys)) -> Any:
    """Needs TOTP on the account and a second factor within the last 5 minutes."""
    return options_out(passkeys.registration_options(token))


@me_router.post("", response_model=PasskeyOut, status_code=201, responses=problems(409, 422))
def register(
    body: RegisterIn, token: str = Depends(session_token), passkeys: PasskeyService = Depends(get_passkeys)
) -> Any:
    return passkey_out(passkeys.register(token, body.credential, body.name))


@me_router.patch("/{passkey_id}", response_model=PasskeyOut, responses=problems(404, 422))
def rename(
    body: RenameIn,
    passkey_id: str = _PASSKEY_ID,
    token: str = Depends(session_token),
    passkeys: PasskeyService = Depends(get_passkeys),
) -> Any:
    return passkey_out(passkeys.rename(token, passkey_id, body.name))


@me_router.delete("/{passkey_id}", status_code=204, responses=problems(404))
def remove(
    passkey_id: str = _PASSKEY_ID,
    token: str = Depends(session_token),
    passkeys: PasskeyService = Depends(get_passkeys),
) -> Response:
    """Needs a second factor within the last 5 minutes (else 401 ``step-up-required``)."""
    passkeys.remove(token, passkey_id)
    return Response(status_code=204)


# --- a passkey as the second factor ----------------------------------------------------------


@auth_router.post("/mfa/passkey/options", response_model=OptionsOut, responses=problems(401, 409))
def mfa_options(body: MfaOptionsIn, passkeys: PasskeyService = Depends(get_passkeys)) -> Any:
    return options_out(passkeys.login_options(body.mfa_token))


@auth_router.post(
    "/mfa/passkey", response_model=LoginOut, response_model_exclude_none=True, responses=problems(401, 429)
)
def mfa_passkey(body: MfaPasskeyIn, request: Request, passkeys: PasskeyService = Depends(get_passkeys)) -> Any:
    result = passkeys.complete_login(
        body.mfa_token, body.credential, address=client_address(request), device_token=body.device_token
    )
    return LoginOut(**result.__dict__)


@auth_router.post("/step-up/passkey/options", response_model=OptionsOut, responses=problems(409))
def step_up_options(token: str = Depends(session_token), passkeys: PasskeyService = Depends(get_passkeys)) -> Any:
    return options_out(passkeys.step_up_options(token))


@auth_router.post("/step-up/passkey", response_model=TokenOut, responses=problems(409, 429))
def step_up(
    body: AssertionIn,
    request: Request,
    token: str = Depends(session_token),
    passkeys: PasskeyService = Depends(get_passkeys),
) -> Any:
    return TokenOut(token=passkeys.step_up(token, body.credential, address=client_address(request)))
