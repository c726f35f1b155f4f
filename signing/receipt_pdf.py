"""The receipt and appointment slip (giấy tiếp nhận hồ sơ và hẹn trả kết quả) as an A4 PDF.

The layout and the numbered items follow form 01 of Circular 01/2018/TT-VPCP (the managing
body and unit with their one-stop section, the national title and motto, the place and date,
the documents with their originals and copies, the number of dossier sets, the processing
time, the times of receipt and of the result, where the result is collected, and the
signatures), with the dossier code of Decree 61/2018/NĐ-CP Art. 26 and a block that shows who
signed the file digitally and when.

Pure: a ``ReceiptSlip`` in, PDF bytes out; the same slip always gives the same bytes (reportlab's
invariant mode, with the document dates taken from the slip instead of the wall clock). The
font is an embedded TrueType font with full Vietnamese coverage: the 14 standard PDF fonts have
no glyphs for ả, ế, đ, ơ, ư. reportlab subsets it and writes a ToUnicode map, so text
extraction (``pdftotext``) returns the exact diacritics. The QR code (segno) is drawn as
vector squares, so no image library is involved.
"""

from __future__ import annotations

import io
import threading
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import segno
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfmetrics import registerFontFamily
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from signing.errors import ReceiptRenderError
from signing.vietnam_time import VIETNAM_TIME

# Debian's fonts-dejavu-core; Noto Sans (fonts-noto-core) works as well.
DEFAULT_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
DEFAULT_REGULAR_FONT = "DejaVuSans.ttf"
DEFAULT_BOLD_FONT = "DejaVuSans-Bold.ttf"
QR_ERROR_LEVEL = "m"
QR_SIZE = 30 * mm
MAX_DOCUMENTS = 100
PDF_CREATOR = "bhxh-integrity (Hệ thống thông tin một cửa điện tử)"

NATIONAL_TITLE = "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"
NATIONAL_MOTTO = "Độc lập - Tự do - Hạnh phúc"
SLIP_TITLE = "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ"
ONE_STOP_SECTION = "BỘ PHẬN TIẾP NHẬN VÀ TRẢ KẾT QUẢ"
ONE_STOP_SYSTEM = "Hệ thống thông tin một cửa điện tử"
MAX_DOSSIER_SETS = 99


@dataclass(frozen=True)
class SlipDocument:
    """One document handed in with the dossier."""

    name: str
    copies: int = 1
    original: bool = False


@dataclass(frozen=True)
class ReceiptSlip:
    """Everything printed on the slip. Times are aware; they are shown in Vietnam time."""

    code: str
    unit_code: str
    unit_name: str
    procedure_code: str
    procedure_name: str
    applicant_name: str
    applicant_id_number: str
    official_name: str
    official_title: str
    received_at: datetime
    appointment_at: datetime | date
    verify_url: str
    applicant_phone: str | None = None
    applicant_address: str | None = None
    documents: tuple[SlipDocument, ...] = field(default_factory=tuple)
    unit_parent: str | None = None  # the managing body, above the unit's name
    place_name: str | None = None  # the date line's place ("Hà Nội, ngày …"); none: the date alone
    dossier_sets: int = 1  # item 2, "Số lượng hồ sơ: … (bộ)"
    processing_days: int | None = None  # item 3; none: the procedure's own time frame
    processing_working_days: bool = True  # item 3 counts working days (ngày làm việc) or days
    result_place: str | None = None  # item 6; none: the unit's one-stop section
    signer_name: str | None = None  # the digital signature block; none: no block
    signed_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.received_at.tzinfo is None:
            raise ReceiptRenderError("received_at must be timezone-aware")
        if isinstance(self.appointment_at, datetime) and self.appointment_at.tzinfo is None:
            raise ReceiptRenderError("appointment_at must be timezone-aware (or a date)")
        if self.signed_at is not None and self.signed_at.tzinfo is None:
            raise ReceiptRenderError("signed_at must be timezone-aware")
        if len(self.documents) > MAX_DOCUMENTS:
            raise ReceiptRenderError(f"at most {MAX_DOCUMENTS} documents fit on a slip")
        if not 1 <= self.dossier_sets <= MAX_DOSSIER_SETS:
            raise ReceiptRenderError(f"dossier_sets must be 1–{MAX_DOSSIER_SETS}")
        if self.processing_days is not None and self.processing_days < 1:
            raise ReceiptRenderError("processing_days must be at least 1")

    @property
    def sequence(self) -> str:
        """The dossier's number in the unit's day: the last part of the code."""
        return self.code.rsplit("-", 1)[-1]


def _nfc(text: str) -> str:
    # reportlab does no glyph composition: a decomposed "ê" + U+0301 would print the accent apart.
    return unicodedata.normalize("NFC", text)


def _p(text: str) -> str:
    """Plain text made safe for reportlab's paragraph mark-up."""
    return escape(_nfc(text))


def _vn_datetime(at: datetime) -> str:
    local = at.astimezone(VIETNAM_TIME)
    return f"{local:%H} giờ {local:%M} phút, ngày {local:%d} tháng {local:%m} năm {local:%Y}"


def _vn_date(day: date) -> str:
    return f"ngày {day:%d} tháng {day:%m} năm {day:%Y}"


def _appointment(at: datetime | date) -> str:
    return _vn_datetime(at) if isinstance(at, datetime) else _vn_date(at)


def _date_line(place: str | None, day: date) -> str:
    # Form 01: "<place>, ngày … tháng … năm …"; without a configured place, the date alone.
    return f"{place}, {_vn_date(day)}" if place else _vn_date(day).capitalize()


def _processing_time(slip: ReceiptSlip) -> str:
    if slip.processing_days is None:
        return "theo quy định của thủ tục hành chính"
    unit = "ngày làm việc" if slip.processing_working_days else "ngày"
    return f"{slip.processing_days:02d} {unit}"


class _QrCode(Flowable):  # type: ignore[misc]  # reportlab ships no types: Flowable is Any
    """A QR code drawn as filled squares (one rectangle per run of dark modules in a row)."""

    def __init__(self, content: str, size: float) -> None:
        super().__init__()
        self._qr = segno.make(content, error=QR_ERROR_LEVEL, micro=False)
        self._size = size
        self.width = self.height = size

    def draw(self) -> None:
        matrix = [list(row) for row in self._qr.matrix]
        border = 2
        count = len(matrix) + 2 * border
        module = self._size / count
        canvas = self.canv
        canvas.setFillColor(colors.black)
        for y, row in enumerate(matrix):
            x = 0
            while x < len(row):
                if not row[x]:
                    x += 1
                    continue
                start = x
                while x < len(row) and row[x]:
                    x += 1
                canvas.rect(
                    (start + border) * module,
                    self._size - (y + border + 1) * module,
                    (x - start) * module,
                    module,
                    stroke=0,
                    fill=1,
                )


class ReceiptRenderer:
    """Renders slips; the fonts are parsed once, when the renderer is built."""

    def __init__(
        self, font_dir: Path = DEFAULT_FONT_DIR, *, regular: str = DEFAULT_REGULAR_FONT, bold: str = DEFAULT_BOLD_FONT
    ) -> None:
        self._regular = f"BHXH-{Path(regular).stem}"
        self._bold = f"BHXH-{Path(bold).stem}"
        for name, filename in ((self._regular, regular), (self._bold, bold)):
            path = font_dir / filename
            try:
                pdfmetrics.registerFont(TTFont(name, str(path)))
            except (OSError, TTFError) as exc:
                raise ReceiptRenderError(
                    f"cannot load the Vietnamese TrueType font {path}: install Debian's fonts-dejavu-core"
                ) from exc
        # <b> and <i> in paragraphs resolve through the family; there is no italic face, so
        # italic falls back to the upright one rather than to a standard font without Vietnamese.
        registerFontFamily(
            self._regular, normal=self._regular, bold=self._bold, italic=self._regular, boldItalic=self._bold
        )
        self._styles = self._make_styles()
        # reportlab's TrueType subsetter keeps its read position on the shared font face, so two
        # threads saving documents at once corrupt each other's subsets (IndexError in
        # makeSubset). Rendering is pure Python and holds the GIL anyway: the lock costs nothing.
        self._lock = threading.Lock()

    def _make_styles(self) -> dict[str, ParagraphStyle]:
        base = ParagraphStyle("body", fontName=self._regular, fontSize=10.5, leading=14, alignment=TA_LEFT)
        return {
            "body": base,
            "small": ParagraphStyle("small", parent=base, fontSize=8.5, leading=11),
            "cell": ParagraphStyle("cell", parent=base, fontSize=9.5, leading=12),
            "cell_center": ParagraphStyle("cell_center", parent=base, fontSize=9.5, leading=12, alignment=TA_CENTER),
            "small_center": ParagraphStyle("small_center", parent=base, fontSize=8.5, leading=11, alignment=TA_CENTER),
            "head": ParagraphStyle("head", parent=base, fontName=self._bold, fontSize=10.5, alignment=TA_CENTER),
            "head_left": ParagraphStyle(
                "head_left", parent=base, fontName=self._bold, fontSize=9.5, leading=13, alignment=TA_CENTER
            ),
            "date": ParagraphStyle("date", parent=base, fontSize=9, alignment=TA_CENTER, spaceBefore=4),
            "center": ParagraphStyle("center", parent=base, alignment=TA_CENTER),
            "title": ParagraphStyle(
                "title", parent=base, fontName=self._bold, fontSize=14, leading=20, alignment=TA_CENTER, spaceBefore=10
            ),
            "code": ParagraphStyle(
                "code", parent=base, fontName=self._bold, fontSize=11.5, leading=16, alignment=TA_CENTER
            ),
            "bold": ParagraphStyle("bold", parent=base, fontName=self._bold),
            "bold_center": ParagraphStyle("bold_center", parent=base, fontName=self._bold, alignment=TA_CENTER),
        }

    def render(self, slip: ReceiptSlip) -> bytes:
        """The slip as PDF bytes (A4, one page for up to ~15 documents)."""
        s = self._styles
        out = io.BytesIO()
        doc = SimpleDocTemplate(
            out,
            pagesize=A4,
            leftMargin=20 * mm,
            rightMargin=15 * mm,
            topMargin=15 * mm,
            bottomMargin=15 * mm,
            title=_nfc(f"{SLIP_TITLE} {slip.code}"),
            subject=slip.code,
            author=_nfc(slip.unit_name),
            creator=PDF_CREATOR,
            keywords=f"dossier-code:{slip.code}",
            lang="vi-VN",
            invariant=1,
            initialFontName=self._regular,
        )
        stamp = slip.received_at.astimezone(UTC).timetuple()[:6]

        def _dates(canvas: Canvas, _doc: Any) -> None:
            # Document dates come from the slip (invariant mode would print 2000-01-01).
            canvas.setDateFormatter(lambda *_: "D:{:04d}{:02d}{:02d}{:02d}{:02d}{:02d}Z".format(*stamp))

        story: list[Flowable] = []
        story.append(self._header(slip))
        story.append(Paragraph(_p(SLIP_TITLE), s["title"]))
        story.append(Paragraph(f"Mã hồ sơ: {_p(slip.code)}", s["code"]))
        story.append(Spacer(1, 3 * mm))
        story.extend(self._applicant(slip))
        story.append(Paragraph("1. Thành phần hồ sơ nộp gồm:", s["bold"]))
        story.append(self._documents(slip))
        story.append(Spacer(1, 1.5 * mm))
        result_place = slip.result_place or f"{ONE_STOP_SECTION.capitalize()} – {slip.unit_name}"
        for line in (
            f"2. Số lượng hồ sơ: {slip.dossier_sets:02d} (bộ)",
            f"3. Thời gian giải quyết hồ sơ theo quy định là: {_processing_time(slip)}",
            f"4. Thời gian nhận hồ sơ: {_vn_datetime(slip.received_at)}",
            f"5. Thời gian trả kết quả giải quyết hồ sơ: {_appointment(slip.appointment_at)}",
            f"6. Đăng ký nhận kết quả tại: {result_place}",
            f"Vào Sổ theo dõi hồ sơ điện tử, số thứ tự: {slip.sequence}",
        ):
            story.append(Paragraph(_p(line), s["body"]))
        story.append(Spacer(1, 4 * mm))
        story.append(self._signatures(slip))
        if slip.signer_name is not None and slip.signed_at is not None:
            story.append(Spacer(1, 2 * mm))
            story.append(self._digital_signature(slip))
        story.append(Spacer(1, 4 * mm))
        story.append(self._footer(slip))
        with self._lock:
            doc.build(story, onFirstPage=_dates, onLaterPages=_dates)
        return out.getvalue()

    def _header(self, slip: ReceiptSlip) -> Table:
        s = self._styles
        local_day = slip.received_at.astimezone(VIETNAM_TIME).date()
        left: list[Flowable] = []
        if slip.unit_parent:
            left.append(Paragraph(_p(slip.unit_parent.upper()), s["center"]))
        left += [
            Paragraph(_p(slip.unit_name.upper()), s["head_left"]),
            Paragraph(ONE_STOP_SECTION, s["head_left"]),
            Paragraph(f"Mã đơn vị: {_p(slip.unit_code)}", s["center"]),
        ]
        right = [
            Paragraph(NATIONAL_TITLE, s["head"]),
            Paragraph(NATIONAL_MOTTO, s["head"]),
            Paragraph(f"<i>{_p(_date_line(slip.place_name, local_day))}</i>", s["date"]),
        ]
        table = Table([[left, right]], colWidths=[80 * mm, 95 * mm])
        table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
        return table

    def _applicant(self, slip: ReceiptSlip) -> list[Flowable]:
        s = self._styles
        lines = [
            Paragraph(f"Bộ phận tiếp nhận và trả kết quả: {_p(slip.unit_name)}", s["body"]),
            Paragraph(f"Tiếp nhận hồ sơ của: <b>{_p(slip.applicant_name)}</b>", s["body"]),
            Paragraph(f"Số định danh cá nhân: {_p(slip.applicant_id_number)}", s["body"]),
        ]
        if slip.applicant_address:
            lines.append(Paragraph(f"Địa chỉ: {_p(slip.applicant_address)}", s["body"]))
        if slip.applicant_phone:
            lines.append(Paragraph(f"Số điện thoại: {_p(slip.applicant_phone)}", s["body"]))
        lines.append(
            Paragraph(
                f"Nội dung yêu cầu giải quyết: {_p(slip.procedure_name)} (mã thủ tục: {_p(slip.procedure_code)})",
                s["body"],
            )
        )
        return lines

    def _documents(self, slip: ReceiptSlip) -> Flowable:
        s = self._styles
        if not slip.documents:
            return Paragraph("(Không có giấy tờ kèm theo)", s["body"])
        headings = ("TT", "Tên giấy tờ", "Bản chính", "Bản sao")
        rows: list[list[Any]] = [[Paragraph(h, s["bold_center"]) for h in headings]]
        for index, document in enumerate(slip.documents, start=1):
            # The number of copies goes in the column of its kind, as the form's table has it.
            originals, copies = (document.copies, "") if document.original else ("", document.copies)
            rows.append(
                [
                    Paragraph(str(index), s["cell_center"]),
                    Paragraph(_p(document.name), s["cell"]),
                    Paragraph(str(originals), s["cell_center"]),
                    Paragraph(str(copies), s["cell_center"]),
                ]
            )
        table = Table(rows, colWidths=[12 * mm, 102 * mm, 28 * mm, 28 * mm], repeatRows=1)
        table.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                ]
            )
        )
        return table

    def _signatures(self, slip: ReceiptSlip) -> Table:
        s = self._styles
        columns = []
        for heading, name in (("NGƯỜI NỘP HỒ SƠ", slip.applicant_name), ("NGƯỜI TIẾP NHẬN HỒ SƠ", slip.official_name)):
            columns.append(
                [
                    Paragraph(heading, s["bold_center"]),
                    Paragraph("<i>(Ký và ghi rõ họ tên)</i>", s["center"]),
                    Spacer(1, 12 * mm),
                    Paragraph(_p(name), s["center"]),
                ]
            )
        columns[1].append(Paragraph(_p(slip.official_title), s["small_center"]))
        table = Table([columns], colWidths=[85 * mm, 85 * mm])
        table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
        return table

    def _digital_signature(self, slip: ReceiptSlip) -> Table:
        """Who signed the file and when, visible on the page (the PAdES signature itself is in
        the file; its signing time is the one printed here)."""
        s = self._styles
        assert slip.signer_name is not None and slip.signed_at is not None
        lines = [
            Paragraph("CHỮ KÝ SỐ", s["bold_center"]),
            Paragraph(f"Ký bởi: {_p(slip.signer_name)}", s["small"]),
            Paragraph(f"Đơn vị: {_p(ONE_STOP_SYSTEM)} – {_p(slip.unit_name)}", s["small"]),
            Paragraph(f"Thời gian ký: {_p(_vn_datetime(slip.signed_at))}", s["small"]),
        ]
        table = Table([["", lines]], colWidths=[62 * mm, 108 * mm])
        table.setStyle(
            TableStyle(
                [
                    ("BOX", (1, 0), (1, 0), 0.8, colors.HexColor("#0b5394")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        return table

    def _footer(self, slip: ReceiptSlip) -> Table:
        s = self._styles
        text = [
            Paragraph(
                f"Ghi chú: Giấy này do {ONE_STOP_SYSTEM} cấp và ký số; giấy lập ngoài hệ thống không có giá trị. "
                "Cá nhân, tổ chức có thể đăng ký nhận kết quả tại Bộ phận tiếp nhận và trả kết quả "
                "hoặc qua dịch vụ bưu chính.",
                s["small"],
            ),
            Paragraph(f"Tra cứu, xác thực: {_p(slip.verify_url)}", s["small"]),
        ]
        table = Table([[_QrCode(slip.verify_url, QR_SIZE), text]], colWidths=[QR_SIZE + 4 * mm, 140 * mm])
        table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))
        return table
