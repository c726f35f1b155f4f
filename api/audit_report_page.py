"""The audit log's verification report as a page of the site, ``/audit/report``, for a
signed-in person whose role reads the audit log (an auditor; an administrator).

The same report as ``GET /v1/audit/report?format=html`` (integrity.reports.render_html), verified
the same way (incrementally: integrity.incremental_verification), with the language of the other
pages leading (Vietnamese by default, ``?lang=en``) and a way back to the account page. The
report is one self-contained file with its style sheet inline: it is served under the page CSP
that admits exactly that sheet by its hash, and no script. Not signed in: 303 to the sign-in
page; signed in without the role: a 403 page.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from api.deps import get_state
from api.middleware import page_csp_with_styles
from api.web import Page
from integrity.accounts import UserPrincipal
from integrity.app_state import AppState
from integrity.reports import render_html, style_sources

router = APIRouter(include_in_schema=False)

PAGE = "/audit/report"
READ_SCOPE = "audit:read"

REPORT_TEXTS: dict[str, tuple[str, str]] = {
    "audit_forbidden_title": ("Không có quyền xem báo cáo", "Not allowed to see the report"),
    "audit_forbidden": (
        "Báo cáo kiểm tra nhật ký kiểm toán dành cho kiểm toán viên: vai trò của tài khoản này không được "
        "đọc nhật ký kiểm toán.",
        "The audit log verification report is for auditors: the role of this account may not read the audit log.",
    ),
}


class _ReportPage(Page):
    own_texts = REPORT_TEXTS


def _person(page: _ReportPage, state: AppState) -> UserPrincipal | None:
    token = page.session()
    return state.accounts.authenticate_session(token) if token else None


@router.get(PAGE)
async def audit_report(request: Request, state: AppState = Depends(get_state)) -> Response:
    page = _ReportPage(request, state)
    person = await run_in_threadpool(_person, page, state)
    if person is None:  # not signed in, or only half (second factor or its set-up pending)
        return page.redirect("/login")
    if READ_SCOPE not in person.scopes:
        response: Response = page.render("audit_forbidden.html", status=403)
        return response
    result = await run_in_threadpool(state.audit_verification.report)
    other = "en" if page.lang == "vi" else "vi"
    links = ((f"{PAGE}?lang={other}", page.t("lang_other")), ("/account/security", page.t("security_title")))
    html = render_html(result.report, result.context, lang=page.lang, links=links)
    csp = page_csp_with_styles(style_sources(html))
    return page.finish(HTMLResponse(html, headers={"Content-Security-Policy": csp}))
