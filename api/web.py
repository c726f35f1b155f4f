"""Server-rendered pages for people: login, MFA challenge, TOTP enrolment, "my security".

Vietnamese by default with an English toggle (``?lang=en``, remembered in a cookie). No inline
script and no external asset: one stylesheet served from here, the QR code as a ``data:`` image,
and one script file for the passkey pages alone (api/web_passkeys.py), so the page CSP
(``script-src 'self'``, no inline) holds. Forms carry a CSRF token bound to the session
(integrity/csrf.py; a forged or stale one gets a 403 page); cookies are HttpOnly,
SameSite=Strict, and ``__Host-``/Secure unless the settings turn secure cookies off for a
plain-HTTP local demo. The pages call the same use cases as the API.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.deps import get_state
from api.errors import SESSION_CHALLENGE, WWW_AUTHENTICATE
from api.passkey_texts import PASSKEY_TEXTS
from api.routes.auth import client_address, get_accounts
from auth.errors import (
    InvalidCredentials,
    LoginThrottled,
    SessionInvalid,
    StepUpRequired,
)
from auth.roles import scopes_for
from integrity.accounts import AccountService
from integrity.app_state import AppState
from integrity.csrf import csrf_tokens
from integrity.labels import (
    PRODUCT_NAME,
    event_label,
    grouped,
    parse_stamp,
    role_label,
    utc_stamp,
    vietnam_time,
)

router = APIRouter(include_in_schema=False)

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
LANGS = ("vi", "en")
_LANG_COOKIE = "bhxh_lang"
_CSRF_BYTES = 32
_DEVICE_MAX_AGE = 180 * 24 * 3600
_MFA_MAX_AGE = 300
_YEAR = 365 * 24 * 3600
_AFTER_POST = {
    "/account/totp/confirm": "/account/security",
    "/account/passkeys/new": "/account/security",
    "/account/step-up/passkey": "/account/security",
    "/mfa/passkey": "/mfa",
}
# What the security page may be asked to say (``?msg=``), after a form of api/web_passkeys.py.
NOTICES = frozenset({"passkey_added", "passkey_renamed", "passkey_removed", "step_up_done"})
PAGE_ERRORS = frozenset(
    {"step_up_needed", "passkey_failed", "passkey_exists", "passkey_bad_name", "totp_first", "bad_code"}
    | {"throttled_later", "form_expired", "passkey_none"}
)

# One table of page texts; the key is what templates ask for.
TEXTS: dict[str, tuple[str, str]] = {
    "login": ("Đăng nhập", "Sign in"),
    "username": ("Tên đăng nhập", "Username"),
    "password": ("Mật khẩu", "Password"),
    "submit_login": ("Đăng nhập", "Sign in"),
    "bad_credentials": ("Tên đăng nhập hoặc mật khẩu không đúng.", "Wrong username or password."),
    "throttled": (
        "Quá nhiều lần thử sai. Vui lòng thử lại sau {s} giây.",
        "Too many failed attempts. Try again in {s} seconds.",
    ),
    "mfa_title": ("Xác thực hai lớp", "Two-step verification"),
    "mfa_help": ("Nhập mã 6 chữ số từ ứng dụng xác thực.", "Enter the 6-digit code from your authenticator app."),
    "code": ("Mã xác thực", "Verification code"),
    "or_recovery": ("Hoặc dùng một mã khôi phục", "Or use a recovery code"),
    "recovery_code": ("Mã khôi phục", "Recovery code"),
    "verify": ("Xác nhận", "Verify"),
    "bad_code": ("Mã không đúng hoặc đã được dùng.", "The code is wrong or was already used."),
    "mfa_expired": (
        "Phiên xác thực đã hết hạn. Vui lòng đăng nhập lại.",
        "The verification step expired. Please sign in again.",
    ),
    "totp_title": ("Đăng ký ứng dụng xác thực (TOTP)", "Set up an authenticator app (TOTP)"),
    "totp_intro": (
        "Tài khoản của bạn cần xác thực hai lớp. Quét mã QR bằng ứng dụng xác thực, rồi nhập mã hiện ra.",
        "Your account needs two-step verification. Scan the QR code with an authenticator app, then enter the code it shows.",
    ),
    "totp_start": ("Bắt đầu đăng ký", "Start set-up"),
    "secret_manual": ("Hoặc nhập khóa bí mật này thủ công:", "Or type this secret key by hand:"),
    "open_in_app": (
        "Hoặc mở trực tiếp bằng ứng dụng xác thực trên thiết bị này",
        "Or open it in the authenticator app on this device",
    ),
    "qr_alt": ("Mã QR để thêm tài khoản vào ứng dụng xác thực", "QR code to add the account to an authenticator app"),
    "confirm": ("Xác nhận mã", "Confirm code"),
    "codes_title": ("Mã khôi phục của bạn", "Your recovery codes"),
    "codes_help": (
        "Lưu các mã này ở nơi an toàn. Mỗi mã chỉ dùng được một lần, khi bạn không có ứng dụng xác thực. Chúng sẽ không được hiển thị lại.",
        "Keep these codes somewhere safe. Each works once, when you do not have your authenticator app. They will not be shown again.",
    ),
    "continue": ("Tiếp tục", "Continue"),
    "security_title": ("Bảo mật tài khoản", "My security"),
    "account": ("Tài khoản", "Account"),
    "role": ("Vai trò", "Role"),
    "mfa_state": ("Xác thực hai lớp", "Two-step verification"),
    "on": ("Đang bật", "On"),
    "off": ("Chưa bật", "Off"),
    "codes_left": ("Mã khôi phục còn lại", "Recovery codes left"),
    "recovery_warning": (
        "Một mã khôi phục đã được dùng để đăng nhập vào tài khoản này. Nếu không phải bạn, hãy báo ngay cho quản trị viên.",
        "A recovery code was used to sign in to this account. If that was not you, tell an administrator at once.",
    ),
    "session_until": ("Phiên hết hạn lúc", "Session ends at"),
    "events": ("Sự kiện bảo mật gần đây", "Recent security events"),
    "when": ("Thời điểm", "When"),
    "event": ("Sự kiện", "Event"),
    "detail": ("Chi tiết", "Detail"),
    "set_up_totp": ("Đăng ký ứng dụng xác thực", "Set up an authenticator app"),
    "personal_signing": ("Ký số cá nhân", "Personal signing"),
    "logout": ("Đăng xuất", "Sign out"),
    "audit_report": ("Báo cáo kiểm tra nhật ký kiểm toán", "Audit log verification report"),
    "lang_other": ("English", "Tiếng Việt"),
    "step_up_needed": (
        "Cần xác thực lại bằng mã trước khi thay đổi.",
        "Verify with a code again before changing this.",
    ),
    "form_expired": ("Biểu mẫu đã hết hạn. Vui lòng thử lại.", "The form expired. Please try again."),
    "demo_note": (
        "Không dùng cho môi trường thật khi chạy chế độ demo.",
        "Not for production when running in demo mode.",
    ),
    **PASSKEY_TEXTS,
}

CSS = """
*{box-sizing:border-box}
body{font-family:"DejaVu Sans","Noto Sans",Arial,sans-serif;margin:0;background:#f3f6f9;color:#1d2733}
header{background:#0b5394;color:#fff;padding:.8rem 1.2rem;display:flex;justify-content:space-between;align-items:center}
header a{color:#fff}
main{max-width:44rem;margin:2rem auto;background:#fff;padding:1.5rem 2rem;border-radius:6px;box-shadow:0 1px 3px #0002}
label{display:block;margin:.8rem 0 .3rem;font-weight:bold}
input[type=text],input[type=password]{width:100%;padding:.55rem;font-size:1rem;border:1px solid #8a99a8;border-radius:4px}
button{margin-top:1rem;padding:.55rem 1.3rem;font-size:1rem;background:#0b5394;color:#fff;border:0;border-radius:4px;cursor:pointer}
.error{background:#fde8e8;border-left:4px solid #c0392b;padding:.6rem .9rem}
.warning{background:#fff4d6;border-left:4px solid #d68910;padding:.6rem .9rem}
.codes{font-family:"DejaVu Sans Mono",monospace;font-size:1.15rem;columns:2}
.secret{font-family:"DejaVu Sans Mono",monospace;font-size:1.2rem;letter-spacing:.05em;word-spacing:.4em}
.subtitle{display:block;font-size:.8rem;opacity:.85}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #dde3e9;padding:.35rem;text-align:left;font-size:.9rem}
.qr{display:block;margin:1rem auto;width:16rem;height:16rem}
.ok{background:#e6f4ea;border-left:4px solid #1e7e34;padding:.6rem .9rem}
.hash{font-family:"DejaVu Sans Mono",monospace;word-break:break-all}
input[type=file]{display:block;margin:.4rem 0;font-size:1rem}
"""


def _secure(state: AppState) -> bool:
    return bool(state.settings.secure_cookies)


def _cookie_names(secure: bool) -> dict[str, str]:
    # __Host- cookies must be Secure, path /, no Domain (RFC 6265bis §4.1.3.2).
    prefix = "__Host-" if secure else ""
    return {n: f"{prefix}bhxh_{n}" for n in ("session", "mfa", "device", "csrf")}


class _Page:
    """What one request needs to render: language, cookie names, CSRF token.

    A page module with texts of its own names them in ``own_texts`` on its subclass; they are
    looked up before the shared table, and none may hide one of the shared texts."""

    own_texts: ClassVar[Mapping[str, tuple[str, str]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        assert not set(cls.own_texts) & set(TEXTS), f"a text of {cls.__name__} would hide a page text"

    def __init__(self, request: Request, state: AppState) -> None:
        self.request = request
        self.secure = _secure(state)
        self.names = _cookie_names(self.secure)
        asked = request.query_params.get("lang")
        self.lang_changed = asked in LANGS
        self.lang = asked if asked in LANGS else request.cookies.get(_LANG_COOKIE, "vi")
        if self.lang not in LANGS:
            self.lang = "vi"
        # The CSRF cookie only binds a form to this browser before sign-in; the token is an HMAC
        # of the session (or of that cookie), never the cookie itself (integrity/csrf.py).
        self.tokens = csrf_tokens(state)
        self.pre_session = request.cookies.get(self.names["csrf"], "")
        self.new_csrf = len(self.pre_session) < 32
        if self.new_csrf:
            self.pre_session = secrets.token_urlsafe(_CSRF_BYTES)
        self.csrf = self.tokens.issue(session=self.session(), pre_session=self.pre_session)
        self.demo = bool(getattr(getattr(state, "keys", None), "demo", False))

    def t(self, key: str, **values: object) -> str:
        vi, en = self.own_texts[key] if key in self.own_texts else TEXTS[key]
        text = vi if self.lang == "vi" else en
        return text.format(**values) if values else text

    def event_text(self, action: str) -> str:
        return event_label(action, self.lang)

    def role_text(self, role: str) -> str:
        return role_label(role, self.lang)

    def vn_time(self, moment: datetime | str) -> str:
        """Vietnam time for people; an audit ``ts`` string or a datetime."""
        return vietnam_time(parse_stamp(moment) if isinstance(moment, str) else moment, self.lang)

    def cookie(self, response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
        response.set_cookie(
            self.names[name], value, max_age=max_age, path="/", secure=self.secure, httponly=True, samesite="strict"
        )

    def forget(self, response: Response, name: str) -> None:
        response.delete_cookie(self.names[name], path="/", secure=self.secure, httponly=True, samesite="strict")

    def finish(self, response: Response) -> Response:
        if self.new_csrf:
            self.cookie(response, "csrf", self.pre_session)
        if self.lang_changed:
            response.set_cookie(
                _LANG_COOKIE, self.lang, max_age=_YEAR, path="/", secure=self.secure, httponly=True, samesite="strict"
            )
        return response

    def render(
        self, template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> Response:
        html = _TEMPLATES.get_template(template).render(
            t=self.t,
            lang=self.lang,
            csrf=self.csrf,
            event_text=self.event_text,
            role_text=self.role_text,
            vn_time=self.vn_time,
            utc_stamp=utc_stamp,
            grouped=grouped,
            product=PRODUCT_NAME.in_lang(self.lang),
            product_other=PRODUCT_NAME.in_lang("en" if self.lang == "vi" else "vi"),
            demo=self.demo,
            other_lang="en" if self.lang == "vi" else "vi",
            path=self._toggle_path(),
            **context,
        )
        if status == 401:
            # RFC 9110 §15.5.2: a 401 names how to authenticate, here the session these forms open.
            headers = {WWW_AUTHENTICATE: SESSION_CHALLENGE, **(headers or {})}
        return self.finish(HTMLResponse(html, status_code=status, headers=headers))

    def _toggle_path(self) -> str:
        # The language link is a GET of this page; a page shown in answer to a POST that has
        # no GET twin points at where the flow continues instead.
        path = self.request.url.path
        return _AFTER_POST.get(path, path) if self.request.method == "POST" else path

    def redirect(self, to: str) -> Response:
        return self.finish(RedirectResponse(to, status_code=303))

    def throttled(self, template: str, exc: LoginThrottled, **context: Any) -> Response:
        """429 with ``Retry-After`` (RFC 9110 §10.2.3), the page saying when to try again."""
        return self.render(
            template,
            status=429,
            headers={"Retry-After": str(exc.retry_after)},
            error=self.t("throttled", s=exc.retry_after),
            **context,
        )

    def csrf_ok(self, submitted: str) -> bool:
        """The token of this request's session (or, before sign-in, of its CSRF cookie)."""
        cookie = self.request.cookies.get(self.names["csrf"], "")
        return self.tokens.check(submitted, session=self.session(), pre_session=cookie)

    def renew_csrf(self, session_token: str) -> None:
        """At a sign-in or a rotated session: the forms of this answer carry the new session's
        token, and the pre-session cookie is replaced, so no token seen before is worth anything."""
        self.pre_session, self.new_csrf = secrets.token_urlsafe(_CSRF_BYTES), True
        self.csrf = self.tokens.issue(session=session_token, pre_session=self.pre_session)

    def form_refused(self, back: str) -> Response:
        """403: the form's token is not this session's (forged, or from before a sign-in)."""
        return self.render("form_expired.html", status=403, back=back, error=self.t("form_expired"))

    def session(self) -> str:
        return self.request.cookies.get(self.names["session"], "")


# Other page modules (the public receipt check) build on the same page context.
Page = _Page


def _page(request: Request, state: AppState = Depends(get_state)) -> _Page:
    return _Page(request, state)


@router.get("/static/web.css")
def stylesheet() -> Response:
    return Response(CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


# The passkey pages' script: a file, never inline, so the page CSP (script-src 'self') holds.
_PASSKEYS_JS = (Path(__file__).parent / "static" / "passkeys.js").read_text(encoding="utf-8")


@router.get("/static/passkeys.js")
def passkeys_script() -> Response:
    return Response(_PASSKEYS_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/")
def home(page: _Page = Depends(_page)) -> Response:
    return page.redirect("/account/security" if page.session() else "/login")


@router.get("/login")
def login_form(page: _Page = Depends(_page)) -> Response:
    return page.render("login.html")


@router.post("/login")
def login_submit(
    request: Request,
    username: str = Form(max_length=200),
    password: str = Form(max_length=1024),
    csrf: str = Form(max_length=100),
    page: _Page = Depends(_page),
    accounts: AccountService = Depends(get_accounts),
) -> Response:
    if not page.csrf_ok(csrf):
        return page.render("login.html", status=403, error=page.t("form_expired"))
    try:
        result = accounts.login(
            username, password, address=client_address(request), device_token=request.cookies.get(page.names["device"])
        )
    except InvalidCredentials:
        return page.render("login.html", status=401, error=page.t("bad_credentials"), username=username)
    except LoginThrottled as exc:
        return page.throttled("login.html", exc, username=username)
    if result.mfa_required and result.mfa_token:
        response = page.redirect("/mfa")
        page.cookie(response, "mfa", result.mfa_token, max_age=_MFA_MAX_AGE)
        return response
    return _signed_in(
        page,
        result.token or "",
        result.device_token,
        "/account/totp" if result.enrolment_required else "/account/security",
    )


def _signed_in(page: _Page, token: str, device_token: str | None, to: str) -> Response:
    # A new CSRF token at the privilege change: one seen before sign-in is worth nothing after.
    page.renew_csrf(token)
    response = page.redirect(to)
    page.cookie(response, "session", token)
    page.forget(response, "mfa")
    if device_token:
        page.cookie(response, "device", device_token, max_age=_DEVICE_MAX_AGE)
    return response


@router.get("/mfa")
def mfa_form(page: _Page = Depends(_page)) -> Response:
    if not page.request.cookies.get(page.names["mfa"]):
        return page.redirect("/login")
    return page.render("mfa.html")


@router.post("/mfa")
def mfa_submit(
    request: Request,
    code: str = Form("", max_length=16),
    recovery_code: str = Form("", max_length=64),
    csrf: str = Form(max_length=100),
    page: _Page = Depends(_page),
    accounts: AccountService = Depends(get_accounts),
) -> Response:
    mfa_token = request.cookies.get(page.names["mfa"], "")
    if not page.csrf_ok(csrf):
        return page.render("mfa.html", status=403, error=page.t("form_expired"))
    if not mfa_token:
        return page.render("login.html", status=401, error=page.t("mfa_expired"))
    try:
        result = accounts.complete_mfa(
            mfa_token,
            code=code.strip() or None,
            recovery_code=recovery_code.strip() or None,
            address=client_address(request),
            device_token=request.cookies.get(page.names["device"]),
        )
    except InvalidCredentials:
        return page.render("mfa.html", status=401, error=page.t("bad_code"))
    except LoginThrottled as exc:
        return page.throttled("mfa.html", exc)
    return _signed_in(page, result.token or "", result.device_token, "/account/security")


@router.get("/account/totp")
def totp_page(page: _Page = Depends(_page), accounts: AccountService = Depends(get_accounts)) -> Response:
    try:
        status = accounts.status(page.session())
    except SessionInvalid:
        return page.redirect("/login")
    return page.render("totp.html", status_info=status, enrolment=None)


@router.post("/account/totp")
def totp_start(
    csrf: str = Form(max_length=100), page: _Page = Depends(_page), accounts: AccountService = Depends(get_accounts)
) -> Response:
    if not page.csrf_ok(csrf):
        return page.form_refused("/account/totp")
    try:
        enrolment = accounts.begin_totp_enrolment(page.session())
    except SessionInvalid:
        return page.redirect("/login")
    except StepUpRequired:
        return page.render("totp.html", status=401, status_info=None, enrolment=None, error=page.t("step_up_needed"))
    return page.render(
        "totp.html",
        status_info=None,
        enrolment=enrolment,
        qr_uri=_svg_data_uri(enrolment.qr_svg),
    )


@router.post("/account/totp/confirm")
def totp_confirm(
    code: str = Form(max_length=16),
    csrf: str = Form(max_length=100),
    page: _Page = Depends(_page),
    accounts: AccountService = Depends(get_accounts),
) -> Response:
    if not page.csrf_ok(csrf):
        return page.form_refused("/account/totp")
    try:
        done = accounts.confirm_totp_enrolment(page.session(), code)
    except SessionInvalid:
        return page.redirect("/login")
    except (InvalidCredentials, LoginThrottled):
        return page.render("totp.html", status=400, status_info=None, enrolment=None, error=page.t("bad_code"))
    page.renew_csrf(done.token)  # new privilege, new token
    response = page.render("recovery_codes.html", codes=done.recovery_codes)
    page.cookie(response, "session", done.token)
    return response


@router.get("/account/security")
def security_page(
    msg: str = "",
    page: _Page = Depends(_page),
    accounts: AccountService = Depends(get_accounts),
    state: AppState = Depends(get_state),
) -> Response:
    try:
        status = accounts.status(page.session())
        events = accounts.security_events(page.session())
        # An enrolment-only session has no passkeys to show (it may only set up TOTP).
        keys = state.passkeys.list_passkeys(page.session()) if status.session_kind == "full" else []
    except SessionInvalid:
        return page.redirect("/login")
    notice = page.t(msg) if msg in NOTICES else None
    error = page.t(msg) if msg in PAGE_ERRORS else None
    # A role that reads the audit log (an auditor) is shown the way to its report page.
    reads_audit = "audit:read" in scopes_for(status.role)
    return page.render(
        "security.html",
        status_info=status,
        events=events,
        reads_audit=reads_audit,
        passkeys=keys,
        notice=notice,
        error=error,
    )


@router.post("/logout")
def logout(
    csrf: str = Form(max_length=100), page: _Page = Depends(_page), accounts: AccountService = Depends(get_accounts)
) -> Response:
    if not page.csrf_ok(csrf):
        # A forged cross-site post must not sign the person out either: the cookie stays.
        return page.form_refused("/account/security")
    with contextlib.suppress(SessionInvalid):  # already gone: signing out again is fine
        accounts.logout(page.session())
    response = page.redirect("/login")
    page.forget(response, "session")
    return response


def _svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;charset=utf-8," + quote(svg, safe="")


__all__ = ["CSS", "TEXTS", "Page", "router"]
