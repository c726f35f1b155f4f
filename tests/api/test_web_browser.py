"""The pages in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (never a downloaded driver). Logs in, enrols TOTP with a code computed from the
shown secret, logs out, logs in with MFA, and screenshots every page into test-artifacts/web/."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.api.browser_support import browser, click, csp_refusals, fill, serving, shot  # noqa: F401  (fixture)
from tests.auth.support import STRONG, rfc6238, step_of, wire_accounts
from tests.conftest import Service
from tests.loopback import free_port
from tests.qr_support import qr_text


@pytest.fixture
def live(db_url: str) -> Iterator[Any]:
    # Plain HTTP on the loopback: the setting meant for local demos turns off Secure cookies.
    svc = Service(db_url, secure_cookies=False)
    wire_accounts(svc)
    svc.state.accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="browser test")
    port = free_port()
    with serving(svc.app, port):
        svc.base = f"http://127.0.0.1:{port}"
        yield svc
    svc.close()


def test_browser_logs_in_enrols_totp_logs_out_and_logs_in_with_mfa(
    live: Any,
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    if not live.base.startswith("http://127.0.0.1"):
        pytest.fail("the browser test only ever talks to the loopback")
    from selenium.webdriver.common.by import By

    browser.get(f"{live.base}/login")
    assert browser.title == "Đăng nhập · Hệ thống bảo đảm toàn vẹn dữ liệu BHXH"
    shot(browser, "01-login-vi")
    fill(browser, username="alice", password=STRONG)
    click(browser, "submit", "/account/totp")
    shot(browser, "02-totp-intro")
    click(browser, "start", "/account/totp")
    shown = browser.find_element(By.ID, "secret").text.strip()
    assert re.fullmatch(r"([A-Z2-7]{4} )+[A-Z2-7]{1,4}", shown), "the key is shown in groups of four"
    secret = shown.replace(" ", "")
    qr = browser.find_element(By.ID, "qr")
    assert qr.get_attribute("naturalWidth") not in (None, "0"), "the QR code image must render"
    # The QR code as the browser draws it reads back as the otpauth URI, whose key has no spaces.
    (tmp_path / "qr.png").write_bytes(qr.screenshot_as_png)
    decoded = qr_text(tmp_path / "qr.png")
    assert decoded == browser.find_element(By.ID, "otpauth").get_attribute("href")
    assert parse_qs(urlparse(decoded).query)["secret"] == [secret]
    shot(browser, "03-totp-qr")
    fill(browser, code=rfc6238(base64.b32decode(secret), step_of(live.clock)))
    click(browser, "submit", "/account/totp/confirm")
    codes = browser.find_elements(By.CSS_SELECTOR, "#codes li")
    assert len(codes) == 10
    shot(browser, "04-recovery-codes")
    click(browser, "continue", "/account/security")
    assert browser.find_element(By.ID, "mfa-state").text == "Đang bật"
    shot(browser, "05-security-vi")
    click(browser, "logout", "/login")
    live.clock.advance(30)
    browser.get(f"{live.base}/login?lang=en")
    assert "Sign in" in browser.title
    fill(browser, username="alice", password=STRONG)
    click(browser, "submit", "/mfa")
    shot(browser, "06-mfa-en")
    fill(browser, code=rfc6238(base64.b32decode(secret), step_of(live.clock)))
    click(browser, "submit", "/account/security")
    assert browser.find_element(By.ID, "mfa-state").text == "On"
    events = browser.find_element(By.ID, "events").text
    assert "Signed in" in events and "Two-step verification turned on" in events
    assert "(Vietnam time, UTC+7)" in events and "auth.login.succeeded" not in events
    assert browser.find_element(By.ID, "role").text == "Intake officer (officer)"
    shot(browser, "07-security-en")
    # Nothing the page loaded broke the CSP.
    assert csp_refusals(browser) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_api_docs_render_in_the_browser_under_the_page_csp(live: Any, browser: Any) -> None:  # noqa: F811
    """/docs is Swagger UI from the service's own files: it renders every operation and the
    security schemes, the CSP refuses nothing, and no request leaves for another origin."""
    if not live.base.startswith("http://127.0.0.1"):
        pytest.fail("the browser test only ever talks to the loopback")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live.base}/docs")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 0)
    paths = {e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/v1/receipts/{code}/pdf", "/v1/signatures", "/v1/audit/report"} <= paths
    assert browser.find_elements(By.CSS_SELECTOR, "button.authorize"), "the security schemes must show"
    shot(browser, "08-api-docs")
    assert csp_refusals(browser) == []
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(live.base + "/") for url in loaded), loaded
