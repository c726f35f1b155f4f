"""The auditor's report: JSON and a self-contained Vietnamese/English HTML page rendered from
the same verdict, with the verdict on top, what is proven (anchored entries) and what is not,
the faults table, checkpoints and an inline SVG chart."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest

from audit.export import verify_export
from audit.verify import Fault, Verdict, VerificationReport
from audit.verify_report import TimestampCheck, TimestampStatus
from integrity.reports import ReportContext, chart_svg, proof_lines, render_html, report_json, verdict_line
from tests.audit.logbuilder import KEY_NAME, build_log, write_export

CONTEXT = ReportContext(
    origin="bhxh-integrity/audit/test-log",
    source="audit.ndjson",
    generated_at=datetime(2025, 11, 23, 9, 30, tzinfo=UTC),
    trusted_keys=("bhxh-integrity/audit/test-log+00000000+AAAA",),
)


def _report(tmp_path: Path, tamper: bool, checkpoints: int | None = None) -> VerificationReport:
    log = build_log(12)
    objs = log.objects()
    if tamper:
        objs[5]["subject"] = "<script>alert(1)</script>"
    kept = log.checkpoints if checkpoints is None else log.checkpoints[:checkpoints]
    path = write_export(tmp_path / "e.ndjson", objs, [c.to_text() for c in kept])
    return verify_export(path, log.vkey)


def test_clean_report_puts_the_verdict_first(tmp_path: Path) -> None:
    report = _report(tmp_path, tamper=False)
    page = render_html(report, CONTEXT)
    body = page[page.index("<body>") :]
    assert body.index("KẾT LUẬN: TOÀN VẸN") < body.index("Phạm vi kiểm tra")
    assert "(Verdict: verified, no fault found; every entry is anchored by a trusted signed checkpoint)" in page
    assert "Không có sai lệch" in page
    assert "Điều đã được chứng minh" in page and f"{KEY_NAME}" in page
    assert "bhxh-integrity/audit/test-log" in page and "audit.ndjson" in page
    assert report.root_hash in page
    assert verdict_line(report) == (
        "TOÀN VẸN / VERIFIED: 12 entries, no fault; every entry anchored by a trusted signed checkpoint (tree size 12)"
    )
    assert proof_lines(report) == [
        f"đã neo / anchored: 12 entries (0–11) by the signed checkpoint of tree size 12, key {KEY_NAME}"
    ]


def test_failed_report_lists_the_fault_with_its_seq(tmp_path: Path) -> None:
    report = _report(tmp_path, tamper=True)
    assert report.fault == Fault.CHANGED and report.first_bad_seq == 5
    page = render_html(report, CONTEXT)
    assert "KẾT LUẬN: PHÁT HIỆN SAI LỆCH" in page
    assert "Bản ghi bị sửa đổi (changed entry)" in page and ", seq 5" in page
    assert "Nội dung bản ghi không còn khớp" in page  # the fault explained in Vietnamese
    assert "<script>" not in page  # content from the log is escaped, never executed
    assert verdict_line(report) == (
        "PHÁT HIỆN SAI LỆCH / FAILED: changed at seq 5 (1 fault(s)); "
        "entries 4–11 are not covered by any trusted checkpoint"
    )


def test_entries_past_the_last_checkpoint_make_the_report_not_verified(tmp_path: Path) -> None:
    report = _report(tmp_path, tamper=False, checkpoints=1)  # only the checkpoint at 4
    assert report.verdict is Verdict.NOT_VERIFIED and report.fault is Fault.UNANCHORED
    page = render_html(report, CONTEXT)
    assert "KẾT LUẬN: CHƯA XÁC MINH" in page and "(Verdict: NOT VERIFIED)" in page
    assert "TOÀN VẸN" not in page
    assert "(entries 4–11 are not covered by any trusted checkpoint)" in page
    assert "Bản ghi chưa được checkpoint tin cậy bảo đảm (unanchored entries)" in page
    assert verdict_line(report) == (
        "CHƯA XÁC MINH / NOT VERIFIED: entries 4–11 are not covered by any trusted checkpoint"
    )
    assert proof_lines(report)[1] == "chưa neo / not anchored: 8 entries (4–11): not proven"
    data = report_json(report, CONTEXT)
    assert data["ok"] is False and data["verdict"] == "not_verified" and data["fault"] == "unanchored"


def test_export_without_any_checkpoint_proves_nothing(tmp_path: Path) -> None:
    report = _report(tmp_path, tamper=False, checkpoints=0)
    page = render_html(report, CONTEXT)
    assert "KẾT LUẬN: CHƯA XÁC MINH" in page
    assert proof_lines(report)[0] == "đã neo / anchored: none (no trusted signed checkpoint matches the entries)"


def test_report_has_no_external_assets(tmp_path: Path) -> None:
    page = render_html(_report(tmp_path, tamper=False), CONTEXT)
    assert not re.search(r"""(src|href)\s*=""", page)
    assert "@import" not in page and "url(" not in page


def test_json_report_is_the_same_verdict_with_its_context(tmp_path: Path) -> None:
    report = _report(tmp_path, tamper=True)
    data = report_json(report, CONTEXT)
    assert {k: data[k] for k in report.to_dict()} == report.to_dict()
    assert data["origin"] == CONTEXT.origin and data["generated_at"] == "2025-11-23T09:30:00+00:00"


def test_chart_is_valid_svg_with_one_bar_segment_per_day_and_action(tmp_path: Path) -> None:
    report = _report(tmp_path, tamper=False)
    svg = chart_svg(report.actions_per_day)
    root = ElementTree.fromstring(svg)
    rects = [
        r
        for r in root.iter("{http://www.w3.org/2000/svg}rect")
        if r.find("{http://www.w3.org/2000/svg}title") is not None
    ]
    assert len(rects) == len(report.actions_per_day)
    titles = {r.find("{http://www.w3.org/2000/svg}title").text for r in rects}  # type: ignore[union-attr]
    assert "2025-11-20 receipt.issued: 4" in titles


def test_chart_groups_rare_actions_as_other() -> None:
    rows = tuple(("2025-11-23", f"action.n{i}", i + 1) for i in range(12))
    svg = chart_svg(rows)
    ElementTree.fromstring(svg)
    assert "khác (other)" in svg and "action.n11" in svg and "action.n0<" not in svg


@pytest.mark.parametrize("rows", [(), (("2025-11-23", "a.b", 1),)])
def test_chart_handles_empty_and_single_day(rows: tuple) -> None:
    ElementTree.fromstring(chart_svg(rows))


def test_checkpoint_table_shows_each_checkpoints_time_in_vietnam_time(tmp_path: Path) -> None:
    report = _report(tmp_path, tamper=False)
    sizes = [c.tree_size for c in report.checkpoints]
    assert len(sizes) >= 3
    stamped = datetime(2025, 11, 23, 17, 5, tzinfo=UTC)  # 24/11/2025 00:05 in Vietnam
    signed = datetime(2025, 11, 22, 1, 2, tzinfo=UTC)
    report = replace(
        report,
        timestamps=(
            TimestampCheck(sizes[0], TimestampStatus.TRUSTED, stamped, "CN=Demo TSA"),
            TimestampCheck(sizes[1], TimestampStatus.INVALID, detail="imprint differs"),
            TimestampCheck(sizes[2], TimestampStatus.MISSING),
        ),
    )
    page = render_html(report, replace(CONTEXT, signed_at=((sizes[2], signed),)))
    table = page[page.index('id="checkpoints"') :]
    rows = table.split("<tr>")[2:]
    header = table[: table.index("</tr>")]
    assert "Thời điểm" in header and "(time)" in header
    assert '<time datetime="2025-11-23T17:05:00Z">24/11/2025 00:05 (giờ Việt Nam, UTC+7)</time>' in rows[0]
    assert "dấu thời gian RFC 3161" in rows[0] and "CN=Demo TSA" in rows[0]
    assert "dấu thời gian không hợp lệ" in rows[1] and "<time" not in rows[1]
    assert "không có dấu thời gian" in rows[2] and "22/11/2025 08:02 (giờ Việt Nam, UTC+7)" in rows[2]
    assert "giờ ký theo đồng hồ của hệ thống" in rows[2]
    english = render_html(report, CONTEXT, lang="en")
    assert '<html lang="en">' in english and "24/11/2025 00:05 (Vietnam time, UTC+7)" in english
    assert english.index("Audit log integrity verification report") < english.index("Báo cáo kiểm tra tính toàn vẹn")
    with pytest.raises(ValueError):
        render_html(report, CONTEXT, lang="fr")
