"""The passkey pages through their forms (the browser's part played by the software
authenticator): add, rename and remove on "my security", the MFA page's "use a passkey", the
step-up there; CSRF, the one script file under the page CSP, messages only from a fixed list."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.auth.passkey_support import SoftAuthenticator
from tests.auth.support import STRONG, enrolled, rfc6238, step_of, wire_accounts
from tests.conftest import Service

RP_ID = "testserver"
ORIGIN = "https://testserver"


@pytest.fixture
def site(db_url: str) -> Any:
    service = Service(db_url, webauthn_rp_id=RP_ID, webauthn_origin=ORIGIN)
    service.secret, _, _ = enrolled(wire_accounts(service), service.clock)
    service.browser = TestClient(service.app, base_url="https://testserver", follow_redirects=False)
    yield service
    service.browser.close()
    service.close()


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "every form carries a CSRF token"
    return match.group(1)


def _options(page: str) -> dict[str, Any]:
    match = re.search(r'data-options="([^"]+)"', page)
    assert match, "the ceremony page carries its options"
    return dict(json.loads(html.unescape(match.group(1))))


def _signed_in(site: Any) -> str:
    login = site.browser.get("/login?lang=en")
    assert (
        site.browser.post(
            "/login", data={"csrf": _csrf(login.text), "username": "alice", "password": STRONG}
        ).status_code
        == 303
    )
    mfa = site.browser.get("/mfa")
    done = site.browser.post("/mfa", data={"csrf": _csrf(mfa.text), "code": rfc6238(site.secret, step_of(site.clock))})
    assert done.headers["location"] == "/account/security"
    return str(site.browser.get("/account/security").text)


def _add(site: Any, security: str, device: SoftAuthenticator, name: str = "Laptop") -> Any:
    ceremony = site.browser.post("/account/passkeys/new", data={"csrf": _csrf(security), "name": name})
    assert ceremony.status_code == 200, ceremony.text
    answer = json.dumps(device.create(_options(ceremony.text)))
    return site.browser.post(
        "/account/passkeys", data={"csrf": _csrf(ceremony.text), "name": name, "credential": answer}
    )


def test_add_rename_use_and_remove_a_passkey_through_the_pages(site: Any) -> None:
    security = _signed_in(site)
    assert 'id="no-passkeys"' in security and "<script" not in security
    device = SoftAuthenticator(RP_ID, ORIGIN)
    ceremony = site.browser.post("/account/passkeys/new", data={"csrf": _csrf(security), "name": "Laptop"})
    assert ceremony.status_code == 200
    assert '<script src="/static/passkeys.js" defer></script>' in ceremony.text
    assert ceremony.text.count("<script") == 1 and "style=" not in ceremony.text
    csp = ceremony.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    options = _options(ceremony.text)
    assert options["rp"]["id"] == RP_ID and options["authenticatorSelection"]["userVerification"] == "required"
    added = site.browser.post(
        "/account/passkeys",
        data={"csrf": _csrf(ceremony.text), "name": "Laptop", "credential": json.dumps(device.create(options))},
    )
    assert added.status_code == 303 and added.headers["location"] == "/account/security?msg=passkey_added"
    page = site.browser.get(added.headers["location"]).text
    assert 'id="notice"' in page and "Passkey added." in page
    passkey_id = re.search(r'data-passkey="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    renamed = site.browser.post(
        f"/account/passkeys/{passkey_id}/rename", data={"csrf": _csrf(page), "name": "Máy tính cơ quan"}
    )
    assert renamed.headers["location"] == "/account/security?msg=passkey_renamed"
    assert 'value="Máy tính cơ quan"' in site.browser.get("/account/security").text

    # Sign out, and in again with the password and the passkey.
    assert site.browser.post("/logout", data={"csrf": _csrf(page)}).status_code == 303
    login = site.browser.get("/login")
    site.browser.post("/login", data={"csrf": _csrf(login.text), "username": "alice", "password": STRONG})
    mfa = site.browser.get("/mfa")
    assert 'action="/mfa/passkey"' in mfa.text
    asked = site.browser.post("/mfa/passkey", data={"csrf": _csrf(mfa.text)})
    assert asked.status_code == 200 and 'data-ceremony="get"' in asked.text
    signed = site.browser.post(
        "/mfa/passkey/finish",
        data={"csrf": _csrf(asked.text), "credential": json.dumps(device.get(_options(asked.text)))},
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/account/security"
    assert any(c.startswith("__Host-bhxh_session=") for c in signed.headers.get_list("set-cookie"))
    page = site.browser.get("/account/security").text
    assert "password+passkey" in page

    # Later: removing needs a step-up, which the passkey gives.
    site.clock.advance(301)
    page = site.browser.get("/account/security").text
    refused = site.browser.post(f"/account/passkeys/{passkey_id}/remove", data={"csrf": _csrf(page)})
    assert refused.headers["location"] == "/account/security?msg=step_up_needed"
    asked = site.browser.post("/account/step-up/passkey", data={"csrf": _csrf(page)})
    assert _options(asked.text)["userVerification"] == "required"
    stepped = site.browser.post(
        "/account/step-up/passkey/finish",
        data={"csrf": _csrf(asked.text), "credential": json.dumps(device.get(_options(asked.text)))},
    )
    assert stepped.headers["location"] == "/account/security?msg=step_up_done"
    page = site.browser.get("/account/security").text
    removed = site.browser.post(f"/account/passkeys/{passkey_id}/remove", data={"csrf": _csrf(page)})
    assert removed.headers["location"] == "/account/security?msg=passkey_removed"
    assert 'id="no-passkeys"' in site.browser.get("/account/security").text


def test_a_forged_post_removes_nothing_and_a_refused_passkey_adds_nothing(site: Any) -> None:
    security = _signed_in(site)
    device = SoftAuthenticator(RP_ID, ORIGIN)
    assert _add(site, security, device).headers["location"] == "/account/security?msg=passkey_added"
    page = site.browser.get("/account/security").text
    passkey_id = re.search(r'data-passkey="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    forged = site.browser.post(f"/account/passkeys/{passkey_id}/remove", data={"csrf": "x" * 43})
    assert forged.headers["location"] == "/account/security?msg=form_expired"
    assert f'data-passkey="{passkey_id}"' in site.browser.get("/account/security").text
    phished = SoftAuthenticator(RP_ID, "https://testserver.evil.example")
    assert _add(site, page, phished).headers["location"] == "/account/security?msg=passkey_failed"
    assert site.browser.get("/account/security").text.count("data-passkey=") == 1


def test_the_security_page_says_only_messages_it_knows(site: Any) -> None:
    _signed_in(site)
    page = site.browser.get("/account/security?msg=%3Cscript%3Ealert(1)%3C/script%3E").text
    assert "alert(1)" not in page and 'id="notice"' not in page and 'id="error"' not in page
    known = site.browser.get("/account/security?msg=step_up_needed&lang=en").text
    assert 'id="error"' in known


def test_the_passkey_script_is_a_file_served_from_here(site: Any) -> None:
    script = site.browser.get("/static/passkeys.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "navigator.credentials" in script.text and "fetch(" not in script.text


def test_the_mfa_page_says_when_the_account_has_no_passkey(site: Any) -> None:
    login = site.browser.get("/login?lang=en")
    site.browser.post("/login", data={"csrf": _csrf(login.text), "username": "alice", "password": STRONG})
    mfa = site.browser.get("/mfa")
    none = site.browser.post("/mfa/passkey", data={"csrf": _csrf(mfa.text)})
    assert none.status_code == 409 and "This account has no passkey." in none.text
