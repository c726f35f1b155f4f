"""The verification report through the real app on both back ends: ``GET /v1/audit/report``
resumes from the checkpoint it verified, ``?full=true`` is an admin's logged action, and the
page ``/audit/report`` shows the same report to a signed-in auditor (times in Vietnam time,
Vietnamese or English leading), sends others to sign in, and refuses a role without audit:read."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from integrity.incremental_verification import FULL_VERIFICATION_ACTION
from integrity.labels import utc_stamp, vietnam_time
from tests.auth.support import STRONG, wire_accounts
from tests.conftest import Service


def test_the_report_resumes_from_the_checkpoint_it_verified(service: Service) -> None:
    headers = service.auth("audit:read")
    service.state.audit.checkpoint_now()
    first = service.client.get("/v1/audit/report", headers=headers).json()
    assert first["verdict"] == "verified" and first["verification"] == "full" and first["resumed_from"] is None
    for i in range(3):
        service.state.audit.record("system", "receipt.issued", f"R-{i}", {"i": i}, {"name": f"Phạm Văn {i}"})
    service.state.audit.checkpoint_now()
    second = service.client.get("/v1/audit/report", headers=headers).json()
    assert second["verification"] == "incremental" and second["resumed_from"] == first["verified_tree_size"]
    assert second["verdict"] == "verified" and second["entries_checked"] == service.state.audit.size()
    full = service.state.audit.verify().to_dict()
    assert {key: second[key] for key in full} == full
    page = service.client.get("/v1/audit/report?format=html", headers=headers).text
    assert "tăng dần" in page and f"checkpoint {second['verified_tree_size']}" in page


def test_a_full_re_verification_is_an_admins_logged_action(service: Service) -> None:
    reader = service.auth("audit:read")
    admin = service.auth("audit:read", "admin")
    admin_only = service.auth("admin")
    service.state.audit.checkpoint_now()
    size = service.state.audit.size()
    refused = service.client.get("/v1/audit/report?full=true", headers=reader)
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")
    assert "admin" in refused.json()["detail"]
    assert service.client.get("/v1/audit/report?full=true", headers=admin_only).status_code == 403
    assert service.state.audit.size() == size  # nothing ran, nothing was logged
    answer = service.client.get("/v1/audit/report?full=true&format=json", headers=admin)
    assert answer.status_code == 200
    data = answer.json()
    assert data["verification"] == "full" and data["verdict"] == "verified" and data["entries_checked"] == size
    logged = service.state.audit.entry(size)
    assert logged.action == FULL_VERIFICATION_ACTION and logged.actor.startswith("client:")
    assert logged.data == {
        "verdict": "verified",
        "fault": None,
        "entries_checked": size,
        "verified_tree_size": size,
        "root_hash": data["root_hash"],
    }
    # The entry of the full run comes after the tree it verified: the next report resumes from there.
    resumed = service.client.get("/v1/audit/report", headers=reader).json()
    assert resumed["verification"] == "incremental" and resumed["resumed_from"] == size
    assert resumed["verdict"] == "not_verified" and resumed["unanchored"]["first"] == size


# ------------------------------------------------------------------ the page


@pytest.fixture
def site(service: Service) -> Iterator[Any]:
    accounts = wire_accounts(service)
    accounts.create_user("kiemtoan", STRONG, "auditor", actor="user:root", reason="auditor", mfa_required=False)
    accounts.create_user("alice", STRONG, "officer", actor="user:root", reason="officer", mfa_required=False)
    accounts.create_user("binh", STRONG, "auditor", actor="user:root", reason="auditor, second factor to set up")
    service.browser = TestClient(service.app, base_url="https://testserver", follow_redirects=False)
    yield service
    service.browser.close()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match
    return match.group(1)


def _sign_in(site: Any, username: str) -> str:
    login = site.browser.get("/login")
    signed = site.browser.post("/login", data={"csrf": _csrf(login.text), "username": username, "password": STRONG})
    assert signed.status_code == 303
    return str(signed.headers["location"])


def test_an_auditor_reads_the_report_with_checkpoint_times_in_vietnam_time(site: Any) -> None:
    assert _sign_in(site, "kiemtoan") == "/account/security"
    assert 'id="audit-report" href="/audit/report"' in site.browser.get("/account/security").text
    signed = site.state.audit.checkpoint_now()
    page = site.browser.get("/audit/report")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<html lang="vi">' in html and "KẾT LUẬN: TOÀN VẸN" in html
    assert html.index("Báo cáo kiểm tra tính toàn vẹn") < html.index("Audit log integrity verification report")
    # The checkpoints' table has a time column: when the log signed each, in Vietnam time.
    table = html[html.index('id="checkpoints"') :]
    assert "Thời điểm" in table[: table.index("</tr>")]
    moment = f'<time datetime="{utc_stamp(signed.signed_at)}">{vietnam_time(signed.signed_at, "vi")}</time>'
    assert moment in table and "(giờ Việt Nam, UTC+7)" in moment
    # The same self-contained report, under the page policy that admits its sheet by hash only.
    policy = page.headers["content-security-policy"]
    sheets = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert len(sheets) == 1
    digest = "'sha256-" + base64.b64encode(hashlib.sha256(sheets[0].encode()).digest()).decode() + "'"
    style_src = next(d for d in policy.split(";") if d.strip().startswith("style-src")).split()
    assert digest in style_src and "'unsafe-inline'" not in style_src and "script-src 'self'" in policy
    assert "<script" not in html and " style=" not in html and page.headers["cache-control"] == "no-store"
    english = site.browser.get("/audit/report?lang=en").text
    assert '<html lang="en">' in english and vietnam_time(signed.signed_at, "en") in english
    assert english.index("Audit log integrity verification report") < english.index("Báo cáo kiểm tra tính toàn vẹn")
    assert 'href="/audit/report?lang=vi"' in english
    assert '<html lang="en">' in site.browser.get("/audit/report").text  # the choice is remembered


def test_the_report_page_needs_a_full_session(site: Any) -> None:
    answer = site.browser.get("/audit/report")
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    # An auditor whose second factor is still to be set up is not signed in yet.
    assert _sign_in(site, "binh") == "/account/totp"
    answer = site.browser.get("/audit/report")
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert "audit_verification" not in site.state.services  # nothing was verified for them


def test_a_role_without_audit_read_gets_a_403_page_without_the_report(site: Any) -> None:
    assert _sign_in(site, "alice") == "/account/security"
    assert 'id="audit-report"' not in site.browser.get("/account/security").text
    refused = site.browser.get("/audit/report")
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/html")
    assert "Không có quyền xem báo cáo" in refused.text and "KẾT LUẬN" not in refused.text
    assert "<style" not in refused.text and "style-src 'self';" in refused.headers["content-security-policy"]
    english = site.browser.get("/audit/report?lang=en")
    assert english.status_code == 403 and "Not allowed to see the report" in english.text
    assert "audit_verification" not in site.state.services
