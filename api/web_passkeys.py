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
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from api.deps import get_state
from api.routes.auth import client_address
from api.web import Page, _signed_in
from auth.errors import (
    AuthError,
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

    def security_form(
        self, csrf: str, act: Callable[[str], Response], refusals: Mapping[type[AuthError], str]
    ) -> Response:
        """A form of the security page: its CSRF token, then ``act`` on the session. A session that
        is gone goes to the sign-in page; a refusal named in ``refusals`` back to the security
        page with its message key (the first kind that matches, as in an ``except`` chain)."""
        if not self.page.csrf_ok(csrf):
            return self.back("form_expired")
        try:
            return act(self.page.session())
        except SessionInvalid:
            return self.page.redirect("/login")
        except tuple(refusals) as exc:
            return self.back(next(msg for kind, msg in refusals.items() if isinstance(exc, kind)))

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
    return ctx.security_form(
        csrf,
        lambda session: ctx.ceremony(
            ctx.passkeys.registration_options(session),
            create=True,
            action="/account/passkeys",
            back=SECURITY,
            name=name.strip(),
        ),
        {StepUpRequired: "step_up_needed", MfaNotEnrolled: "totp_first", PasskeyRejected: "passkey_failed"},
    )


@router.post("/account/passkeys")
def add_finish(
    name: str = Form(max_length=_NAME_CHARS),
    credential: str = Form(max_length=_CREDENTIAL_CHARS),
    csrf: str = Form(max_length=100),
    ctx: _Ctx = Depends(_ctx),
) -> Response:
    def add(session: str) -> Response:
        ctx.passkeys.register(session, credential, name)
        return ctx.back("passkey_added")

    return ctx.security_form(
        csrf,
        add,
        {
            StepUpRequired: "step_up_needed",
            InvalidPasskeyName: "passkey_bad_name",
            PasskeyAlreadyRegistered: "passkey_exists",
            PasskeyRejected: "passkey_failed",
        },
    )


@router.post("/account/passkeys/{passkey_id}/rename")
def rename(
    passkey_id: str,
    name: str = Form(max_length=_NAME_CHARS),
    csrf: str = Form(max_length=100),
    ctx: _Ctx = Depends(_ctx),
) -> Response:
    def rename_it(session: str) -> Response:
        ctx.passkeys.rename(session, passkey_id[:64], name)
        return ctx.back("passkey_renamed")

    return ctx.security_form(
        csrf, rename_it, {InvalidPasskeyName: "passkey_bad_name", PasskeyNotFound: "passkey_failed"}
    )


@router.post("/account/passkeys/{passkey_id}/remove")
def remove(passkey_id: str, csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)) -> Response:
    def remove_it(session: str) -> Response:
        ctx.passkeys.remove(session, passkey_id[:64])
        return ctx.back("passkey_removed")

    return ctx.security_form(csrf, remove_it, {StepUpRequired: "step_up_needed", PasskeyNotFound: "passkey_failed"})


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
    return ctx.security_form(
        csrf,
        lambda session: _stepped_up(
            ctx, ctx.passkeys.accounts.step_up(session, code=code.strip(), address=ctx.address)
        ),
        {InvalidCredentials: "bad_code", LoginThrottled: "throttled_later", MfaNotEnrolled: "throttled_later"},
    )


@router.post("/account/step-up/passkey")
def step_up_start(csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)) -> Response:
    return ctx.security_form(
        csrf,
        lambda session: ctx.ceremony(
            ctx.passkeys.step_up_options(session),
            create=False,
            action="/account/step-up/passkey/finish",
            back=SECURITY,
        ),
        {MfaNotEnrolled: "passkey_none"},
    )


@router.post("/account/step-up/passkey/finish")
def step_up_finish(
    credential: str = Form(max_length=_CREDENTIAL_CHARS), csrf: str = Form(max_length=100), ctx: _Ctx = Depends(_ctx)
) -> Response:
    return ctx.security_form(
        csrf,
        lambda session: _stepped_up(ctx, ctx.passkeys.step_up(session, credential, address=ctx.address)),
        {InvalidCredentials: "passkey_failed", LoginThrottled: "throttled_later", MfaNotEnrolled: "throttled_later"},
    )


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
        return page.throttled("mfa.html", exc)
    return _signed_in(page, result.token or "", result.device_token, SECURITY)


__all__ = ["router"]
