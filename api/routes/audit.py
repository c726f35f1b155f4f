"""The audit log over HTTP: other systems append their events (scope ``audit:append``),
auditors read entries, checkpoints, proofs, the export and the verification report
(``audit:read``; verified incrementally, a full re-verification is an admin's, logged); the
verifier keys are public; erasing personal data is an admin action.
A client appends only actions under ``ext.<its name>.`` as itself (integrity.client_events).

Thin: pydantic models in, ``integrity.audit_service`` does the work. Hashes and proof nodes
are lowercase hex, like the entries' ``hash`` and ``prev``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import Principal, get_state, require_scope
from api.errors import BodyTooLarge
from api.middleware import page_csp_with_styles
from api.openapi import content, problems
from api.rate_limit import limit_public
from audit.entry import ACTION_PATTERN, MAX_ACTION_CHARS, MAX_SUBJECT_CHARS, Entry
from auth.errors import MissingScope
from integrity.app_state import AppState
from integrity.audit_service import MAX_ENTRIES_PER_READ, AuditService
from integrity.client_events import RefusalReason, append_client_event, refuse
from integrity.reports import render_html, report_json, style_sources

# Sequence numbers and tree sizes are 64-bit in the database; larger values are refused at
# the edge (422) instead of overflowing a driver (found by the schema fuzzer).
MAX_SEQ = 2**62
router = APIRouter(tags=["audit"])

# An event is a few fields and small objects; anything bigger is not an audit event.
MAX_EVENT_BYTES = 64 * 1024
NDJSON = "application/x-ndjson"
PII_SCOPE = "admin"  # exporting personal data needs admin on top of audit:read
FULL_VERIFICATION_SCOPE = "admin"  # so does a full re-verification of the report


def get_audit(state: AppState = Depends(get_state)) -> AuditService:
    return state.audit


async def _limit_event_body(request: Request) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_EVENT_BYTES:
        raise BodyTooLarge(f"an audit event is at most {MAX_EVENT_BYTES} bytes")
    if len(await request.body()) > MAX_EVENT_BYTES:
        raise BodyTooLarge(f"an audit event is at most {MAX_EVENT_BYTES} bytes")


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(
        max_length=MAX_ACTION_CHARS,
        pattern=ACTION_PATTERN.pattern,
        description="under ext.<your client name>. (every other namespace belongs to the service)",
        examples=["ext.dvc-portal.dossier.received"],
    )
    subject: str = Field("", max_length=MAX_SUBJECT_CHARS, examples=["000.00.31.H29-251123-0001"])
    data: dict[str, Any] = Field(default_factory=dict, description="no personal data here")
    pii: dict[str, Any] | None = Field(
        None, description="personal data: stored apart, a salted commitment in the entry"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_actor(cls, value: Any) -> Any:
        # Said plainly rather than as "extra field": the actor is who authenticated, never sent.
        if isinstance(value, dict) and "actor" in value:
            raise ValueError("actor is not accepted: the entry's actor is always the authenticated client")
        return value


class EventOut(BaseModel):
    seq: int
    actor: str


class EntryOut(BaseModel):
    seq: int
    ts: str
    actor: str
    action: str
    subject: str
    data: dict[str, Any]
    pii: str | None
    prev: str
    hash: str


class EntriesOut(BaseModel):
    tree_size: int
    entries: list[EntryOut]


class InclusionOut(BaseModel):
    seq: int
    tree_size: int
    leaf_hash: str
    root_hash: str
    path: list[str]


class ConsistencyOut(BaseModel):
    first: int
    second: int
    first_root: str
    second_root: str
    path: list[str]


class EraseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500)


class EraseOut(BaseModel):
    seq: int
    erasure_seq: int


def _entry(entry: Entry) -> dict[str, Any]:
    return entry.to_dict()


@router.post(
    "/v1/audit/events",
    status_code=201,
    response_model=EventOut,
    dependencies=[Depends(_limit_event_body)],
    responses=problems(422, 503),
)
def append_event(
    body: EventIn,
    audit: AuditService = Depends(get_audit),
    caller: Principal = Depends(require_scope("audit:append")),
) -> dict[str, Any]:
    if caller.kind != "client":
        refuse(
            audit,
            RefusalReason.NOT_A_CLIENT,
            "only API clients append events",
            actor=caller.actor,
            client_name=caller.name,
            action=body.action,
            prefix=None,
        )
    seq = append_client_event(
        audit,
        client_id=caller.id,
        client_name=caller.name,
        action=body.action,
        subject=body.subject,
        data=body.data,
        personal=body.pii,
    )
    return {"seq": seq, "actor": caller.actor}


@router.get("/v1/audit/checkpoint", response_class=PlainTextResponse, responses=problems(404))
def checkpoint(
    audit: AuditService = Depends(get_audit), _caller: Principal = Depends(require_scope("audit:read"))
) -> PlainTextResponse:
    return PlainTextResponse(audit.current_checkpoint().note)


@router.get("/v1/audit/public-key", response_class=PlainTextResponse, dependencies=[Depends(limit_public)])
def public_key(audit: AuditService = Depends(get_audit)) -> PlainTextResponse:
    return PlainTextResponse("".join(f"{key}\n" for key in audit.verifier_keys()))


@router.get("/v1/audit/entries", response_model=EntriesOut, responses=problems(404))
def entries(
    start: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    end: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description=f"exclusive; at most {MAX_ENTRIES_PER_READ} per call")
    ] = None,
    audit: AuditService = Depends(get_audit),
    _caller: Principal = Depends(require_scope("audit:read")),
) -> dict[str, Any]:
    return {"tree_size": audit.size(), "entries": [_entry(e) for e in audit.entries(start, end)]}


@router.get("/v1/audit/proofs/inclusion", response_model=InclusionOut)
def inclusion(
    seq: Annotated[int, Query(ge=0, le=MAX_SEQ)],
    size: Annotated[
        int | None, Query(ge=1, le=MAX_SEQ, description="tree size (a checkpoint's); default: current")
    ] = None,
    audit: AuditService = Depends(get_audit),
    _caller: Principal = Depends(require_scope("audit:read")),
) -> dict[str, Any]:
    proof = audit.inclusion_proof(seq, size)
    return {
        "seq": proof.seq,
        "tree_size": proof.tree_size,
        "leaf_hash": proof.leaf_hash.hex(),
        "root_hash": proof.root_hash.hex(),
        "path": [node.hex() for node in proof.path],
    }


@router.get("/v1/audit/proofs/consistency", response_model=ConsistencyOut)
def consistency(
    first: Annotated[int, Query(ge=0, le=MAX_SEQ)],
    second: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    audit: AuditService = Depends(get_audit),
    _caller: Principal = Depends(require_scope("audit:read")),
) -> dict[str, Any]:
    proof = audit.consistency_proof(first, second)
    return {
        "first": proof.first,
        "second": proof.second,
        "first_root": proof.first_root.hex(),
        "second_root": proof.second_root.hex(),
        "path": [node.hex() for node in proof.path],
    }


@router.get(
    "/v1/audit/export",
    response_class=StreamingResponse,
    responses={**content(200, "one JSON entry per line", **{NDJSON: {"type": "string"}}), **problems(503)},
)
def export(
    include_pii: Annotated[bool, Query(description="add pii_salt/pii_data (needs the admin scope too)")] = False,
    audit: AuditService = Depends(get_audit),
    caller: Principal = Depends(require_scope("audit:read")),
) -> StreamingResponse:
    if include_pii:
        if PII_SCOPE not in caller.scopes:
            raise MissingScope(PII_SCOPE)
        audit.record(caller.actor, "audit.exported", audit.origin, {"include_pii": True})
    # A generator over a paged read: the export never sits whole in memory.
    return StreamingResponse(
        audit.export_lines(include_pii=include_pii),
        media_type=NDJSON,
        headers={"Content-Disposition": f'attachment; filename="{audit.log_id}-audit.ndjson"'},
    )


@router.get(
    "/v1/audit/report",
    response_model=None,
    responses={
        **content(
            200,
            "the verification report: JSON, or a printable HTML page with format=html",
            **{"application/json": {"type": "object"}, "text/html": {"type": "string"}},
        ),
        **problems(503),
    },
)
def report(
    format: Annotated[Literal["json", "html"], Query()] = "json",
    full: Annotated[
        bool,
        Query(description="verify every entry again from entry 0 (needs the admin scope too; logged)"),
    ] = False,
    state: AppState = Depends(get_state),
    caller: Principal = Depends(require_scope("audit:read")),
) -> Response:
    # Incremental from the last checkpoint this instance verified; the full pass is the admin's.
    if full and FULL_VERIFICATION_SCOPE not in caller.scopes:
        raise MissingScope(FULL_VERIFICATION_SCOPE)
    verifications = state.audit_verification
    result = verifications.full(actor=caller.actor) if full else verifications.report()
    if format == "html":
        html = render_html(result.report, result.context)
        return HTMLResponse(html, headers={"Content-Security-Policy": page_csp_with_styles(style_sources(html))})
    return JSONResponse(report_json(result.report, result.context))


@router.post(
    "/v1/admin/audit/pii/{seq}/erase", response_model=EraseOut, tags=["admin"], responses=problems(404, 409, 503)
)
def erase_pii(
    seq: Annotated[int, Path(ge=0, le=MAX_SEQ)],
    body: EraseIn,
    audit: AuditService = Depends(get_audit),
    admin: Principal = Depends(require_scope("admin")),
) -> dict[str, int]:
    # The authenticated admin approves; the service writes the marker (audit.erasure).
    return {"seq": seq, "erasure_seq": audit.erase_pii(seq, body.reason, approved_by=admin.actor)}
