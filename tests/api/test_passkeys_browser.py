"""Passkeys in a real browser: Debian's headless Chromium through Selenium, with a virtual
authenticator (WebDriver's WebAuthn extension: CTAP2, resident keys, user verification).
Registers a passkey on the security page, logs out, logs in with password + passkey, steps up
with the passkey and removes it; the pages run only their own script file, and the CSP refuses
nothing. Screenshots go to test-artifacts/web/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.browser_support import browser, click, csp_refusals, fill, serving, shot  # noqa: F401  (fixture)
from tests.auth.support import STRONG, enrolled, rfc6238, step_of, wire_accounts
from tests.conftest import Service
from tests.loopback import free_port


@pytest.fixture
def live(db_url: str) -> Iterator[Any]:
    # WebAuthn wants a domain name, not an IP address: the browser goes to localhost (the
    # loopback), which is also a secure context over plain HTTP.
    port = free_port()
    origin = f"http://localhost:{port}"
    svc = Service(db_url, secure_cookies=False, webauthn_rp_id="localhost", webauthn_origin=origin)
    svc.secret, _, _ = enrolled(wire_accounts(svc), svc.clock)
    with serving(svc.app, port):
        svc.base = origin
        yield svc
    svc.close()


def _sign_in_with_code(live: Any, driver: Any) -> None:
    driver.get(f"{live.base}/login?lang=en")
    fill(driver, username="alice", password=STRONG)
    click(driver, "submit", "/mfa")
    fill(driver, code=rfc6238(live.secret, step_of(live.clock)))
    click(driver, "submit", "/account/security")


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
    fill(browser, **{"passkey-name": "Laptop của Alice"})
    click(browser, "add-passkey", "/account/passkeys/new")
    shot(browser, "passkey-01-create")
    click(browser, "passkey-start", "/account/security")
    assert browser.find_element(By.ID, "notice").text == "Passkey added."
    rows = browser.find_elements(By.CSS_SELECTOR, "#passkeys tr[data-passkey]")
    assert len(rows) == 1
    passkey_id = rows[0].get_attribute("data-passkey")
    assert browser.find_element(By.ID, f"name-{passkey_id}").get_attribute("value") == "Laptop của Alice"
    (credential,) = browser.get_credentials()
    assert credential.rp_id == "localhost" and credential.is_resident_credential
    shot(browser, "passkey-02-security")

    click(browser, "logout", "/login")
    live.clock.advance(60)
    browser.get(f"{live.base}/login?lang=vi")
    fill(browser, username="alice", password=STRONG)
    click(browser, "submit", "/mfa")
    click(browser, "use-passkey", "/mfa/passkey")
    assert browser.find_element(By.ID, "passkey-start").text == "Dùng khóa truy cập"
    shot(browser, "passkey-03-login-vi")
    click(browser, "passkey-start", "/account/security")
    signed_in = browser.find_element(By.CSS_SELECTOR, "#events tr[data-action='auth.login.succeeded']")
    assert "password+passkey" in signed_in.text

    live.clock.advance(301)  # the second factor of the login is no longer recent
    browser.get(f"{live.base}/account/security?lang=en")
    assert browser.find_element(By.ID, "step-up-state").text == "No"
    click(browser, f"remove-{passkey_id}", "/account/security")
    assert browser.find_element(By.ID, "error").text == "Verify with a code again before changing this."
    assert browser.find_elements(By.CSS_SELECTOR, "#passkeys tr[data-passkey]")
    click(browser, "step-up-passkey", "/account/step-up/passkey")
    click(browser, "passkey-start", "/account/security")
    assert browser.find_element(By.ID, "notice").text == "Verified again."
    assert browser.find_element(By.ID, "step-up-state").text == "Yes"
    shot(browser, "passkey-04-stepped-up")
    click(browser, f"remove-{passkey_id}", "/account/security")
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
    assert csp_refusals(browser) == []
