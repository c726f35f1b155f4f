"""The receipt slip as a PDF (signing/receipt_pdf.py): the items of form 01 (Circular
01/2018/TT-VPCP) in Vietnamese text that tools read back exactly, an embedded TrueType font, A4,
and a QR code that decodes to the verification address."""

from __future__ import annotations

import subprocess
import sys
import threading
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from signing.errors import ReceiptRenderError
from signing.receipt_pdf import ReceiptRenderer, SlipDocument
from tests.qr_support import pdf_qr_text
from tests.signing.test_pdf_signing import renderer, sample_slip
from tests.tools import require_tool


def _pdftotext(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "slip.pdf"
    path.write_bytes(pdf)
    tool = require_tool("pdftotext", "poppler-utils")
    return subprocess.run(
        [tool, "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True, timeout=60
    ).stdout.decode()


EXPECTED_LINES = [
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "BỘ PHẬN TIẾP NHẬN VÀ TRẢ KẾT QUẢ",
    "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ",
    "Mã hồ sơ: 000.00.31.H29-261123-0001",
    "Tiếp nhận hồ sơ của: Nguyễn Thị Ánh Tuyết",
    "Số định danh cá nhân: 079190001234",
    "Địa chỉ: 12 Lê Lợi, Phường Bến Nghé, Quận 1",
    "Nội dung yêu cầu giải quyết: Giải quyết hưởng chế độ ốm đau (mã thủ tục: 1.001234)",
    "1. Thành phần hồ sơ nộp gồm:",
    "Tờ khai đề nghị hưởng chế độ ốm đau",
    "2. Số lượng hồ sơ: 01 (bộ)",
    "3. Thời gian giải quyết hồ sơ theo quy định là: theo quy định của thủ tục hành chính",
    # 02:30 UTC is 09:30 in Vietnam (UTC+7).
    "4. Thời gian nhận hồ sơ: 09 giờ 30 phút, ngày 23 tháng 11 năm 2026",
    "5. Thời gian trả kết quả giải quyết hồ sơ: ngày 30 tháng 11 năm 2026",
    "Vào Sổ theo dõi hồ sơ điện tử, số thứ tự: 0001",
    "NGƯỜI NỘP HỒ SƠ",
    "NGƯỜI TIẾP NHẬN HỒ SƠ",
    "Đặng Văn Lợi",
    "Chuyên viên",
]


def test_pdftotext_returns_the_vietnamese_text_with_exact_diacritics(tmp_path: Path) -> None:
    text = _pdftotext(renderer().render(sample_slip()), tmp_path)
    lines = {" ".join(line.split()) for line in text.splitlines()}
    for expected in EXPECTED_LINES:
        assert expected in lines, expected
    assert "Bảo hiểm xã hội Thành phố Hồ Chí Minh" in " ".join(text.split())
    # No replacement boxes or decomposed marks: every letter came back precomposed (NFC).
    assert text == unicodedata.normalize("NFC", text)
    assert "\ufffd" not in text


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_form_01_items_are_printed_from_the_slip(tmp_path: Path) -> None:
    slip = sample_slip(
        unit_parent="Bảo hiểm xã hội Việt Nam",
        place_name="Thành phố Hồ Chí Minh",
        dossier_sets=2,
        processing_days=7,
        appointment_at=datetime(2026, 11, 30, 1, 30, tzinfo=UTC),
        result_place="Quầy số 3, 117 Nguyễn Đình Chiểu, Quận 3",
        signer_name="BHXH One-Stop System Signing (DEMO)",
        signed_at=datetime(2026, 11, 23, 2, 31, 5, tzinfo=UTC),
    )
    text = _flat(_pdftotext(renderer().render(slip), tmp_path))
    for expected in (
        "BẢO HIỂM XÃ HỘI VIỆT NAM",  # the managing body heads the unit
        "Thành phố Hồ Chí Minh, ngày 23 tháng 11 năm 2026",  # the place name in the date line
        "2. Số lượng hồ sơ: 02 (bộ)",
        "3. Thời gian giải quyết hồ sơ theo quy định là: 07 ngày làm việc",
        "5. Thời gian trả kết quả giải quyết hồ sơ: 08 giờ 30 phút, ngày 30 tháng 11 năm 2026",
        "6. Đăng ký nhận kết quả tại: Quầy số 3, 117 Nguyễn Đình Chiểu, Quận 3",
        # The visible signature block: who signed, for which unit, and when (Vietnam time).
        "CHỮ KÝ SỐ",
        "Ký bởi: BHXH One-Stop System Signing (DEMO)",
        "Thời gian ký: 09 giờ 31 phút, ngày 23 tháng 11 năm 2026",
    ):
        assert expected in text, expected


def test_the_documents_table_counts_originals_and_copies_apart(tmp_path: Path) -> None:
    slip = sample_slip(documents=(SlipDocument("Tờ khai", 2, True), SlipDocument("Giấy ra viện", 3, False)))
    (tmp_path / "slip.pdf").write_bytes(renderer().render(slip))
    # The count sits in the column of its kind: pdftotext's layout keeps the columns apart.
    layout = subprocess.run(
        [require_tool("pdftotext", "poppler-utils"), "-layout", str(tmp_path / "slip.pdf"), "-"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    header = next(line for line in layout.splitlines() if "Bản chính" in line)
    assert _flat(header) == "TT Tên giấy tờ Bản chính Bản sao"
    originals_at, copies_at = header.index("Bản chính"), header.index("Bản sao")
    row_original = next(line for line in layout.splitlines() if "Tờ khai" in line)
    row_copy = next(line for line in layout.splitlines() if "Giấy ra viện" in line)
    assert abs(row_original.rindex("2") - originals_at) < abs(row_original.rindex("2") - copies_at)
    assert abs(row_copy.rindex("3") - copies_at) < abs(row_copy.rindex("3") - originals_at)


def test_without_the_optional_items_the_slip_says_what_applies(tmp_path: Path) -> None:
    text = _flat(_pdftotext(renderer().render(sample_slip()), tmp_path))
    assert (
        "6. Đăng ký nhận kết quả tại: Bộ phận tiếp nhận và trả kết quả – Bảo hiểm xã hội Thành phố Hồ Chí Minh" in text
    )
    assert "Ngày 23 tháng 11 năm 2026" in text  # no place configured: the date alone
    assert "CHỮ KÝ SỐ" not in text  # no signer given: no block claiming a signature


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dossier_sets": 0}, "dossier_sets"),
        ({"processing_days": 0}, "processing_days"),
        ({"signed_at": datetime(2026, 11, 23, 9, 30)}, "signed_at"),
    ],
)
def test_form_items_out_of_range_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ReceiptRenderError, match=message):
        sample_slip(**changes)


def test_decomposed_input_is_printed_precomposed(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "Trần Thị Hương Giang")
    text = _pdftotext(renderer().render(sample_slip(applicant_name=decomposed)), tmp_path)
    assert "Tiếp nhận hồ sơ của: Trần Thị Hương Giang" in text


def test_markup_characters_in_fields_are_printed_literally(tmp_path: Path) -> None:
    text = _pdftotext(renderer().render(sample_slip(procedure_name="Cấp lại sổ <BHXH> & thẻ BHYT")), tmp_path)
    assert "Cấp lại sổ <BHXH> & thẻ BHYT" in text


def test_font_is_an_embedded_truetype_subset_with_unicode_map(tmp_path: Path) -> None:
    path = tmp_path / "slip.pdf"
    path.write_bytes(renderer().render(sample_slip()))
    report = subprocess.run(
        [require_tool("pdffonts", "poppler-utils"), str(path)], capture_output=True, text=True, check=True
    ).stdout
    dejavu = [line.split() for line in report.splitlines() if "DejaVuSans" in line]
    assert dejavu, report
    for columns in dejavu:
        # name, type, (encoding), emb, sub, uni, object id, generation
        assert columns[1] == "TrueType"
        assert columns[-5:-2] == ["yes", "yes", "yes"]


def test_page_is_a4_and_metadata_names_the_code(tmp_path: Path) -> None:
    path = tmp_path / "slip.pdf"
    path.write_bytes(renderer().render(sample_slip()))
    info = subprocess.run(
        [require_tool("pdfinfo", "poppler-utils"), str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "Page size:       595.276 x 841.89 pts (A4)" in info
    assert "Pages:           1" in info
    assert "Subject:         000.00.31.H29-261123-0001" in info
    assert "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ 000.00.31.H29-261123-0001" in info


def test_qr_code_decodes_to_the_verification_address(tmp_path: Path) -> None:
    url = "http://testserver/v1/receipts/000.00.31.H29-261123-0001"
    assert pdf_qr_text(renderer().render(sample_slip(verify_url=url)), tmp_path) == url


def test_same_slip_renders_to_the_same_bytes() -> None:
    assert renderer().render(sample_slip()) == renderer().render(sample_slip())


def test_document_dates_come_from_the_slip_not_the_wall_clock() -> None:
    pdf = renderer().render(sample_slip(received_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)))
    assert b"D:20260102030405Z" in pdf


def test_slip_without_documents_says_so(tmp_path: Path) -> None:
    text = _pdftotext(renderer().render(sample_slip(documents=())), tmp_path)
    assert "(Không có giấy tờ kèm theo)" in text


def test_appointment_time_is_shown_in_vietnam_time(tmp_path: Path) -> None:
    slip = sample_slip(appointment_at=datetime(2026, 11, 30, 1, 0, tzinfo=UTC))
    assert "08 giờ 00 phút, ngày 30 tháng 11 năm 2026" in _pdftotext(renderer().render(slip), tmp_path)


def test_missing_font_is_a_clear_render_error(tmp_path: Path) -> None:
    with pytest.raises(ReceiptRenderError, match="fonts-dejavu-core"):
        ReceiptRenderer(tmp_path)


def test_naive_received_time_is_refused() -> None:
    with pytest.raises(ReceiptRenderError, match="timezone-aware"):
        sample_slip(received_at=datetime(2026, 11, 23, 9, 30))


def test_too_many_documents_are_refused() -> None:
    with pytest.raises(ReceiptRenderError, match="documents"):
        sample_slip(documents=tuple(SlipDocument(f"Giấy {i}") for i in range(101)))


def test_appointment_may_be_a_date() -> None:
    assert sample_slip(appointment_at=date(2026, 12, 1)).appointment_at == date(2026, 12, 1)


def test_concurrent_rendering_from_threads_gives_identical_documents() -> None:
    # reportlab's font subsetter is not thread-safe; the renderer must serialise it.
    expected = renderer().render(sample_slip())
    results: list[bytes] = []
    failures: list[BaseException] = []

    def work() -> None:
        for _ in range(5):
            try:
                results.append(renderer().render(sample_slip()))
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so an unguarded race shows up
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(previous)
    assert failures == []
    assert len(results) == 40 and all(r == expected for r in results)
