"""The pages speak to a person: times in Vietnam time, roles and security events by name, the
TOTP key in groups of four, the product's Vietnamese name. All through the real app's pages."""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest
from fastapi.testclient import TestClient

from auth.totp import enrolment_for
from tests.auth.support import STRONG, wire_accounts

VN_NAME = "Hệ thống bảo đảm toàn vẹn dữ liệu BHXH"
EN_NAME = "BHXH integrity service"


@pytest.fixture
def site(service: Any) -> Any:
    wire_accounts(service).create_user("alice", STRONG, "officer", actor="user:root", reason="new officer")
    service.browser = TestClient(service.app, base_url="https://testserver", follow_redirects=False)
    yield service
    service.browser.close()


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match
    return match.group(1)


def _sign_in(site: Any) -> None:
    login = site.browser.get("/login")
    signed = site.browser.post("/login", data={"csrf": _csrf(login.text), "username": "alice", "password": STRONG})
    assert signed.status_code == 303 and signed.headers["location"] == "/account/totp"


def _row(page: str, action: str) -> str:
    match = re.search(rf'<tr data-action="{re.escape(action)}">(.*?)</tr>', page)
    assert match, f"no row for {action}"
    return match.group(1)


def test_security_page_shows_a_login_in_vietnam_time_with_the_utc_instant_kept(site: Any) -> None:
    # 17:30 UTC is 00:30 the next day in Vietnam (UTC+7): the date must roll over too.
    login_at = site.clock.now.replace(hour=17, minute=30, second=0, microsecond=0)
    site.clock.now = login_at
    _sign_in(site)
    page = site.browser.get("/account/security").text
    vn = login_at + timedelta(hours=7)
    assert vn.hour == 0 and vn.day != login_at.day
    row = _row(page, "auth.login.succeeded")
    expected_vn = f"{vn:%d/%m/%Y} 00:30 (giờ Việt Nam, UTC+7)"
    assert f'<time datetime="{login_at:%Y-%m-%dT%H:%M:%S}.000000Z">{expected_vn}</time>' in row
    assert "<td>Đăng nhập thành công</td>" in row and "auth.login.succeeded</td>" not in row
    # The session end is shown the same way; its <time> attribute is the exact UTC instant.
    until = re.search(r'id="session-until"><time datetime="([^"]+)">([^<]+)</time>', page)
    assert until
    instant = datetime.fromisoformat(until.group(1))
    assert until.group(1).endswith("Z") and instant > login_at
    assert until.group(2) == f"{instant + timedelta(hours=7):%d/%m/%Y %H:%M} (giờ Việt Nam, UTC+7)"
    assert " UTC<" not in page


def test_security_page_in_english_names_the_role_the_events_and_the_zone(site: Any) -> None:
    login_at = site.clock.now.replace(hour=1, minute=5, second=0, microsecond=0)
    site.clock.now = login_at
    _sign_in(site)
    vi = site.browser.get("/account/security").text
    assert '<td id="role">Cán bộ tiếp nhận (officer)</td>' in vi
    assert "<td>Quản trị viên tạo tài khoản</td>" in _row(vi, "admin.user.created")
    en = site.browser.get("/account/security?lang=en").text
    assert '<td id="role">Intake officer (officer)</td>' in en
    assert "<td>Signed in</td>" in _row(en, "auth.login.succeeded")
    assert f"{login_at:%d/%m/%Y} 08:05 (Vietnam time, UTC+7)</time>" in _row(en, "auth.login.succeeded")


def test_an_event_kind_without_a_label_is_shown_by_its_raw_name(site: Any) -> None:
    _sign_in(site)
    site.state.audit.record("user:alice", "auth.smartcard.enrolled", "alice", {"method": "smartcard"})
    page = site.browser.get("/account/security").text
    row = _row(page, "auth.smartcard.enrolled")
    assert "<td>auth.smartcard.enrolled</td>" in row and "<td>smartcard</td>" in row
    assert "(giờ Việt Nam, UTC+7)</time>" in row


def test_totp_page_groups_the_key_and_keeps_the_uri_and_qr_exact(site: Any) -> None:
    _sign_in(site)
    intro = site.browser.get("/account/totp")
    enrol = site.browser.post("/account/totp", data={"csrf": _csrf(intro.text)})
    assert enrol.status_code == 200
    shown = re.search(r'id="secret">([^<]+)<', enrol.text)
    assert shown and re.fullmatch(r"([A-Z2-7]{4} )+[A-Z2-7]{1,4}", shown.group(1)), shown
    typed = shown.group(1).replace(" ", "")
    link = re.search(r'id="otpauth" href="([^"]+)"', enrol.text)
    assert link
    uri = html.unescape(link.group(1))
    assert uri.startswith("otpauth://totp/") and " " not in uri and "%20" not in uri
    assert parse_qs(urlparse(uri).query)["secret"] == [typed]
    # The QR code encodes exactly this URI: the same URI made into a QR gives the same picture.
    secret = base64.b32decode(typed + "=" * (-len(typed) % 8))
    qr = re.search(r'id="qr" src="data:image/svg\+xml;charset=utf-8,([^"]+)"', enrol.text)
    assert qr and unquote(html.unescape(qr.group(1))) == enrolment_for(secret, "alice").qr_svg
    assert enrolment_for(secret, "alice").otpauth_uri == uri
    # A code from the key as typed by hand (spaces dropped) completes the enrolment.
    code = pyotp.TOTP(typed).at(site.clock())
    done = site.browser.post("/account/totp/confirm", data={"csrf": _csrf(enrol.text), "code": code})
    assert done.status_code == 200 and len(re.findall(r"<li>[a-z2-7]{4}(-[a-z2-7]{4}){3}</li>", done.text)) == 10


def test_titles_and_header_carry_the_vietnamese_product_name_with_the_english_one(site: Any) -> None:
    vi = site.browser.get("/login").text
    assert f"<title>Đăng nhập · {VN_NAME}</title>" in vi
    assert f'<strong id="product">{VN_NAME}</strong> <span class="subtitle" lang="en">{EN_NAME}</span>' in vi
    en = site.browser.get("/login?lang=en").text
    assert f"<title>Sign in · {EN_NAME}</title>" in en
    assert f'<strong id="product">{EN_NAME}</strong> <span class="subtitle" lang="vi">{VN_NAME}</span>' in en
