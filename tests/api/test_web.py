"""The server-rendered pages: the whole flow through the forms, language toggle, CSP, CSRF."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.auth.support import STRONG, rfc6238, step_of, wire_accounts


@pytest.fixture
def site(service: Any) -> Any:
    accounts = wire_accounts(service)
    accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="new officer")
    service.browser = TestClient(service.app, base_url="https://testserver", follow_redirects=False)
    yield service
    service.browser.close()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "every form carries a CSRF token"
    return match.group(1)


def _post(site: Any, path: str, page: str, **fields: str) -> Any:
    return site.browser.post(path, data={"csrf": _csrf(page), **fields})


def _secret(html: str) -> bytes:
    import base64

    match = re.search(r'id="secret">([A-Z2-7 ]+)<', html)
    assert match
    return base64.b32decode(match.group(1).replace(" ", ""))


def test_login_page_is_vietnamese_with_an_english_toggle(site: Any) -> None:
    vi = site.browser.get("/login")
    assert vi.status_code == 200 and '<html lang="vi">' in vi.text and "Đăng nhập" in vi.text
    en = site.browser.get("/login?lang=en")
    assert '<html lang="en">' in en.text and "Sign in" in en.text
    assert site.browser.get("/login").text.count('lang="en"') == 1  # remembered in a cookie


def test_pages_load_no_script_and_nothing_external(site: Any) -> None:
    page = site.browser.get("/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script" not in page.text and "style=" not in page.text
    assert not re.search(r'(src|href)="(https?:)?//', page.text)
    css = site.browser.get("/static/web.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_whole_flow_through_the_forms(site: Any) -> None:
    login = site.browser.get("/login")
    signed = _post(site, "/login", login.text, username="alice", password=STRONG)
    assert signed.status_code == 303 and signed.headers["location"] == "/account/totp"
    cookies = signed.headers.get_list("set-cookie")
    assert any(
        c.startswith("__Host-bhxh_session=") and "HttpOnly" in c and "Secure" in c and "SameSite=strict" in c
        for c in cookies
    )
    intro = site.browser.get("/account/totp")
    enrol = _post(site, "/account/totp", intro.text)
    assert enrol.status_code == 200 and 'src="data:image/svg+xml' in enrol.text
    secret = _secret(enrol.text)
    codes = _post(site, "/account/totp/confirm", enrol.text, code=rfc6238(secret, step_of(site.clock)))
    assert codes.status_code == 200 and len(re.findall(r"<li>[a-z2-7-]{19}</li>", codes.text)) == 10
    security = site.browser.get("/account/security")
    assert security.status_code == 200 and "Đang bật" in security.text and "Đã bật xác thực hai lớp" in security.text
    out = _post(site, "/logout", security.text)
    assert out.status_code == 303 and site.browser.get("/account/security").headers["location"] == "/login"
    site.clock.advance(30)
    login = site.browser.get("/login")
    step1 = _post(site, "/login", login.text, username="alice", password=STRONG)
    assert step1.headers["location"] == "/mfa"
    challenge = site.browser.get("/mfa")
    step2 = _post(site, "/mfa", challenge.text, code=rfc6238(secret, step_of(site.clock)))
    assert step2.status_code == 303 and step2.headers["location"] == "/account/security"
    assert "Đăng nhập thành công" in site.browser.get("/account/security").text


def test_wrong_password_page_is_generic_and_lock_gives_retry_after(site: Any) -> None:
    login = site.browser.get("/login?lang=en")
    for i in range(5):
        wrong = _post(site, "/login", login.text, username="alice", password=f"wrong password {i}")
        assert wrong.status_code == 401 and "Wrong username or password." in wrong.text
    unknown = _post(site, "/login", login.text, username="nobody", password="wrong password")
    assert unknown.status_code == 401 and "Wrong username or password." in unknown.text
    locked = _post(site, "/login", login.text, username="alice", password=STRONG)
    assert locked.status_code == 429 and locked.headers["retry-after"] == "30"


def test_every_401_page_names_the_session_challenge(site: Any) -> None:
    # RFC 9110 §15.5.2: a 401 carries WWW-Authenticate; these pages sign in to a session.
    login = site.browser.get("/login")
    wrong = _post(site, "/login", login.text, username="alice", password="wrong password")
    no_mfa = _post(site, "/mfa", login.text, code="000000")  # no sign-in under way
    enrolled = _post(site, "/login", login.text, username="alice", password=STRONG)
    intro = site.browser.get(enrolled.headers["location"])
    enrol = _post(site, "/account/totp", intro.text)
    secret = _secret(enrol.text)
    _post(site, "/account/totp/confirm", enrol.text, code=rfc6238(secret, step_of(site.clock)))
    site.clock.advance(600)  # the second factor of this session is no longer recent
    step_up = _post(site, "/account/totp", site.browser.get("/account/totp").text)
    site.browser.cookies.clear()
    login = site.browser.get("/login")
    assert _post(site, "/login", login.text, username="alice", password=STRONG).headers["location"] == "/mfa"
    bad_code = _post(site, "/mfa", site.browser.get("/mfa").text, code="000000")
    for page in (wrong, no_mfa, step_up, bad_code):
        assert page.status_code == 401, page.text
        assert page.headers["www-authenticate"] == 'Session realm="bhxh-integrity"'
    assert "www-authenticate" not in login.headers  # a page that refuses nothing names none


def test_form_without_the_csrf_cookie_is_refused(site: Any) -> None:
    page = site.browser.get("/login")
    site.browser.cookies.clear()
    refused = site.browser.post("/login", data={"csrf": _csrf(page.text), "username": "alice", "password": STRONG})
    assert refused.status_code == 403 and "bhxh_session" not in refused.headers.get("set-cookie", "")


def test_account_pages_need_a_session(site: Any) -> None:
    for path in ("/account/security", "/account/totp"):
        assert site.browser.get(path).headers["location"] == "/login"
    assert site.browser.get("/mfa").headers["location"] == "/login"
