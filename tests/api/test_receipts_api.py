"""HTTP: POST /v1/receipts, GET /v1/receipts/{code}[/pdf], POST /v1/receipts/verify (both back ends)."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from api.errors import Problem, problem_for
from integrity import errors as integrity_errors
from integrity.dossier_code import receipt_day
from integrity.receipt_tables import receipt_sequences
from tests.conftest import Service
from tests.integrity.test_receipts import slip_for
from tests.signing.test_pdf_signing import flip_byte_in_signed_range, renderer, replace_page_content

CODE_RE = re.compile(r"^000\.00\.31\.H29-\d{6}-\d{4}$")

# The statuses clients are told for this router's errors.
INTENDED_PROBLEMS = {
    integrity_errors.UnknownReceivingUnit: Problem(422, "unknown-receiving-unit", "Unknown receiving unit"),
    integrity_errors.InvalidReceiptRequest: Problem(422, "invalid-receipt-request", "Invalid receipt request"),
    integrity_errors.InvalidDossierCode: Problem(422, "invalid-dossier-code", "Invalid dossier code"),
    integrity_errors.DailySequenceExhausted: Problem(
        409, "daily-sequence-exhausted", "Daily dossier sequence exhausted"
    ),
    integrity_errors.IdempotencyKeyReused: Problem(
        422, "idempotency-key-reused", "Idempotency-Key reused with a different request"
    ),
    integrity_errors.ReceiptNotFound: Problem(404, "receipt-not-found", "Receipt not found"),
    integrity_errors.UnreadableReceipt: Problem(422, "unreadable-pdf", "Not a readable PDF"),
    integrity_errors.ReceiptSigningFailed: Problem(503, "receipt-signing-unavailable", "Receipt signing unavailable"),
}


@pytest.fixture
def api(service: Service) -> Service:
    return service


def body(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "receiving_unit": {"code": "000.00.31.H29", "name": "Bảo hiểm xã hội Thành phố Hồ Chí Minh"},
        "procedure_code": "1.001234",
        "procedure_name": "Giải quyết hưởng chế độ ốm đau",
        "applicant": {"name": "Nguyễn Thị Ánh Tuyết", "id_number": "079190001234", "phone": "0901234567"},
        "documents": [{"name": "Tờ khai đề nghị hưởng chế độ ốm đau", "copies": 1, "original": True}],
        "official": {"name": "Đặng Văn Lợi", "title": "Chuyên viên"},
        "appointment_at": (date.today() + timedelta(days=7)).isoformat(),
    }
    values.update(changes)
    return values


def _problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith(":" + slug) and problem["status"] == status
    return problem


def test_issue_returns_201_with_code_hash_audit_seq_and_pdf_url(api: Service) -> None:
    response = api.client.post("/v1/receipts", json=body(), headers=api.auth("receipts:issue"))
    assert response.status_code == 201, response.text
    issued = response.json()
    assert CODE_RE.match(issued["code"]) and issued["code"].endswith("-0001")
    assert re.fullmatch(r"[0-9a-f]{64}", issued["sha256"]) and isinstance(issued["audit_seq"], int)
    assert issued["pdf_url"].endswith(f"/v1/receipts/{issued['code']}/pdf")
    assert response.headers["location"] == f"/v1/receipts/{issued['code']}"
    assert api.state.audit.entry(issued["audit_seq"]).subject == issued["code"]


def test_metadata_and_pdf_match_the_registry(api: Service) -> None:
    issued = api.client.post("/v1/receipts", json=body(), headers=api.auth("receipts:issue")).json()
    reader = api.auth("receipts:read")
    meta = api.client.get(f"/v1/receipts/{issued['code']}", headers=reader)
    assert meta.status_code == 200
    record = meta.json()
    assert record["sha256"] == issued["sha256"] and record["audit_seq"] == issued["audit_seq"]
    assert record["sequence"] == 1 and record["pades_level"] == "B-B"
    assert record["official"] == {"name": "Đặng Văn Lợi", "title": "Chuyên viên"}
    assert record["issued_by"].startswith("client:")
    pdf = api.client.get(f"/v1/receipts/{issued['code']}/pdf", headers=reader)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    digest = hashlib.sha256(pdf.content).digest()
    assert digest.hex() == issued["sha256"]
    assert pdf.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"


def test_verify_accepts_the_issued_pdf(api: Service) -> None:
    issued = api.client.post("/v1/receipts", json=body(), headers=api.auth("receipts:issue")).json()
    pdf = api.client.get(f"/v1/receipts/{issued['code']}/pdf", headers=api.auth("receipts:read")).content
    response = api.client.post(
        "/v1/receipts/verify", content=pdf, headers={**api.auth("verify"), "Content-Type": "application/pdf"}
    )
    assert response.status_code == 200, response.text
    verdict = response.json()
    assert verdict["issued_by_system"] is True and verdict["reasons"] == []
    assert verdict["code"] == issued["code"] and verdict["registered"] is True and verdict["hash_matches"] is True
    assert verdict["modified_after_signing"] is False
    assert verdict["signature"]["intact"] is True and verdict["signature"]["trusted_signer"] is True


@pytest.mark.parametrize(
    ("tamper", "reasons"),
    [
        (replace_page_content, {"modified_after_signing", "hash_mismatch"}),
        (flip_byte_in_signed_range, {"signature_not_intact", "hash_mismatch"}),
    ],
    ids=["page-replaced", "byte-flipped"],
)
def test_verify_flags_a_tampered_receipt_with_reasons_in_both_languages(
    api: Service, tamper: Any, reasons: set[str]
) -> None:
    issued = api.client.post("/v1/receipts", json=body(), headers=api.auth("receipts:issue")).json()
    pdf = api.client.get(f"/v1/receipts/{issued['code']}/pdf", headers=api.auth("receipts:read")).content
    response = api.client.post(
        "/v1/receipts/verify", content=tamper(pdf), headers={**api.auth("verify"), "Content-Type": "application/pdf"}
    )
    assert response.status_code == 200
    verdict = response.json()
    assert verdict["issued_by_system"] is False
    assert {r["code"] for r in verdict["reasons"]} == reasons
    assert all(r["vi"] and r["en"] for r in verdict["reasons"])


def test_a_byte_flipped_in_the_signed_range_makes_the_signature_not_valid(api: Service) -> None:
    issued = api.client.post("/v1/receipts", json=body(), headers=api.auth("receipts:issue")).json()
    pdf = api.client.get(f"/v1/receipts/{issued['code']}/pdf", headers=api.auth("receipts:read")).content
    headers = {**api.auth("verify"), "Content-Type": "application/pdf"}
    genuine = api.client.post("/v1/receipts/verify", content=pdf, headers=headers).json()["signature"]
    assert (genuine["valid"], genuine["intact"], genuine["value_verifies"], genuine["chain_trusted"]) == (
        True,
        True,
        True,
        True,
    )
    response = api.client.post("/v1/receipts/verify", content=flip_byte_in_signed_range(pdf), headers=headers)
    assert response.status_code == 200, response.text
    signature = response.json()["signature"]
    # The signed attributes still verify under the key; the bytes they vouch for do not.
    assert signature["intact"] is False and signature["value_verifies"] is True
    assert signature["valid"] is False
    assert response.json()["issued_by_system"] is False


def test_a_receipt_changed_by_a_later_update_keeps_a_valid_signature_over_its_signed_revision(api: Service) -> None:
    issued = api.client.post("/v1/receipts", json=body(), headers=api.auth("receipts:issue")).json()
    pdf = api.client.get(f"/v1/receipts/{issued['code']}/pdf", headers=api.auth("receipts:read")).content
    response = api.client.post(
        "/v1/receipts/verify",
        content=replace_page_content(pdf),
        headers={**api.auth("verify"), "Content-Type": "application/pdf"},
    )
    verdict = response.json()
    # What the signer signed is untouched: the signature stands, the file as a whole does not.
    assert verdict["signature"]["valid"] is True and verdict["modified_after_signing"] is True
    assert verdict["issued_by_system"] is False


def test_verify_flags_an_unsigned_pdf_made_elsewhere(api: Service) -> None:
    forged = renderer().render(slip_for(f"000.00.31.H29-{receipt_day(api.clock()):%y%m%d}-0001"))
    response = api.client.post(
        "/v1/receipts/verify", content=forged, headers={**api.auth("verify"), "Content-Type": "application/pdf"}
    )
    assert response.status_code == 200
    assert response.json()["issued_by_system"] is False
    assert [r["code"] for r in response.json()["reasons"]] == ["no_signature"]


def test_verify_answers_422_for_non_pdf_input_never_500(api: Service) -> None:
    headers = {**api.auth("verify"), "Content-Type": "application/pdf"}
    for content in (b"", b"GIF89a not a pdf", b"%PDF-1.7\n%%EOF", b"%PDF-1.4\n" + bytes(range(256)) * 4):
        _problem(api.client.post("/v1/receipts/verify", content=content, headers=headers), 422, "unreadable-pdf")


def test_verify_answers_422_for_a_truncated_receipt(api: Service) -> None:
    issued = api.client.post("/v1/receipts", json=body(), headers=api.auth("receipts:issue")).json()
    pdf = api.client.get(f"/v1/receipts/{issued['code']}/pdf", headers=api.auth("receipts:read")).content
    response = api.client.post(
        "/v1/receipts/verify",
        content=pdf[: len(pdf) * 2 // 3],
        headers={**api.auth("verify"), "Content-Type": "application/pdf"},
    )
    _problem(response, 422, "unreadable-pdf")


def test_verify_wants_a_raw_pdf_body(api: Service) -> None:
    response = api.client.post("/v1/receipts/verify", json={"pdf": "base64…"}, headers=api.auth("verify"))
    _problem(response, 415, "unsupported-media-type")


def test_idempotency_key_retry_returns_the_same_receipt(api: Service) -> None:
    headers = {**api.auth("receipts:issue"), "Idempotency-Key": "portal-req-42"}
    first = api.client.post("/v1/receipts", json=body(), headers=headers)
    again = api.client.post("/v1/receipts", json=body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    changed = api.client.post("/v1/receipts", json=body(procedure_code="1.000999"), headers=headers)
    _problem(changed, 422, "idempotency-key-reused")


def test_ten_thousandth_receipt_of_the_day_is_409(api: Service) -> None:
    with api.state.engine.begin() as conn:
        conn.execute(
            insert(receipt_sequences).values(
                unit_code="000.00.31.H29", receipt_day=receipt_day(api.clock()), last_value=9999
            )
        )
    response = api.client.post("/v1/receipts", json=body(), headers=api.auth("receipts:issue"))
    problem = _problem(response, 409, "daily-sequence-exhausted")
    assert "9999" in problem["detail"]


BAD_BODIES = [
    ({"receiving_unit": {"code": "000.00.99.X99"}}, 422, "unknown-receiving-unit"),
    ({"receiving_unit": {"code": "000.00.31.H29", "name": "Một đơn vị khác"}}, 422, "invalid-receipt-request"),
    ({"appointment_at": "2020-01-01"}, 422, "invalid-receipt-request"),
    ({"appointment_at": "2099-01-01T09:00:00"}, 422, "validation-error"),  # no UTC offset
    ({"applicant": {"name": "A"}}, 422, "validation-error"),
    ({"unexpected": 1}, 422, "validation-error"),
    ({"documents": [{"name": "Giấy", "copies": 0}]}, 422, "validation-error"),
]


def test_bad_receipt_requests_are_refused_and_take_no_code(api: Service) -> None:
    headers = api.auth("receipts:issue")
    for changes, status, slug in BAD_BODIES:
        _problem(api.client.post("/v1/receipts", json=body(**changes), headers=headers), status, slug)
    ok = api.client.post("/v1/receipts", json=body(), headers=headers)
    assert ok.json()["code"].endswith("-0001")  # no refused request used a sequence number


def test_appointment_may_be_a_date_time_with_offset(api: Service) -> None:
    at = (date.today() + timedelta(days=3)).isoformat() + "T08:00:00+07:00"
    assert (
        api.client.post("/v1/receipts", json=body(appointment_at=at), headers=api.auth("receipts:issue")).status_code
        == 201
    )


def test_unknown_and_malformed_codes(api: Service) -> None:
    reader = api.auth("receipts:read")
    _problem(api.client.get("/v1/receipts/000.00.31.H29-261123-0042", headers=reader), 404, "receipt-not-found")
    _problem(api.client.get("/v1/receipts/000.00.31.H29-261123-0042/pdf", headers=reader), 404, "receipt-not-found")
    _problem(api.client.get("/v1/receipts/not-a-code", headers=reader), 422, "invalid-dossier-code")


def test_scopes_are_enforced(api: Service) -> None:
    assert api.client.post("/v1/receipts", json=body()).status_code == 401
    assert api.client.post("/v1/receipts", json=body(), headers=api.auth("receipts:read")).status_code == 403
    assert (
        api.client.get("/v1/receipts/000.00.31.H29-261123-0001", headers=api.auth("receipts:issue")).status_code == 403
    )
    response = api.client.post(
        "/v1/receipts/verify", content=b"%PDF", headers={**api.auth("receipts:read"), "Content-Type": "application/pdf"}
    )
    assert response.status_code == 403


def test_parallel_requests_get_distinct_consecutive_codes(api: Service) -> None:
    headers = api.auth("receipts:issue")
    codes: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        client = TestClient(api.app, raise_server_exceptions=False)
        for _ in range(2):
            response = client.post("/v1/receipts", json=body(), headers=headers)
            with lock:
                (
                    codes.append(response.json()["code"])
                    if response.status_code == 201
                    else failures.append(response.text)
                )

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sorted(int(c.rsplit("-", 1)[1]) for c in codes) == list(range(1, 13))


def test_intended_error_statuses_are_what_the_problem_table_gives() -> None:
    # Fails loudly if api/errors.py maps these errors differently from what clients are told.
    for exc_type, problem in INTENDED_PROBLEMS.items():
        found = problem_for(exc_type("x"))
        assert found is not None, exc_type.__name__
        assert (found.status, found.slug) == (problem.status, problem.slug), exc_type.__name__
