"""The personal signing page (``/account/signing``): upload a document, see its name, size,
SHA-256 and format and whose key signs, confirm with a TOTP code, download the signature.
Vietnamese by default, English on the toggle; forms need the CSRF token; a wrong code asks
again and signs nothing. Both back ends."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from integrity.personal_signing import ACTION_SIGNED
from tests.api.personal_support import DEMO_CA, LETTER, SigningPerson, enrol, entries, give_key
from tests.auth.support import STRONG, wire_accounts
from tests.conftest import Service
from tests.signing._pki import run_openssl
from tests.token_support import SoftToken

LAN = "Nguyễn Thị Lan"
NAME = "giấy xác nhận.txt"


@pytest.fixture
def site(db_url: str, soft_token: SoftToken) -> Iterator[tuple[Service, TestClient, SigningPerson]]:
    service = Service(db_url, **soft_token.settings())
    wire_accounts(service)
    lan = give_key(service, soft_token, enrol(service, "lan"), LAN)
    browser = TestClient(service.app, base_url="https://testserver", follow_redirects=False)
    login = browser.get("/login")
    step1 = browser.post("/login", data={"csrf": _csrf(login.text), "username": "lan", "password": STRONG})
    assert step1.headers["location"] == "/mfa"
    mfa = browser.get("/mfa")
    done = browser.post("/mfa", data={"csrf": _csrf(mfa.text), "code": lan.code(service.clock)})
    assert done.status_code == 303, done.text
    service.clock.advance(30)
    yield service, browser, lan
    browser.close()
    service.close()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "every form carries a CSRF token"
    return match.group(1)


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, name
    return match.group(1)


def _cell(html: str, cell_id: str) -> str:
    match = re.search(rf'id="{cell_id}"[^>]*>(.*?)</td>', html, re.S)
    assert match, cell_id
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def _upload(browser: TestClient, page: str, fmt: str = "cms", document: bytes = LETTER, csrf: str | None = None) -> Any:
    return browser.post(
        "/account/signing",
        data={"csrf": csrf if csrf is not None else _csrf(page), "format": fmt},
        files={"document": (NAME, document, "text/plain")},
    )


def _confirm(browser: TestClient, review: str, code: str) -> Any:
    fields = {n: _field(review, n) for n in ("csrf", "activation", "name", "document_b64")}
    return browser.post("/account/signing/activate", data={**fields, "code": code})


def test_upload_review_confirm_and_download(site: Any, tmp_path: Path) -> None:
    service, browser, lan = site
    security = browser.get("/account/security")
    assert 'href="/account/signing"' in security.text and "Ký số cá nhân" in security.text
    page = browser.get("/account/signing")
    assert page.status_code == 200 and "<h1>Ký số cá nhân</h1>" in page.text
    assert 'enctype="multipart/form-data"' in page.text and "<script" not in page.text
    review = _upload(browser, page.text)
    assert review.status_code == 200, review.text
    assert _cell(review.text, "name") == NAME
    assert _cell(review.text, "size") == f"{len(LETTER)} byte"
    assert _cell(review.text, "sha256") == hashlib.sha256(LETTER).hexdigest()
    assert 'data-format="cms"' in review.text and _cell(review.text, "signer") == LAN
    assert entries(service, ACTION_SIGNED) == []

    wrong = f"{(int(lan.code(service.clock)) + 1) % 1_000_000:06d}"
    again = _confirm(browser, review.text, wrong)
    assert again.status_code == 401 and 'id="error"' in again.text and 'name="code"' in again.text
    assert again.headers["www-authenticate"] == 'Session realm="bhxh-integrity"'
    assert entries(service, ACTION_SIGNED) == []

    download = _confirm(browser, again.text, lan.code(service.clock))
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/pkcs7-signature"
    disposition = download.headers["content-disposition"]
    assert (
        disposition.startswith("attachment;")
        and "filename*=UTF-8''gi%E1%BA%A5y%20x%C3%A1c%20nh%E1%BA%ADn.txt.p7s" in disposition
    )
    [entry] = entries(service, ACTION_SIGNED)
    assert entry.data["channel"] == "web" and entry.data["person"] == "lan"
    (tmp_path / "sig.p7s").write_bytes(download.content)
    (tmp_path / "letter.txt").write_bytes(LETTER)
    checked = run_openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", "sig.p7s", "-content", "letter.txt",
        "-CAfile", str(DEMO_CA), "-out", "/dev/null", cwd=tmp_path,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    # Confirmed once: the same form again signs nothing more.
    service.clock.advance(30)
    replay = _confirm(browser, again.text, lan.code(service.clock))
    assert replay.status_code == 409 and len(entries(service, ACTION_SIGNED)) == 1


def test_the_page_is_in_english_on_the_toggle(site: Any) -> None:
    _, browser, _ = site
    english = browser.get("/account/signing?lang=en")
    assert '<html lang="en">' in english.text and "<h1>Personal signing</h1>" in english.text
    review = _upload(browser, english.text, fmt="jws")
    assert "You are about to sign" in review.text and "a JWS signature" in review.text


def test_forms_without_the_csrf_token_or_session_do_nothing(site: Any) -> None:
    service, browser, lan = site
    page = browser.get("/account/signing")
    forged = _upload(browser, page.text, csrf="forged-token-" + "x" * 40)
    assert forged.status_code == 400 and 'name="code"' not in forged.text
    review = _upload(browser, page.text)
    fields = {n: _field(review.text, n) for n in ("activation", "name", "document_b64")}
    no_csrf = browser.post("/account/signing/activate", data={**fields, "csrf": "x", "code": lan.code(service.clock)})
    assert no_csrf.status_code == 400 and entries(service, ACTION_SIGNED) == []
    stranger = TestClient(service.app, base_url="https://testserver", follow_redirects=False)
    try:
        assert stranger.get("/account/signing").headers["location"] == "/login"
    finally:
        stranger.close()


def test_a_changed_document_in_the_confirmation_is_refused(site: Any) -> None:
    service, browser, lan = site
    review = _upload(browser, browser.get("/account/signing").text)
    fields = {n: _field(review.text, n) for n in ("csrf", "activation", "name")}
    changed = base64.b64encode(LETTER + b" (sua)").decode()
    answer = browser.post(
        "/account/signing/activate", data={**fields, "document_b64": changed, "code": lan.code(service.clock)}
    )
    assert answer.status_code == 409 and "tài liệu đã thay đổi" in answer.text
    assert entries(service, ACTION_SIGNED) == []
