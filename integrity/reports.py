"""Auditor reports of a log verification: JSON for machines, a self-contained HTML page (in
Vietnamese with English labels, or English first with Vietnamese ones) for people. Both are
rendered from the same ``VerificationReport``; nothing is recomputed here. Every form says
plainly what is proven: which entries a trusted signed checkpoint anchors, by which key, and
which are not anchored. Times are shown in Vietnam time (UTC+7), the UTC instant kept in each
``<time datetime>``.

The HTML has no external assets: the style sheet is inline and the chart of entries per action
per day is an inline SVG, so the file can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from html import escape
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from audit.verify import Fault, Verdict, VerificationReport
from audit.verify_report import TimestampCheck, TimestampStatus
from integrity.labels import utc_stamp, vietnam_time

TEMPLATES = Path(__file__).parent / "templates"
MAX_CHECKPOINT_ROWS = 200
MAX_CHART_ACTIONS = 8
CHART_WIDTH = 760
CHART_HEIGHT = 300
_CHART_MARGIN = (40, 16, 56, 48)  # top, right, bottom, left
# Colour-blind-safe palette (Okabe-Ito), then grey for "other".
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_OTHER_COLOUR = "#999999"

FAULT_LABELS: dict[Fault, str] = {
    Fault.CHANGED: "Bản ghi bị sửa đổi (changed entry)",
    Fault.INSERTED: "Bản ghi bị chèn thêm (inserted entry)",
    Fault.DELETED: "Bản ghi bị xóa (deleted entry)",
    Fault.REORDERED: "Bản ghi bị đảo thứ tự (reordered entry)",
    Fault.CUT_TAIL: "Nhật ký bị cắt phần cuối (cut tail)",
    Fault.FORGED_CHECKPOINT: "Checkpoint giả mạo hoặc không xác minh được (forged checkpoint)",
    Fault.INCONSISTENT_HISTORY: "Lịch sử không khớp checkpoint đã ký (inconsistent history)",
    Fault.PII_MISMATCH: "Dữ liệu cá nhân không khớp cam kết (personal data mismatch)",
    Fault.UNANCHORED: "Bản ghi chưa được checkpoint tin cậy bảo đảm (unanchored entries)",
    Fault.TIMESTAMP_INVALID: "Dấu thời gian không hợp lệ (invalid time-stamp)",
    Fault.UNTIMESTAMPED: "Checkpoint thiếu dấu thời gian (checkpoint without a time-stamp)",
}

# What each fault means, for a reader of the Vietnamese report.
FAULT_EXPLANATIONS: dict[Fault, str] = {
    Fault.CHANGED: "Nội dung bản ghi không còn khớp với mã băm đã ghi hoặc với liên kết chuỗi.",
    Fault.INSERTED: "Có bản ghi không thuộc chuỗi gốc được chèn vào giữa các bản ghi.",
    Fault.DELETED: "Một hoặc nhiều bản ghi đã bị xóa khỏi chuỗi.",
    Fault.REORDERED: "Các bản ghi không còn theo đúng thứ tự đã ghi.",
    Fault.CUT_TAIL: "Nhật ký ngắn hơn kích thước mà một checkpoint đã ký xác nhận: phần cuối bị cắt.",
    Fault.FORGED_CHECKPOINT: "Checkpoint không có chữ ký hợp lệ của khóa tin cậy, hoặc sai định dạng.",
    Fault.INCONSISTENT_HISTORY: "Gốc cây Merkle tính từ các bản ghi khác với gốc trong checkpoint đã ký: "
    "lịch sử đã bị viết lại.",
    Fault.PII_MISMATCH: "Dữ liệu cá nhân lưu riêng không khớp với cam kết (băm có muối) trong bản ghi.",
    Fault.UNANCHORED: "Không có checkpoint nào được khóa tin cậy ký bao phủ các bản ghi này, nên không "
    "chứng minh được chúng là bản ghi gốc.",
    Fault.TIMESTAMP_INVALID: "Dấu thời gian RFC 3161 của checkpoint không khớp với checkpoint, hoặc không do "
    "đơn vị cấp dấu thời gian được tin cậy ký.",
    Fault.UNTIMESTAMPED: "Checkpoint không có dấu thời gian RFC 3161, trong khi người kiểm tra yêu cầu mọi "
    "checkpoint phải có.",
}

VERDICT_TITLES: dict[Verdict, str] = {
    Verdict.VERIFIED: "TOÀN VẸN / VERIFIED",
    Verdict.NOT_VERIFIED: "CHƯA XÁC MINH / NOT VERIFIED",
    Verdict.FAILED: "PHÁT HIỆN SAI LỆCH / FAILED",
}


class VerificationMode(StrEnum):
    FULL = "full"  # every entry read, from entry 0
    INCREMENTAL = "incremental"  # resumed at a checkpoint verified before (integrity.incremental_verification)


@dataclass(frozen=True)
class ReportContext:
    """What was verified, where, when, how and against which keys."""

    origin: str
    source: str  # "live database" or the export file name
    generated_at: datetime
    trusted_keys: tuple[str, ...]
    trusted_checkpoint_size: int | None = None
    verification: VerificationMode = VerificationMode.FULL
    resumed_from: int | None = None  # incremental: the size of the checkpoint verified before
    # When the log signed each checkpoint size (its own clock, known for the live log only).
    signed_at: tuple[tuple[int, datetime], ...] = ()


def report_json(report: VerificationReport, context: ReportContext) -> dict[str, Any]:
    return {
        **report.to_dict(),
        "origin": context.origin,
        "source": context.source,
        "generated_at": context.generated_at.isoformat(),
        "trusted_keys": list(context.trusted_keys),
        "trusted_checkpoint_size": context.trusted_checkpoint_size,
        "verification": context.verification.value,
        "resumed_from": context.resumed_from,
    }


def _range(first: int, count: int) -> str:
    return f"{first}–{first + count - 1}" if count > 1 else str(first)


def verdict_line(report: VerificationReport) -> str:
    """One line for a terminal or a log, in both languages."""
    verdict = report.verdict
    title = VERDICT_TITLES[verdict]
    anchored, unanchored = report.anchored_entries, report.uncovered_entries
    if verdict is Verdict.VERIFIED:
        if not anchored:
            return f"{title}: 0 entries, no fault"
        return (
            f"{title}: {report.entries_checked} entries, no fault; every entry anchored by a trusted "
            f"signed checkpoint (tree size {report.verified_tree_size})"
        )
    gap = f"entries {_range(anchored, unanchored)} are not covered by any trusted checkpoint"
    if verdict is Verdict.NOT_VERIFIED:
        untimed = sum(1 for f in report.faults if f.kind is Fault.UNTIMESTAMPED)
        missing = f"{untimed} checkpoint(s) without the required time-stamp"
        return f"{title}: " + "; ".join(([gap] if unanchored else []) + ([missing] if untimed else []))
    first = report.faults[0]
    where = f" at seq {first.seq}" if first.seq is not None else ""
    found = sum(1 for f in report.faults if f.kind is not Fault.UNANCHORED)
    return f"{title}: {first.kind.value}{where} ({found} fault(s))" + (f"; {gap}" if unanchored else "")


def proof_lines(report: VerificationReport) -> list[str]:
    """What the verification proves and what it does not, one statement a line."""
    anchored, unanchored = report.anchored_entries, report.uncovered_entries
    lines = []
    if anchored:
        keys = ", ".join(report.anchored_by) or "?"
        lines.append(
            f"đã neo / anchored: {anchored} entries ({_range(0, anchored)}) by the signed checkpoint of "
            f"tree size {report.verified_tree_size}, key {keys}"
        )
    else:
        lines.append("đã neo / anchored: none (no trusted signed checkpoint matches the entries)")
    if unanchored:
        lines.append(f"chưa neo / not anchored: {unanchored} entries ({_range(anchored, unanchored)}): not proven")
    return lines


MAX_TIMESTAMP_LINES = 50


def timestamp_lines(report: VerificationReport) -> list[str]:
    """The trusted time of each checkpoint, one line each (the last ``MAX_TIMESTAMP_LINES``)."""
    checks = report.timestamps
    if checks and all(check.status is TimestampStatus.MISSING for check in checks):
        return [f"không có thời điểm tin cậy / no trusted time: no time-stamp on the {len(checks)} checkpoint(s)"]
    lines = []
    if len(checks) > MAX_TIMESTAMP_LINES:
        lines.append(f"… {len(checks) - MAX_TIMESTAMP_LINES} earlier checkpoint(s) in the JSON report")
    for check in checks[-MAX_TIMESTAMP_LINES:]:
        size = f"checkpoint {check.tree_size if check.tree_size is not None else '?'}"
        if check.status is TimestampStatus.TRUSTED and check.gen_time is not None:
            moment = check.gen_time.strftime("%Y-%m-%d %H:%M:%S UTC")
            lines.append(f"{size}: thời điểm / timestamped at {moment} ({check.tsa})")
        elif check.status is TimestampStatus.MISSING:
            lines.append(f"{size}: không có thời điểm tin cậy / no trusted time")
        elif check.status is TimestampStatus.UNCHECKED:
            lines.append(f"{size}: dấu thời gian chưa kiểm tra / time-stamp not checked (no --tsa-cert)")
        else:
            lines.append(f"{size}: dấu thời gian không hợp lệ / invalid time-stamp: {check.detail}")
    return lines


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


_STYLE_BLOCK = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def style_sources(html: str) -> tuple[str, ...]:
    """CSP sources (CSP Level 3 hash-source) for the page's inline style sheets, so the report
    keeps its look under a policy that refuses every other inline style, and stays one
    self-contained file for auditors who save it."""
    return tuple(
        "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"
        for block in _STYLE_BLOCK.findall(html)
    )


LANGS = ("vi", "en")


def render_html(
    report: VerificationReport,
    context: ReportContext,
    *,
    lang: str = "vi",
    links: Sequence[tuple[str, str]] = (),
) -> str:
    """The report as one self-contained page. ``lang``: which language leads (every label is
    given in both); ``links``: ``(href, text)`` shown above the report when it is served as a
    page of the site (the language toggle, the way back)."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}")
    checkpoints = list(report.checkpoints)
    shown = checkpoints[-MAX_CHECKPOINT_ROWS:]
    stamps: dict[int | None, TimestampCheck] = {check.tree_size: check for check in report.timestamps}
    signed_at: dict[int | None, datetime] = {}
    for size, moment in context.signed_at:
        signed_at.setdefault(size, moment)  # the first time the log signed that size

    def both(vi: str, en: str) -> Markup:
        """A label in the page's language, the other language after it in parentheses."""
        first, second, other = (vi, en, "en") if lang == "vi" else (en, vi, "vi")
        return Markup('{} <span class="alt" lang="{}">({})</span>').format(first, other, second)

    def when(moment: datetime) -> Markup:
        return Markup('<time datetime="{}">{}</time>').format(utc_stamp(moment), vietnam_time(moment, lang))

    return (
        _environment()
        .get_template("audit_report.html")
        .render(
            report=report,
            context=context,
            lang=lang,
            links=links,
            both=both,
            when=when,
            verdict=verdict_line(report),
            verdict_title=VERDICT_TITLES[report.verdict],
            verdict_kind=report.verdict.value,
            faults=[(FAULT_LABELS[f.kind], FAULT_EXPLANATIONS[f.kind], f) for f in report.faults],
            checkpoints=[(cp, stamps.get(cp.tree_size), signed_at.get(cp.tree_size)) for cp in shown],
            hidden_checkpoints=len(checkpoints) - len(shown),
            chart=Markup(chart_svg(report.actions_per_day)),
        )
    )


def chart_svg(actions_per_day: tuple[tuple[str, str, int], ...]) -> str:
    """Stacked bars: one bar per day, one colour per action (the busiest actions, then other)."""
    top, right, bottom, left = _CHART_MARGIN
    width, height = CHART_WIDTH, CHART_HEIGHT
    plot_w, plot_h = width - left - right, height - top - bottom
    title = "Số bản ghi theo hành động và ngày (entries per action per day)"
    if not actions_per_day:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="60" viewBox="0 0 {width} 60">'
            f"<title>{escape(title)}</title>"
            f'<text x="{left}" y="35" font-size="13">Không có bản ghi (no entries)</text></svg>'
        )
    totals: dict[str, int] = defaultdict(int)
    per_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for _day, action, count in actions_per_day:
        totals[action] += count
    keep = [a for a, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CHART_ACTIONS]]
    for day, action, count in actions_per_day:
        per_day[day][action if action in keep else "other"] += count
    series = keep + (["other"] if len(totals) > len(keep) else [])
    colours = {a: _PALETTE[i % len(_PALETTE)] for i, a in enumerate(keep)} | {"other": _OTHER_COLOUR}
    days = sorted(per_day)
    peak = max(sum(v.values()) for v in per_day.values())
    slot = plot_w / len(days)
    bar_w = max(1.0, slot * 0.8)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height + 18 * ((len(series) + 3) // 4)}" '
        f'viewBox="0 0 {width} {height + 18 * ((len(series) + 3) // 4)}" font-family="sans-serif">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
    ]
    for tick in range(5):
        value = round(peak * tick / 4)
        y = top + plot_h - plot_h * (value / peak if peak else 0)
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{value}</text>')
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
    label_every = max(1, len(days) // 12)
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        base: float = top + plot_h
        for action in series:
            count = per_day[day].get(action, 0)
            if not count:
                continue
            h = plot_h * count / peak
            base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colours[action]}">'
                f"<title>{escape(day)} {escape(action)}: {count}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle">{escape(day[5:])}</text>'
            )
    legend_y = height - 18
    for i, action in enumerate(series):
        lx = left + (i % 4) * (plot_w / 4)
        ly = legend_y + 18 * (i // 4)
        label = "khác (other)" if action == "other" else action
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{colours[action]}"/>')
        parts.append(f'<text x="{lx + 14:.1f}" y="{ly}" font-size="11">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
