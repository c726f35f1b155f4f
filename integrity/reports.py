"""Auditor reports of a log verification: JSON for machines, a self-contained HTML page (in
Vietnamese with English labels) for people. Both are rendered from the same
``VerificationReport`` (STYLE.md rule 12); nothing is recomputed here.

The HTML has no external assets: the style sheet is inline and the chart of entries per action
per day is an inline SVG, so the file can be mailed or archived as it is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from audit.verify import Fault, VerificationReport

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
}


@dataclass(frozen=True)
class ReportContext:
    """What was verified, where, when and against which keys."""

    origin: str
    source: str  # "live database" or the export file name
    generated_at: datetime
    trusted_keys: tuple[str, ...]
    trusted_checkpoint_size: int | None = None


def report_json(report: VerificationReport, context: ReportContext) -> dict[str, Any]:
    return {
        **report.to_dict(),
        "origin": context.origin,
        "source": context.source,
        "generated_at": context.generated_at.isoformat(),
        "trusted_keys": list(context.trusted_keys),
        "trusted_checkpoint_size": context.trusted_checkpoint_size,
    }


def verdict_line(report: VerificationReport) -> str:
    """One line for a terminal or a log, in both languages."""
    if report.ok:
        return f"TOÀN VẸN / VERIFIED: {report.entries_checked} entries, no fault"
    where = f" at seq {report.first_bad_seq}" if report.first_bad_seq is not None else ""
    kind = report.fault.value if report.fault else "fault"
    return f"PHÁT HIỆN SAI LỆCH / FAILED: {kind}{where} ({len(report.faults)} fault(s))"


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: VerificationReport, context: ReportContext) -> str:
    checkpoints = list(report.checkpoints)
    shown = checkpoints[-MAX_CHECKPOINT_ROWS:]
    return (
        _environment()
        .get_template("audit_report.html")
        .render(
            report=report,
            context=context,
            verdict=verdict_line(report),
            faults=[(FAULT_LABELS[f.kind], f) for f in report.faults],
            checkpoints=shown,
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
        base = top + plot_h
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
