"""An issued slip carries the items of form 01 (Circular 01/2018/TT-VPCP): the managing body and
unit, the place name and date, the documents, the number of dossier sets, the processing time,
the times of receipt and of the result, where to collect it, and who signed the file and when.
Read back from the issued, signed PDF with pdftotext; the new request items are optional and
checked (422, and no code taken, when out of range)."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from integrity.dossier_code import VIETNAM_TIME
from tests.api.test_receipt_check import _issue
from tests.api.test_receipts_api import body
from tests.conftest import DEMO_KEYS, Service
from tests.tools import require_tool


@pytest.fixture
def api(service: Service) -> Service:
    return service


def _text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "issued.pdf"
    path.write_bytes(pdf)
    tool = require_tool("pdftotext", "poppler-utils")
    out = subprocess.run([tool, "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True, timeout=60)
    return " ".join(out.stdout.decode().split())


def _vn(moment: Any) -> str:
    local = moment.astimezone(VIETNAM_TIME)
    return f"{local:%H} giờ {local:%M} phút, ngày {local:%d} tháng {local:%m} năm {local:%Y}"


def test_the_issued_slip_carries_the_form_items(api: Service, tmp_path: Path) -> None:
    appointment = (
        (api.clock() + timedelta(days=10)).astimezone(VIETNAM_TIME).replace(hour=14, minute=0, second=0, microsecond=0)
    )
    code, pdf = _issue(
        api,
        dossier_sets=2,
        processing_days=10,
        appointment_at=appointment.isoformat(),
        result_place="Quầy số 3, Bộ phận một cửa, 117 Nguyễn Đình Chiểu, Quận 3",
        documents=[
            {"name": "Tờ khai đề nghị hưởng chế độ ốm đau", "copies": 1, "original": True},
            {"name": "Giấy ra viện", "copies": 2, "original": False},
        ],
    )
    text = _text(pdf, tmp_path)
    now = api.clock()
    signer = x509.load_pem_x509_certificate((DEMO_KEYS / "one-stop-signing.crt.pem").read_bytes())
    signer_name = signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    local_day = now.astimezone(VIETNAM_TIME)
    for expected in (
        "BẢO HIỂM XÃ HỘI VIỆT NAM",  # the managing body of the demo unit
        "BỘ PHẬN TIẾP NHẬN VÀ TRẢ KẾT QUẢ",
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        f"Thành phố Hồ Chí Minh, ngày {local_day:%d} tháng {local_day:%m} năm {local_day:%Y}",
        "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ",
        f"Mã hồ sơ: {code}",
        "Nội dung yêu cầu giải quyết: Giải quyết hưởng chế độ ốm đau",
        "1. Thành phần hồ sơ nộp gồm:",
        "Giấy ra viện",
        "2. Số lượng hồ sơ: 02 (bộ)",
        "3. Thời gian giải quyết hồ sơ theo quy định là: 10 ngày làm việc",
        f"4. Thời gian nhận hồ sơ: {_vn(now)}",
        f"5. Thời gian trả kết quả giải quyết hồ sơ: 14 giờ 00 phút, ngày {appointment:%d} tháng {appointment:%m}",
        "6. Đăng ký nhận kết quả tại: Quầy số 3, Bộ phận một cửa, 117 Nguyễn Đình Chiểu, Quận 3",
        f"số thứ tự: {code[-4:]}",
        "NGƯỜI NỘP HỒ SƠ",
        "NGƯỜI TIẾP NHẬN HỒ SƠ",
        "Đặng Văn Lợi",
        # The visible signature block names the signing certificate and the issuing time,
        # which is also the signature's claimed signing time.
        f"Ký bởi: {signer_name}",
        f"Thời gian ký: {_vn(now)}",
        f"/r/{code}",
    ):
        assert expected in text, expected


def test_without_the_new_items_the_slip_uses_the_units_settings(api: Service, tmp_path: Path) -> None:
    _, pdf = _issue(api, receiving_unit={"code": "000.00.00.G00"})
    text = _text(pdf, tmp_path)
    assert "Hà Nội, ngày" in text  # the demo unit's configured place
    assert "2. Số lượng hồ sơ: 01 (bộ)" in text
    assert "6. Đăng ký nhận kết quả tại: Bộ phận tiếp nhận và trả kết quả – Bảo hiểm xã hội Việt Nam" in text


def test_a_place_name_in_the_request_replaces_the_units(api: Service, tmp_path: Path) -> None:
    _, pdf = _issue(api, place_name="Thủ Đức", processing_days=3, processing_working_days=False)
    text = _text(pdf, tmp_path)
    assert "Thủ Đức, ngày" in text and "là: 03 ngày" in text and "03 ngày làm việc" not in text


@pytest.mark.parametrize(
    "changes",
    [
        {"dossier_sets": 0},
        {"dossier_sets": 100},
        {"processing_days": 0},
        {"processing_days": 366},
        {"result_place": ""},
        {"place_name": "x" * 101},
        {"processing_working_days": "maybe"},
    ],
    ids=["no-set", "too-many-sets", "zero-days", "too-many-days", "empty-place", "long-place-name", "not-a-bool"],
)
def test_out_of_range_form_items_are_422_and_take_no_code(api: Service, changes: dict[str, Any]) -> None:
    headers = api.auth("receipts:issue")
    refused = api.client.post("/v1/receipts", json=body(**changes), headers=headers)
    assert refused.status_code == 422 and refused.json()["type"].endswith(":validation-error"), refused.text
    ok = api.client.post("/v1/receipts", json=body(), headers=headers)
    assert ok.json()["code"].endswith("-0001")
