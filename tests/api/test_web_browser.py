"""The pages in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (never a downloaded driver). Logs in, enrols TOTP with a code computed from the
shown secret, logs out, logs in with MFA, and screenshots every page into test-artifacts/web/."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.auth.support import STRONG, rfc6238, step_of, wire_accounts
from tests.conftest import REPO_ROOT, Service
from tests.tools import require_tool

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTEFACTS = Path(os.environ.get("BHXH_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "web"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(db_url: str) -> Iterator[Any]:
    import uvicorn

    # Plain HTTP on the loopback: the setting meant for local demos turns off Secure cookies.
    svc = Service(db_url, secure_cookies=False)
    wire_accounts(svc)
    svc.state.accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="browser test")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(svc.app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    svc.base = f"http://127.0.0.1:{port}"
    yield svc
    server.should_exit = True
    thread.join(timeout=10)
    svc.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    require_tool(CHROMIUM, "chromium")
    require_tool(CHROMEDRIVER, "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1000,1100",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def _shot(driver: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))


def _fill(driver: Any, **fields: str) -> None:
    from selenium.webdriver.common.by import By

    for name, value in fields.items():
        box = driver.find_element(By.ID, name)
        box.clear()
        box.send_keys(value)


def _replaced(element: Any) -> bool:
    """True once ``element``'s document has gone. Mid-navigation Chromium sometimes reports that
    as an inspector error ("Node with given id does not belong to the document") instead of a
    stale element reference; both say the same thing."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def _click(driver: Any, element_id: str, lands_on: str) -> None:
    """Click, then wait until the next page has replaced this one and its URL is ``lands_on``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()
    wait = WebDriverWait(driver, 15)
    wait.until(lambda _d: _replaced(old))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    path = driver.current_url.split("?", 1)[0]
    assert path.endswith(lands_on), f"expected {lands_on}, got {driver.current_url}"


def test_browser_logs_in_enrols_totp_logs_out_and_logs_in_with_mfa(live: Any, browser: Any, tmp_path: Path) -> None:
    if not live.base.startswith("http://127.0.0.1"):
        pytest.fail("the browser test only ever talks to the loopback")
    from selenium.webdriver.common.by import By

    browser.get(f"{live.base}/login")
    assert browser.title == "Đăng nhập · Hệ thống bảo đảm toàn vẹn dữ liệu BHXH"
    _shot(browser, "01-login-vi")
    _fill(browser, username="alice", password=STRONG)
    _click(browser, "submit", "/account/totp")
    _shot(browser, "02-totp-intro")
    _click(browser, "start", "/account/totp")
    shown = browser.find_element(By.ID, "secret").text.strip()
    assert re.fullmatch(r"([A-Z2-7]{4} )+[A-Z2-7]{1,4}", shown), "the key is shown in groups of four"
    secret = shown.replace(" ", "")
    qr = browser.find_element(By.ID, "qr")
    assert qr.get_attribute("naturalWidth") not in (None, "0"), "the QR code image must render"
    # The QR code as the browser draws it reads back as the otpauth URI, whose key has no spaces.
    (tmp_path / "qr.png").write_bytes(qr.screenshot_as_png)
    decoded = subprocess.run(
        [require_tool("zbarimg", "zbar-tools"), "-q", "--raw", str(tmp_path / "qr.png")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert decoded == browser.find_element(By.ID, "otpauth").get_attribute("href")
    assert parse_qs(urlparse(decoded).query)["secret"] == [secret]
    _shot(browser, "03-totp-qr")
    _fill(browser, code=rfc6238(base64.b32decode(secret), step_of(live.clock)))
    _click(browser, "submit", "/account/totp/confirm")
    codes = browser.find_elements(By.CSS_SELECTOR, "#codes li")
    assert len(codes) == 10
    _shot(browser, "04-recovery-codes")
    _click(browser, "continue", "/account/security")
    assert browser.find_element(By.ID, "mfa-state").text == "Đang bật"
    _shot(browser, "05-security-vi")
    _click(browser, "logout", "/login")
    live.clock.advance(30)
    browser.get(f"{live.base}/login?lang=en")
    assert "Sign in" in browser.title
    _fill(browser, username="alice", password=STRONG)
    _click(browser, "submit", "/mfa")
    _shot(browser, "06-mfa-en")
    _fill(browser, code=rfc6238(base64.b32decode(secret), step_of(live.clock)))
    _click(browser, "submit", "/account/security")
    assert browser.find_element(By.ID, "mfa-state").text == "On"
    events = browser.find_element(By.ID, "events").text
    assert "Signed in" in events and "Two-step verification turned on" in events
    assert "(Vietnam time, UTC+7)" in events and "auth.login.succeeded" not in events
    assert browser.find_element(By.ID, "role").text == "Intake officer (officer)"
    _shot(browser, "07-security-en")
    # Nothing the page loaded broke the CSP (a violation shows up in the console log).
    console = [e for e in browser.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    assert console == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_api_docs_render_in_the_browser_under_the_page_csp(live: Any, browser: Any) -> None:
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
    _shot(browser, "08-api-docs")
    console = [e for e in browser.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    assert console == []
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(live.base + "/") for url in loaded), loaded
