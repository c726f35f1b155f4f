"""Passkeys in a real browser: Debian's headless Chromium through Selenium, with a virtual
authenticator (WebDriver's WebAuthn extension: CTAP2, resident keys, user verification).
Registers a passkey on the security page, logs out, logs in with password + passkey, steps up
with the passkey and removes it; the pages run only their own script file, and the CSP refuses
nothing. Screenshots go to test-artifacts/web/."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.test_web_browser import _click, _fill, _free_port, _shot, browser  # noqa: F401
from tests.auth.support import ADDRESS, STRONG, rfc6238, secret_from_uri, step_of, wire_accounts
from tests.conftest import Service


@pytest.fixture
def live(db_url: str) -> Iterator[Any]:
    import uvicorn

    # WebAuthn wants a domain name, not an IP address: the browser goes to localhost (the
    # loopback), which is also a secure context over plain HTTP.
    port = _free_port()
    origin = f"http://localhost:{port}"
    svc = Service(db_url, secure_cookies=False, webauthn_rp_id="localhost", webauthn_origin=origin)
    accounts = wire_accounts(svc)
    accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="browser test")
    first = accounts.login("alice", STRONG, address=ADDRESS)
    assert first.token
    svc.secret = secret_from_uri(accounts.begin_totp_enrolment(first.token).otpauth_uri)
    accounts.confirm_totp_enrolment(first.token, rfc6238(svc.secret, step_of(svc.clock)))
    svc.clock.advance(30)
    server = uvicorn.Server(uvicorn.Config(svc.app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    svc.base = origin
    yield svc
    server.should_exit = True
    thread.join(timeout=10)
    svc.close()


def _sign_in_with_code(live: Any, driver: Any) -> None:
    driver.get(f"{live.base}/login?lang=en")
    _fill(driver, username="alice", password=STRONG)
    _click(driver, "submit", "/mfa")
    _fill(driver, code=rfc6238(live.secret, step_of(live.clock)))
    _click(driver, "submit", "/account/security")


def test_browser_registers_a_passkey_signs_in_and_steps_up_with_it(live: Any, browser: Any) -> None:  # noqa: F811
    if not live.base.startswith("http://localhost:"):
        pytest.fail("the browser test only ever talks to the loopback")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.virtual_authenticator import VirtualAuthenticatorOptions

    browser.add_virtual_authenticator(
        VirtualAuthenticatorOptions(
            protocol=VirtualAuthenticatorOptions.Protocol.CTAP2,
            transport=VirtualAuthenticatorOptions.Transport.INTERNAL,
            has_resident_key=True,
            has_user_verification=True,
            is_user_verified=True,
        )
    )
    _sign_in_with_code(live, browser)
    assert browser.find_element(By.ID, "no-passkeys").text == "No passkeys yet."
    _fill(browser, **{"passkey-name": "Laptop của Alice"})
    _click(browser, "add-passkey", "/account/passkeys/new")
    _shot(browser, "passkey-01-create")
    _click(browser, "passkey-start", "/account/security")
    assert browser.find_element(By.ID, "notice").text == "Passkey added."
    rows = browser.find_elements(By.CSS_SELECTOR, "#passkeys tr[data-passkey]")
    assert len(rows) == 1
    passkey_id = rows[0].get_attribute("data-passkey")
    assert browser.find_element(By.ID, f"name-{passkey_id}").get_attribute("value") == "Laptop của Alice"
    (credential,) = browser.get_credentials()
    assert credential.rp_id == "localhost" and credential.is_resident_credential
    _shot(browser, "passkey-02-security")

    _click(browser, "logout", "/login")
    live.clock.advance(60)
    browser.get(f"{live.base}/login?lang=vi")
    _fill(browser, username="alice", password=STRONG)
    _click(browser, "submit", "/mfa")
    _click(browser, "use-passkey", "/mfa/passkey")
    assert browser.find_element(By.ID, "passkey-start").text == "Dùng khóa truy cập"
    _shot(browser, "passkey-03-login-vi")
    _click(browser, "passkey-start", "/account/security")
    signed_in = browser.find_element(By.CSS_SELECTOR, "#events tr[data-action='auth.login.succeeded']")
    assert "password+passkey" in signed_in.text

    live.clock.advance(301)  # the second factor of the login is no longer recent
    browser.get(f"{live.base}/account/security?lang=en")
    assert browser.find_element(By.ID, "step-up-state").text == "No"
    _click(browser, f"remove-{passkey_id}", "/account/security")
    assert browser.find_element(By.ID, "error").text == "Verify with a code again before changing this."
    assert browser.find_elements(By.CSS_SELECTOR, "#passkeys tr[data-passkey]")
    _click(browser, "step-up-passkey", "/account/step-up/passkey")
    _click(browser, "passkey-start", "/account/security")
    assert browser.find_element(By.ID, "notice").text == "Verified again."
    assert browser.find_element(By.ID, "step-up-state").text == "Yes"
    _shot(browser, "passkey-04-stepped-up")
    _click(browser, f"remove-{passkey_id}", "/account/security")
    assert browser.find_element(By.ID, "notice").text == "Passkey removed."
    assert browser.find_element(By.ID, "no-passkeys")
    actions = [
        e.get_attribute("data-action") for e in browser.find_elements(By.CSS_SELECTOR, "#events tr[data-action]")
    ]
    assert {
        "auth.passkey.registered",
        "auth.passkey.used",
        "auth.passkey.removal_refused",
        "auth.passkey.removed",
    } <= set(actions)
    console = [e for e in browser.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    assert console == []
