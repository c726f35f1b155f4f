"""The passkey pages: add, rename and remove passkeys on "my security", a step-up there (a TOTP
code or a passkey), and "use a passkey" on the MFA page of a login.

No fetch from script: each ceremony is a form. Its first POST asks ``integrity.passkeys`` for
the options and renders api/templates/passkey.html with them in a ``data-`` attribute; the page's
script (api/static/passkeys.js, a file, for the CSP) runs ``navigator.credentials`` when the
button is pressed and posts the answer back in the same form, with the CSRF token. The
changes on the security page end with a redirect to it, with a message key (``?msg=``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from api.deps import get_state
from api.routes.auth import client_address
from api.web import Page, _signed_in
from auth.errors import (
    InvalidCredentials,
    InvalidPasskeyName,
    LoginThrottled,
    MfaNotEnrolled,
    PasskeyAlreadyRegistered,
    PasskeyNotFound,
    PasskeyRejected,
    SessionInvalid,
    StepUpRequired,
)
from integrity.app_state import AppState
from integrity.passkeys import PasskeyOptions, PasskeyService

router = APIRouter(include_in_schema=False)

SECURITY = "/account/security"
_CREDENTIAL_CHARS = 64 * 1024
_NAME_CHARS = 200


class _Ctx:
    """One request: the page context and the passkey use cases."""

    def __init__(self, request: Request, state: AppState) -> None:
        self.page = Page(request, state)
        self.passkeys: PasskeyService = state.passkeys
        self.address = client_address(request)

    def back(self, msg: str) -> Response:
        return self.page.redirect(f"{SECURITY}?msg={msg}")

    def ceremony(self, options: PasskeyOptions, *, create: bool, action: str, back: str, **extra: Any) -> Response:
        page = self.page
        return page.render(
            "passkey.html",
            heading=page.t("add_passkey" if create else "use_passkey"),
            button=page.t("create_passkey" if create else "use_passkey"),
            ceremony="create" if create else "get",
            options_json=json.dumps(options.public_key, separators=(",", ":")),
            action=action,
            back=back,
            **extra,
        )


def _ctx(request: Request, state: AppState = Depends(get_state)) -> _Ctx:
    return _Ctx(request, state)


# --- my security: add, rename, remove ----------------------------------------------------------


@router.post("/account/passkeys/new")
def add_start(
    name: str = Form(max_length=_NAME_CHARS), csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)
) -> Response:
    if not ctx.page.csrf_ok(csrf):
        return ctx.back("form_expired")
    try:
        options = ctx.passkeys.registration_options(ctx.page.session())
    except SessionInvalid:
        return ctx.page.redirect("/login")
    except StepUpRequired:
        return ctx.back("step_up_needed")
    except MfaNotEnrolled:
        return ctx.back("totp_first")
    except PasskeyRejected:
        return ctx.back("passkey_failed")
    return ctx.ceremony(options, create=True, action="/account/passkeys", back=SECURITY, name=name.strip())


@router.post("/account/passkeys")
def add_finish(
    name: str = Form(max_length=_NAME_CHARS),
    credential: str = Form(max_length=_CREDENTIAL_CHARS),
    csrf: str = Form(max_length=100),
    ctx: _Ctx = Depends(_ctx),
) -> Response:
    if not ctx.page.csrf_ok(csrf):
        return ctx.back("form_expired")
    try:
        ctx.passkeys.register(ctx.page.session(), credential, name)
    except SessionInvalid:
        return ctx.page.redirect("/login")
    except StepUpRequired:
        return ctx.back("step_up_needed")
    except InvalidPasskeyName:
        return ctx.back("passkey_bad_name")
    except PasskeyAlreadyRegistered:
        return ctx.back("passkey_exists")
    except PasskeyRejected:
        return ctx.back("passkey_failed")
    return ctx.back("passkey_added")


@router.post("/account/passkeys/{passkey_id}/rename")
def rename(
    passkey_id: str,
    name: str = Form(max_length=_NAME_CHARS),
    csrf: str = Form(max_length=100),
    ctx: _Ctx = Depends(_ctx),
) -> Response:
    if not ctx.page.csrf_ok(csrf):
        return ctx.back("form_expired")
    try:
        ctx.passkeys.rename(ctx.page.session(), passkey_id[:64], name)
    except SessionInvalid:
        return ctx.page.redirect("/login")
    except InvalidPasskeyName:
        return ctx.back("passkey_bad_name")
    except PasskeyNotFound:
        return ctx.back("passkey_failed")
    return ctx.back("passkey_renamed")


@router.post("/account/passkeys/{passkey_id}/remove")
def remove(passkey_id: str, csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)) -> Response:
    if not ctx.page.csrf_ok(csrf):
        return ctx.back("form_expired")
    try:
        ctx.passkeys.remove(ctx.page.session(), passkey_id[:64])
    except SessionInvalid:
        return ctx.page.redirect("/login")
    except StepUpRequired:
        return ctx.back("step_up_needed")
    except PasskeyNotFound:
        return ctx.back("passkey_failed")
    return ctx.back("passkey_removed")


# --- my security: step-up --------------------------------------------------------------------


def _stepped_up(ctx: _Ctx, token: str) -> Response:
    page = ctx.page
    page.renew_csrf(token)  # rotated session, new token
    response = ctx.back("step_up_done")
    page.cookie(response, "session", token)
    return response


@router.post("/account/step-up")
def step_up_code(
    code: str = Form(max_length=16), csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)
) -> Response:
    if not ctx.page.csrf_ok(csrf):
        return ctx.back("form_expired")
    try:
        token = ctx.passkeys.accounts.step_up(ctx.page.session(), code=code.strip(), address=ctx.address)
    except SessionInvalid:
        return ctx.page.redirect("/login")
    except InvalidCredentials:
        return ctx.back("bad_code")
    except (LoginThrottled, MfaNotEnrolled):
        return ctx.back("throttled_later")
    return _stepped_up(ctx, token)


@router.post("/account/step-up/passkey")
def step_up_start(csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)) -> Response:
    if not ctx.page.csrf_ok(csrf):
        return ctx.back("form_expired")
    try:
        options = ctx.passkeys.step_up_options(ctx.page.session())
    except SessionInvalid:
        return ctx.page.redirect("/login")
    except MfaNotEnrolled:
        return ctx.back("passkey_none")
    return ctx.ceremony(options, create=False, action="/account/step-up/passkey/finish", back=SECURITY)


@router.post("/account/step-up/passkey/finish")
def step_up_finish(
    credential: str = Form(max_length=_CREDENTIAL_CHARS), csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)
) -> Response:
    if not ctx.page.csrf_ok(csrf):
        return ctx.back("form_expired")
    try:
        token = ctx.passkeys.step_up(ctx.page.session(), credential, address=ctx.address)
    except SessionInvalid:
        return ctx.page.redirect("/login")
    except InvalidCredentials:
        return ctx.back("passkey_failed")
    except (LoginThrottled, MfaNotEnrolled):
        return ctx.back("throttled_later")
    return _stepped_up(ctx, token)


# --- the login's second factor -----------------------------------------------------------------


@router.post("/mfa/passkey")
def mfa_start(csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)) -> Response:
    page = ctx.page
    mfa_token = page.request.cookies.get(page.names["mfa"], "")
    if not page.csrf_ok(csrf):
        return page.render("mfa.html", status=400, error=page.t("form_expired"))
    try:
        options = ctx.passkeys.login_options(mfa_token)
    except InvalidCredentials:
        return page.render("login.html", status=401, error=page.t("mfa_expired"))
    except MfaNotEnrolled:
        return page.render("mfa.html", status=409, error=page.t("passkey_none"))
    return ctx.ceremony(options, create=False, action="/mfa/passkey/finish", back="/mfa")


@router.post("/mfa/passkey/finish")
def mfa_finish(
    credential: str = Form(max_length=_CREDENTIAL_CHARS), csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)
) -> Response:
    page = ctx.page
    mfa_token = page.request.cookies.get(page.names["mfa"], "")
    if not page.csrf_ok(csrf):
        return page.render("mfa.html", status=400, error=page.t("form_expired"))
    if not mfa_token:
        return page.render("login.html", status=401, error=page.t("mfa_expired"))
    try:
        result = ctx.passkeys.complete_login(
            mfa_token, credential, address=ctx.address, device_token=page.request.cookies.get(page.names["device"])
        )
    except InvalidCredentials:
        return page.render("mfa.html", status=401, error=page.t("passkey_failed"))
    except LoginThrottled as exc:
        return page.render(
            "mfa.html",
            status=429,
            headers={"Retry-After": str(exc.retry_after)},
            error=page.t("throttled", s=exc.retry_after),
        )
    return _signed_in(page, result.token or "", result.device_token, SECURITY)


__all__ = ["router"]
