"""The public receipt check /r/{code} over HTTP (both back ends): JSON and the page in Vietnamese
and English, nothing personal, revocation, unknown codes, uploads (genuine, altered, another
slip, not a PDF, too large), the address budget, and the QR code of an issued slip."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from integrity.receipt_public import MAX_PUBLIC_FILE_BYTES
from integrity.receipt_tables import receipt_idempotency_keys, receipt_pdfs, receipt_revocations, receipts
from tests.api.test_receipts_api import body
from tests.conftest import Service
from tests.integrity.test_receipts import slip_for
from tests.qr_support import pdf_qr_text
from tests.signing.test_pdf_signing import flip_byte_in_signed_range, renderer, replace_page_content

JSON = {"Accept": "application/json"}
APPLICANT = body()["applicant"]
OFFICIAL = body()["official"]
PERSONAL = (APPLICANT["name"], APPLICANT["id_number"], APPLICANT["phone"], OFFICIAL["name"])


@pytest.fixture
def api(service: Service) -> Service:
    return service


def _issue(api: Service, **changes: Any) -> tuple[str, bytes]:
    issued = api.client.post("/v1/receipts", json=body(**changes), headers=api.auth("receipts:issue"))
    assert issued.status_code == 201, issued.text
    code = issued.json()["code"]
    pdf = api.client.get(f"/v1/receipts/{code}/pdf", headers=api.auth("receipts:read")).content
    return code, pdf


def _upload(api: Service, code: str, data: bytes, *, as_json: bool = True, lang: str = "vi") -> Any:
    return api.client.post(
        f"/r/{code}?lang={lang}",
        files={"file": ("giay-tiep-nhan.pdf", data, "application/pdf")},
        headers=JSON if as_json else {"Accept": "text/html"},
    )


def _no_personal_data(text: str) -> None:
    for value in PERSONAL:
        assert value not in text, value
    assert body()["procedure_name"] not in text  # what was applied for can be sensitive too


def _stored(api: Service) -> dict[str, int]:
    with api.state.engine.connect() as conn:
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (receipts, receipt_pdfs, receipt_revocations, receipt_idempotency_keys)
        }
    counts["audit"] = api.state.audit.size()
    return counts


# ---------------------------------------------------------------- the facts of a code


def test_json_says_who_issued_the_code_when_and_the_pdf_hash_and_nothing_personal(api: Service) -> None:
    code, pdf = _issue(api)
    response = api.client.get(f"/r/{code}", headers=JSON)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "Accept"
    facts = response.json()
    assert facts["code"] == code and facts["issued_by_system"] is True
    assert facts["unit"] == {"code": "000.00.31.H29", "name": "Bảo hiểm xã hội Thành phố Hồ Chí Minh"}
    assert facts["issued_at"].startswith(api.clock().date().isoformat())
    record = api.client.get(f"/v1/receipts/{code}", headers=api.auth("receipts:read")).json()
    assert facts["pdf_sha256"] == record["sha256"] and facts["pdf_size_bytes"] == len(pdf)
    assert facts["revoked"] is False and facts["revocation"] is None and facts["valid"] is True
    assert set(facts) == {
        "code",
        "valid",
        "issued_by_system",
        "unit",
        "receipt_date",
        "issued_at",
        "pdf_sha256",
        "pdf_size_bytes",
        "pades_level",
        "revoked",
        "revocation",
    }
    _no_personal_data(response.text)


def test_the_page_is_vietnamese_by_default_and_english_on_request(api: Service) -> None:
    code, _ = _issue(api)
    record = api.client.get(f"/v1/receipts/{code}", headers=api.auth("receipts:read")).json()
    page = api.client.get(f"/r/{code}", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<html lang="vi">' in page.text
    assert "Mã hồ sơ này do Hệ thống thông tin một cửa điện tử cấp." in page.text
    assert code in page.text and record["sha256"] in page.text
    assert "Bảo hiểm xã hội Thành phố Hồ Chí Minh" in page.text and "Còn hiệu lực" in page.text
    assert "set-cookie" not in page.headers  # a public page sets no cookie it does not need
    _no_personal_data(page.text)
    english = api.client.get(f"/r/{code}?lang=en")
    assert '<html lang="en">' in english.text and "This dossier code was issued by the one-stop system." in english.text
    _no_personal_data(english.text)


@pytest.mark.parametrize(
    ("accept", "json_wanted"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", True),
        ("application/json;q=0.9, text/html", False),
        ("text/html;q=0.5, application/json", True),
        ("application/*", True),
        ("text/html, application/json", False),
    ],
)
def test_content_negotiation_gives_json_only_when_it_is_preferred(
    api: Service, accept: str | None, json_wanted: bool
) -> None:
    code, _ = _issue(api)
    response = api.client.get(f"/r/{code}", headers={} if accept is None else {"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json" if json_wanted else "text/html")


def test_a_revoked_receipt_shows_revoked_with_when_and_why(api: Service) -> None:
    code, _ = _issue(api)
    revoked = api.client.post(
        f"/v1/receipts/{code}/revocation", json={"reason": "dossier_withdrawn"}, headers=api.auth("receipts:issue")
    )
    assert revoked.status_code == 201, revoked.text
    facts = api.client.get(f"/r/{code}", headers=JSON).json()
    assert facts["issued_by_system"] is True and facts["revoked"] is True and facts["valid"] is False
    assert facts["revocation"]["reason"]["code"] == "dossier_withdrawn"
    assert facts["revocation"]["revoked_at"].startswith(api.clock().date().isoformat())
    assert set(facts["revocation"]) == {"revoked_at", "reason"}  # never who revoked it
    page = api.client.get(f"/r/{code}")
    assert "giấy tiếp nhận đã bị thu hồi" in page.text and "Người nộp đã rút hồ sơ." in page.text
    assert 'class="error" id="status"' in page.text


def test_an_unknown_code_is_404_and_a_malformed_one_the_same(api: Service) -> None:
    code, _ = _issue(api)
    unknown = code[:-4] + "0042"
    for text in (unknown, "000.00.99.X99-261123-0001", "not-a-code", "000.00.31.H29-261399-0001"):
        problem = api.client.get(f"/r/{text}", headers=JSON)
        assert problem.status_code == 404, text
        assert problem.headers["content-type"].startswith("application/problem+json")
        assert problem.json()["type"].endswith(":receipt-not-found")
        assert problem.json()["detail"] == "no receipt issued by this system has this code"
        page = api.client.get(f"/r/{text}")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "Không có giấy tiếp nhận nào do hệ thống này cấp mang mã này." in page.text
        assert 'type="file"' not in page.text  # nothing to check a file against


# ---------------------------------------------------------------- presenting a file


def test_the_issued_pdf_is_genuine_and_nothing_is_stored(api: Service) -> None:
    code, pdf = _issue(api)
    before = _stored(api)
    response = _upload(api, code, pdf)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["verdict"] == "genuine" and result["genuine"] is True and result["reasons"] == []
    assert result["sha256"] == result["issued_sha256"] == result["receipt"]["pdf_sha256"]
    _no_personal_data(response.text)
    page = _upload(api, code, pdf, as_json=False)
    assert page.status_code == 200
    assert 'data-verdict="genuine"' in page.text
    assert "Đúng là giấy tiếp nhận do hệ thống cấp cho mã này, không bị sửa đổi." in page.text
    _no_personal_data(page.text)
    raw = api.client.post(f"/r/{code}", content=pdf, headers={**JSON, "Content-Type": "application/pdf"})
    assert raw.status_code == 200 and raw.json()["verdict"] == "genuine"
    assert _stored(api) == before  # checking writes nothing, and keeps no copy


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [(flip_byte_in_signed_range, "signature_not_intact"), (replace_page_content, "modified_after_signing")],
    ids=["one-byte-flipped", "page-replaced"],
)
def test_a_changed_copy_is_altered_with_reasons(api: Service, tamper: Any, reason: str) -> None:
    code, pdf = _issue(api)
    result = _upload(api, code, tamper(pdf)).json()
    assert result["verdict"] == "altered" and result["genuine"] is False
    assert result["sha256"] != result["issued_sha256"]
    assert reason in {r["code"] for r in result["reasons"]} and "hash_mismatch" in {
        r["code"] for r in result["reasons"]
    }
    page = _upload(api, code, tamper(pdf), as_json=False, lang="en")
    assert 'data-verdict="altered"' in page.text
    assert "This file was altered: it is not the receipt the system issued." in page.text


def test_another_genuine_slip_or_a_forgery_is_not_this_receipt(api: Service) -> None:
    code, _ = _issue(api)
    other_code, other_pdf = _issue(api)
    other = _upload(api, code, other_pdf).json()
    assert other["verdict"] == "not_this_receipt" and [r["code"] for r in other["reasons"]] == ["another_code"]
    forged = renderer().render(slip_for(code))  # the same code, printed elsewhere, unsigned
    result = _upload(api, code, forged).json()
    assert result["verdict"] == "not_this_receipt"
    assert [r["code"] for r in result["reasons"]] == ["no_signature"]
    page = _upload(api, code, forged, as_json=False)
    assert "Tệp này không phải giấy tiếp nhận hệ thống đã cấp cho mã này." in page.text
    assert other_code != code


def test_the_issued_file_of_a_revoked_receipt_is_revoked_not_genuine(api: Service) -> None:
    code, pdf = _issue(api)
    api.client.post(
        f"/v1/receipts/{code}/revocation", json={"reason": "issued_in_error"}, headers=api.auth("receipts:issue")
    )
    result = _upload(api, code, pdf).json()
    assert result["verdict"] == "revoked" and result["genuine"] is False
    assert result["issued_by_system"] is True and result["revoked"] is True
    assert [r["code"] for r in result["reasons"]] == ["receipt_revoked"]
    page = _upload(api, code, pdf, as_json=False)
    assert 'data-verdict="revoked"' in page.text and 'class="error" id="verdict"' in page.text
    assert "Đúng là giấy do hệ thống cấp cho mã này, nhưng giấy đã bị thu hồi." in page.text
    assert "không bị sửa đổi" not in page.text  # never the "genuine" sentence
    english = _upload(api, code, pdf, as_json=False, lang="en")
    assert "The receipt under this dossier code was revoked: it is no longer valid." in english.text


def test_bad_uploads_get_clean_4xx_in_json_and_on_the_page(api: Service) -> None:
    code, _ = _issue(api)
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        (
            {"files": {"file": ("x.pdf", b"GIF89a not a pdf", "application/pdf")}},
            422,
            "unreadable-pdf",
            "Tệp không phải là tệp PDF đọc được.",
        ),
        (
            {"files": {"file": ("x.pdf", b"", "application/pdf")}},
            422,
            "unreadable-pdf",
            "Tệp không phải là tệp PDF đọc được.",
        ),
        (
            {"data": {"other": "x"}, "files": {"other": ("x.pdf", b"%PDF-", "application/pdf")}},
            422,
            "unreadable-pdf",
            "Tệp không phải là tệp PDF đọc được.",
        ),
        (
            {"content": b"%PDF-1.7", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported-media-type",
            "Hãy gửi một tệp PDF.",
        ),
        (
            # Two files where the form takes one: the parser stops (multipart limits).
            {
                "files": [
                    ("file", ("a.pdf", b"%PDF-", "application/pdf")),
                    ("file", ("b.pdf", b"%PDF-", "application/pdf")),
                ]
            },
            400,
            "bad-request",
            "Không đọc được tệp gửi lên.",
        ),
    ]
    for request, status, slug, text in cases:
        headers = request.pop("headers", {})
        answer = api.client.post(f"/r/{code}", headers={**JSON, **headers}, **request)
        assert answer.status_code == status, (slug, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["type"].endswith(":" + slug)
        page = api.client.post(f"/r/{code}", headers={"Accept": "text/html", **headers}, **request)
        assert page.status_code == status and text in page.text, slug
        assert 'id="facts"' in page.text  # the code's facts stay on the page


def test_a_file_larger_than_any_receipt_is_413_before_it_is_checked(api: Service) -> None:
    code, pdf = _issue(api)
    big = pdf + b"\n%" + b"x" * (MAX_PUBLIC_FILE_BYTES - len(pdf))
    assert len(big) > MAX_PUBLIC_FILE_BYTES
    answer = _upload(api, code, big)
    assert answer.status_code == 413 and answer.json()["type"].endswith(":receipt-file-too-large")
    page = _upload(api, code, big, as_json=False)
    assert page.status_code == 413 and "Tệp quá lớn" in page.text
    raw = api.client.post(f"/r/{code}", content=big, headers={**JSON, "Content-Type": "application/pdf"})
    assert raw.status_code == 413
    # Past the service's body limit the middleware refuses it before the route reads anything.
    huge = api.client.post(f"/r/{code}", content=b"%PDF" + b"0" * (10 * 1024 * 1024), headers=JSON)
    assert huge.status_code == 413


def test_an_upload_for_an_unknown_code_is_404(api: Service) -> None:
    code, pdf = _issue(api)
    answer = _upload(api, code[:-4] + "0099", pdf)
    assert answer.status_code == 404 and answer.json()["type"].endswith(":receipt-not-found")


# ---------------------------------------------------------------- the address budget


@pytest.fixture
def limited(db_url: str) -> Iterator[Service]:
    svc = Service(db_url, rate_limit_per_address="3/minute")
    yield svc
    svc.close()


def test_past_the_address_budget_the_check_is_429_as_problem_and_as_page(limited: Service) -> None:
    code, pdf = _issue(limited)
    assert limited.client.get(f"/r/{code}", headers=JSON).status_code == 200
    assert _upload(limited, code, pdf).status_code == 200
    assert limited.client.get(f"/r/{code}").status_code == 200
    refused = limited.client.get(f"/r/{code}", headers=JSON)
    assert refused.status_code == 429 and refused.json()["type"].endswith(":rate-limited")
    assert int(refused.headers["retry-after"]) >= 1
    page = limited.client.get(f"/r/{code}")
    assert page.status_code == 429 and int(page.headers["retry-after"]) >= 1
    assert "Quá nhiều yêu cầu." in page.text and 'id="facts"' not in page.text  # nothing looked up
    upload = _upload(limited, code, pdf)
    assert upload.status_code == 429  # refused before the file is parsed


def test_the_checks_texts_hide_none_of_the_shared_page_texts() -> None:
    from api.receipt_check import CHECK_TEXTS
    from api.web import TEXTS

    assert not set(CHECK_TEXTS) & set(TEXTS)
    assert all(vi and en for vi, en in CHECK_TEXTS.values())


# ---------------------------------------------------------------- the QR code


def test_the_qr_code_of_an_issued_slip_opens_its_public_check(api: Service, tmp_path: Path) -> None:
    code, pdf = _issue(api)
    decoded = pdf_qr_text(pdf, tmp_path)
    assert decoded == f"http://testserver/r/{code}"
    path = decoded.removeprefix("http://testserver")
    assert api.client.get(path, headers=JSON).json()["code"] == code
    assert json.loads(api.client.get(path, headers=JSON).text)["revoked"] is False
