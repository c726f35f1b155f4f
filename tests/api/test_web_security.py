"""Web security on the real pages: CSP without inline script, no framing, no-store on private
answers, CSRF on every form post, and Secure/HttpOnly/SameSite cookies.

Each page is reached the way a person reaches it (login → TOTP enrolment → recovery codes →
"my security" → logout → login with MFA), and every answer on the way is checked.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import web
from tests.auth.support import STRONG, rfc6238, step_of, wire_accounts
from tests.conftest import Service

HOST_COOKIES = ("__Host-bhxh_session", "__Host-bhxh_mfa", "__Host-bhxh_device", "__Host-bhxh_csrf")
# Sources that would let script run from the page itself or from anywhere.
UNSAFE_SCRIPT_SOURCES = (
    "'unsafe-inline'",
    "'unsafe-eval'",
    "'unsafe-hashes'",
    "'strict-dynamic'",
    "*",
    "data:",
    "blob:",
    "http:",
    "https:",
)
FORM_POSTS = ("/login", "/mfa", "/account/totp", "/account/totp/confirm", "/logout")


class Browser:
    """A TestClient over HTTPS that keeps every answer it received."""

    def __init__(self, service: Service) -> None:
        self.client = TestClient(service.app, base_url="https://testserver", follow_redirects=False)
        self.seen: list[Any] = []

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        self.seen.append(response)
        return response

    def post(self, path: str, **fields: str) -> Any:
        response = self.client.post(path, data=fields)
        self.seen.append(response)
        return response

    def cookie(self, name: str) -> str | None:
        return self.client.cookies.get(name)


@pytest.fixture
def site(service: Service) -> Iterator[Service]:
    wire_accounts(service).create_user("alice", STRONG, "officer", actor="user:root", reason="new officer")
    yield service


@pytest.fixture
def browser(site: Service) -> Iterator[Browser]:
    b = Browser(site)
    yield b
    b.client.close()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has a form with a CSRF token"
    return match.group(1)


def _secret(html: str) -> bytes:
    match = re.search(r'id="secret">([A-Z2-7 ]+)<', html)
    assert match
    secret = match.group(1).replace(" ", "")  # shown in groups of four for typing by hand
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def _sign_in_and_enrol(site: Service, b: Browser) -> bytes:
    """Walks login → TOTP set-up → recovery codes; returns the TOTP secret."""
    signed = b.post("/login", csrf=_csrf(b.get("/login").text), username="alice", password=STRONG)
    assert signed.status_code == 303 and signed.headers["location"] == "/account/totp"
    enrol = b.post("/account/totp", csrf=_csrf(b.get("/account/totp").text))
    assert enrol.status_code == 200
    secret = _secret(enrol.text)
    codes = b.post("/account/totp/confirm", csrf=_csrf(enrol.text), code=rfc6238(secret, step_of(site.clock)))
    assert codes.status_code == 200 and '<ol class="codes"' in codes.text
    assert b.get("/account/security").status_code == 200
    return secret


def _whole_flow(site: Service, b: Browser) -> None:
    b.get("/login?lang=en")
    b.get("/login?lang=vi")
    b.post("/login", csrf=_csrf(b.get("/login").text), username="alice", password="wrong password")
    secret = _sign_in_and_enrol(site, b)
    out = b.post("/logout", csrf=_csrf(b.get("/account/security").text))
    assert out.status_code == 303 and out.headers["location"] == "/login"
    site.clock.advance(30)
    step1 = b.post("/login", csrf=_csrf(b.get("/login").text), username="alice", password=STRONG)
    assert step1.headers["location"] == "/mfa"
    challenge = b.get("/mfa")
    assert challenge.status_code == 200
    step2 = b.post("/mfa", csrf=_csrf(challenge.text), code=rfc6238(secret, step_of(site.clock)))
    assert step2.status_code == 303 and b.get("/account/security").status_code == 200


def _csp(response: Any) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in response.headers["content-security-policy"].split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def _set_cookies(responses: list[Any]) -> list[tuple[str, dict[str, str]]]:
    cookies = []
    for response in responses:
        for header in response.headers.get_list("set-cookie"):
            first, *attrs = [p.strip() for p in header.split(";")]
            name = first.split("=", 1)[0]
            parsed = {}
            for attr in attrs:
                key, _, value = attr.partition("=")
                parsed[key.lower()] = value
            cookies.append((name, parsed))
    return cookies


def test_every_page_has_a_csp_that_forbids_inline_script_and_framing(site: Service, browser: Browser) -> None:
    _whole_flow(site, browser)
    pages = [r for r in browser.seen if r.headers.get("content-type", "").startswith("text/html")]
    assert {r.url.path for r in pages} >= {
        "/login",
        "/mfa",
        "/account/totp",
        "/account/totp/confirm",
        "/account/security",
    }
    for page in pages:
        csp = _csp(page)
        script = csp.get("script-src", csp.get("default-src"))
        assert script is not None and not set(script) & set(UNSAFE_SCRIPT_SOURCES), (page.url.path, script)
        assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
        assert csp["base-uri"] == ["'none'"] and csp["form-action"] == ["'self'"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        # Nothing a CSP-less browser would run either: no script element, handler or javascript: URL.
        html = page.text.lower()
        assert "<script" not in html and "javascript:" not in html and "<style" not in html
        assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html, page.url.path


def test_every_web_answer_is_no_store(site: Service, browser: Browser) -> None:
    _whole_flow(site, browser)
    redirects = [r for r in browser.seen if r.status_code == 303]
    assert redirects, "the flow went through the sign-in redirects"
    for response in browser.seen:
        assert "no-store" in response.headers["cache-control"], (response.request.method, response.url.path)


def test_private_api_answers_are_no_store_and_only_public_ones_are_cacheable(site: Service) -> None:
    private = site.client.get("/v1/audit/entries?start=0&end=1", headers=site.auth("audit:read"))
    assert private.status_code == 200 and private.headers["cache-control"] == "no-store"
    refused = site.client.get("/v1/receipts/000.00.31.H29-251123-0001", headers=site.auth("receipts:read"))
    assert refused.headers["cache-control"] == "no-store"
    assert site.client.get("/healthz").headers["cache-control"] == "no-store"
    assert site.client.get("/static/web.css").headers["cache-control"].startswith("public")
    assert site.client.get("/.well-known/jwks.json").headers["cache-control"].startswith("public")


def test_every_cookie_is_host_only_secure_httponly_and_samesite_strict(site: Service, browser: Browser) -> None:
    _whole_flow(site, browser)
    cookies = _set_cookies(browser.seen)
    assert {name for name, _ in cookies} >= set(HOST_COOKIES) | {"bhxh_lang"}
    for name, attrs in cookies:
        assert "secure" in attrs and "httponly" in attrs, name
        assert attrs.get("samesite", "").lower() == "strict", name
        assert attrs.get("path") == "/" and "domain" not in attrs, name
        assert name.startswith("__Host-") or name == "bhxh_lang", name  # RFC 6265bis __Host- prefix


def test_plain_http_demo_cookies_stay_httponly_and_samesite(db_url: str) -> None:
    demo = Service(db_url, secure_cookies=False)
    try:
        wire_accounts(demo).create_user("alice", STRONG, "officer", actor="user:root", reason="new officer")
        b = Browser(demo)
        b.client.base_url = b.client.base_url.copy_with(scheme="http")
        signed = b.post("/login", csrf=_csrf(b.get("/login").text), username="alice", password=STRONG)
        assert signed.status_code == 303
        cookies = _set_cookies(b.seen)
        assert {n for n, _ in cookies} >= {"bhxh_csrf", "bhxh_session", "bhxh_device"}
        for name, attrs in cookies:
            assert "secure" not in attrs and not name.startswith("__Host-"), name
            assert "httponly" in attrs and attrs.get("samesite", "").lower() == "strict", name
        b.client.close()
    finally:
        demo.close()


def _attacker_token(site: Service) -> str:
    """A valid token from the attacker's own browser: what a cross-site form can carry."""
    attacker = Browser(site)
    try:
        return _csrf(attacker.get("/login").text)
    finally:
        attacker.client.close()


@pytest.mark.parametrize("forged", ["attacker", "empty", "missing-cookie"])
def test_login_post_without_the_matching_token_signs_nobody_in(site: Service, browser: Browser, forged: str) -> None:
    page = browser.get("/login")
    token = {"attacker": _attacker_token(site), "empty": "", "missing-cookie": _csrf(page.text)}[forged]
    if forged == "missing-cookie":
        browser.client.cookies.clear()
    refused = browser.post("/login", csrf=token, username="alice", password=STRONG)
    assert refused.status_code in (403, 422)
    assert not any(name.endswith(("bhxh_session", "bhxh_mfa")) for name, _ in _set_cookies([refused]))
    assert browser.get("/account/security").headers["location"] == "/login"


def test_login_post_without_a_csrf_field_is_refused(site: Service, browser: Browser) -> None:
    browser.get("/login")
    refused = browser.post("/login", username="alice", password=STRONG)
    assert refused.status_code == 422
    assert not any(name.endswith("bhxh_session") for name, _ in _set_cookies([refused]))


def test_mfa_post_with_a_forged_token_is_refused_and_consumes_nothing(site: Service, browser: Browser) -> None:
    secret = _sign_in_and_enrol(site, browser)
    browser.post("/logout", csrf=_csrf(browser.get("/account/security").text))
    site.clock.advance(30)
    browser.post("/login", csrf=_csrf(browser.get("/login").text), username="alice", password=STRONG)
    challenge = browser.get("/mfa")
    code = rfc6238(secret, step_of(site.clock))
    forged = browser.post("/mfa", csrf=_attacker_token(site), code=code)
    assert forged.status_code == 403 and not any(n.endswith("bhxh_session") for n, _ in _set_cookies([forged]))
    real = browser.post("/mfa", csrf=_csrf(challenge.text), code=code)  # the code was not spent
    assert real.status_code == 303 and real.headers["location"] == "/account/security"


def test_totp_enrolment_posts_with_a_forged_token_change_nothing(site: Service, browser: Browser) -> None:
    browser.post("/login", csrf=_csrf(browser.get("/login").text), username="alice", password=STRONG)
    attacker = _attacker_token(site)
    started = browser.post("/account/totp", csrf=attacker)
    assert started.status_code == 403 and 'id="secret"' not in started.text
    enrol = browser.post("/account/totp", csrf=_csrf(browser.get("/account/totp").text))
    secret = _secret(enrol.text)
    code = rfc6238(secret, step_of(site.clock))
    forged = browser.post("/account/totp/confirm", csrf=attacker, code=code)
    assert forged.status_code == 403 and "<li>" not in forged.text
    real = browser.post("/account/totp/confirm", csrf=_csrf(enrol.text), code=code)
    assert real.status_code == 200 and len(re.findall(r"<li>[a-z2-7-]{19}</li>", real.text)) == 10


def test_logout_post_with_a_forged_token_keeps_the_session(site: Service, browser: Browser) -> None:
    _sign_in_and_enrol(site, browser)
    session = browser.cookie("__Host-bhxh_session")
    forged = browser.post("/logout", csrf=_attacker_token(site))
    assert forged.status_code == 403 and 'href="/account/security"' in forged.text
    assert not any(n.endswith("bhxh_session") for n, _ in _set_cookies([forged]))
    assert browser.get("/account/security").status_code == 200
    assert session and site.state.accounts.authenticate_session(session) is not None


def test_the_csrf_token_is_renewed_at_sign_in(site: Service, browser: Browser) -> None:
    cookie = browser.get("/login")
    before = _csrf(cookie.text)
    assert before != browser.cookie("__Host-bhxh_csrf")  # the token is not the cookie (it is an HMAC of it)
    browser.post("/login", csrf=before, username="alice", password=STRONG)
    after = _csrf(browser.get("/account/totp").text)
    assert after != before
    stale = browser.post("/account/totp", csrf=before)  # a token seen before sign-in is dead
    assert stale.status_code == 403 and 'id="secret"' not in stale.text
    assert 'id="secret"' in browser.post("/account/totp", csrf=after).text


def _signed_in(site: Service) -> Browser:
    b = Browser(site)
    signed = b.post("/login", csrf=_csrf(b.get("/login").text), username="alice", password=STRONG)
    assert signed.status_code == 303
    return b


def test_a_token_of_one_session_is_refused_in_another(site: Service) -> None:
    # Both are alice's own sessions, in two browsers: a token leaked from one (a page in a cache,
    # a log) is no use in the other, even to the same person.
    first, second = _signed_in(site), _signed_in(site)
    try:
        first_token = _csrf(first.get("/account/totp").text)
        second_token = _csrf(second.get("/account/totp").text)
        assert first_token != second_token
        crossed = second.post("/account/totp", csrf=first_token)
        assert crossed.status_code == 403 and 'id="secret"' not in crossed.text
        assert 'id="error"' in crossed.text and 'href="/account/totp"' in crossed.text
        kept = second.post("/logout", csrf=first_token)
        assert kept.status_code == 403 and second.get("/account/security").status_code == 200
        # Each session's own token works in it.
        assert 'id="secret"' in second.post("/account/totp", csrf=second_token).text
        assert second.post("/logout", csrf=second_token).headers["location"] == "/login"
        assert 'id="secret"' in first.post("/account/totp", csrf=first_token).text
    finally:
        first.client.close()
        second.client.close()


def test_a_missing_token_is_refused_and_changes_nothing(site: Service, browser: Browser) -> None:
    browser.post("/login", csrf=_csrf(browser.get("/login").text), username="alice", password=STRONG)
    session = browser.cookie("__Host-bhxh_session")
    for path in ("/account/totp", "/logout"):
        refused = browser.client.post(path, data={})
        assert refused.status_code == 422, (path, refused.status_code)
    assert session and site.state.accounts.status(session).username == "alice"  # not signed out
    assert 'id="secret"' not in browser.get("/account/totp").text


def test_every_form_post_route_is_one_whose_token_check_is_tested() -> None:
    # Guard for new forms: a POST page added to api/web.py must join the CSRF tests above.
    posts = {route.path for route in web.router.routes if "POST" in getattr(route, "methods", set())}
    assert posts == set(FORM_POSTS)
