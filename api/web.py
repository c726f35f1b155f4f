"""Server-rendered pages for people: login, MFA challenge, TOTP enrolment, "my security".

Vietnamese by default with an English toggle (``?lang=en``, remembered in a cookie). No script
at all and no external asset: one stylesheet served from here, the QR code as a ``data:`` image,
so the page CSP (``script-src 'self'``, no inline) holds. Forms carry a double-submit CSRF
token; cookies are HttpOnly, SameSite=Strict, and ``__Host-``/Secure unless the settings turn
secure cookies off for a plain-HTTP local demo. The pages call the same use cases as the API.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.deps import get_state
from api.routes.auth import client_address, get_accounts
from auth.errors import (
    InvalidCredentials,
    LoginThrottled,
    SessionInvalid,
    StepUpRequired,
)
from integrity.accounts import AccountService
from integrity.app_state import AppState
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
_AFTER_POST = {"/account/totp/confirm": "/account/security"}

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
    "logout": ("Đăng xuất", "Sign out"),
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
"""


def _secure(state: AppState) -> bool:
    return bool(state.settings.secure_cookies)


def _cookie_names(secure: bool) -> dict[str, str]:
    # __Host- cookies must be Secure, path /, no Domain (RFC 6265bis §4.1.3.2).
    prefix = "__Host-" if secure else ""
    return {n: f"{prefix}bhxh_{n}" for n in ("session", "mfa", "device", "csrf")}


class _Page:
    """What one request needs to render: language, cookie names, CSRF token."""

    def __init__(self, request: Request, state: AppState) -> None:
        self.request = request
        self.secure = _secure(state)
        self.names = _cookie_names(self.secure)
        asked = request.query_params.get("lang")
        self.lang_changed = asked in LANGS
        self.lang = asked if asked in LANGS else request.cookies.get(_LANG_COOKIE, "vi")
        if self.lang not in LANGS:
            self.lang = "vi"
        existing = request.cookies.get(self.names["csrf"], "")
        self.new_csrf = len(existing) < 32
        self.csrf = secrets.token_urlsafe(_CSRF_BYTES) if self.new_csrf else existing
        self.demo = bool(getattr(getattr(state, "keys", None), "demo", False))

    def t(self, key: str, **values: object) -> str:
        vi, en = TEXTS[key]
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
            self.cookie(response, "csrf", self.csrf)
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
        return self.finish(HTMLResponse(html, status_code=status, headers=headers))

    def _toggle_path(self) -> str:
        # The language link is a GET of this page; a page shown in answer to a POST that has
        # no GET twin points at where the flow continues instead.
        path = self.request.url.path
        return _AFTER_POST.get(path, path) if self.request.method == "POST" else path

    def redirect(self, to: str) -> Response:
        return self.finish(RedirectResponse(to, status_code=303))

    def csrf_ok(self, submitted: str) -> bool:
        cookie = self.request.cookies.get(self.names["csrf"], "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), submitted.encode())

    def session(self) -> str:
        return self.request.cookies.get(self.names["session"], "")


def _page(request: Request, state: AppState = Depends(get_state)) -> _Page:
    return _Page(request, state)


@router.get("/static/web.css")
def stylesheet() -> Response:
    return Response(CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


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
        return page.render("login.html", status=400, error=page.t("form_expired"))
    try:
        result = accounts.login(
            username, password, address=client_address(request), device_token=request.cookies.get(page.names["device"])
        )
    except InvalidCredentials:
        return page.render("login.html", status=401, error=page.t("bad_credentials"), username=username)
    except LoginThrottled as exc:
        return page.render(
            "login.html",
            status=429,
            headers={"Retry-After": str(exc.retry_after)},
            error=page.t("throttled", s=exc.retry_after),
            username=username,
        )
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
    page.csrf, page.new_csrf = secrets.token_urlsafe(_CSRF_BYTES), True
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
        return page.render("mfa.html", status=400, error=page.t("form_expired"))
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
        return page.render(
            "mfa.html",
            status=429,
            headers={"Retry-After": str(exc.retry_after)},
            error=page.t("throttled", s=exc.retry_after),
        )
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
        return page.redirect("/account/totp")
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
        return page.redirect("/account/totp")
    try:
        done = accounts.confirm_totp_enrolment(page.session(), code)
    except SessionInvalid:
        return page.redirect("/login")
    except (InvalidCredentials, LoginThrottled):
        return page.render("totp.html", status=400, status_info=None, enrolment=None, error=page.t("bad_code"))
    page.csrf, page.new_csrf = secrets.token_urlsafe(_CSRF_BYTES), True  # new privilege, new token
    response = page.render("recovery_codes.html", codes=done.recovery_codes)
    page.cookie(response, "session", done.token)
    return response


@router.get("/account/security")
def security_page(page: _Page = Depends(_page), accounts: AccountService = Depends(get_accounts)) -> Response:
    try:
        status = accounts.status(page.session())
        events = accounts.security_events(page.session())
    except SessionInvalid:
        return page.redirect("/login")
    return page.render("security.html", status_info=status, events=events)


@router.post("/logout")
def logout(
    csrf: str = Form(max_length=100), page: _Page = Depends(_page), accounts: AccountService = Depends(get_accounts)
) -> Response:
    if not page.csrf_ok(csrf):
        # A forged cross-site post must not sign the person out either: the cookie stays.
        return page.redirect("/account/security")
    with contextlib.suppress(SessionInvalid):  # already gone: signing out again is fine
        accounts.logout(page.session())
    response = page.redirect("/login")
    page.forget(response, "session")
    return response


def _svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;charset=utf-8," + quote(svg, safe="")


__all__ = ["router"]
