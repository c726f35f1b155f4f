"""The audit log as C2SP tlog-tiles (https://c2sp.org/tlog-tiles) under ``/v1/audit/tlog/``:
``checkpoint``, ``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]``, for monitors.

Read access needs the ``audit:read`` scope like every other audit read: the entries carry no
personal data, but their actors and subjects name users and dossiers. For the same reason the
cache headers are ``private``: a monitor may keep a full tile for ever, a shared cache in front
of the service must not hand it to callers without a key (RFC 9111 §5.2.2.7).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response

from api.deps import Principal, require_scope
from api.openapi import BINARY, content, problems
from api.routes.audit import get_audit
from audit.tiles import TILE_ROOT
from integrity import audit_tiles
from integrity.audit_service import AuditService

PREFIX = "/v1/audit/tlog"
OCTET_STREAM = "application/octet-stream"
# Full tiles and bundles never change (tlog-tiles: "immutable"); a partial one is replaced as
# the log grows and the checkpoint moves, so clients look again soon.
IMMUTABLE = "private, max-age=31536000, immutable"
SHORT_LIVED = "private, max-age=10"
CHECKPOINT_CACHE = "private, no-cache"

router = APIRouter(tags=["audit"])


@router.get(
    f"{PREFIX}/checkpoint",
    response_class=PlainTextResponse,
    responses={
        **content(200, "the latest signed checkpoint note", **{"text/plain": {"type": "string"}}),
        **problems(404),
    },
)
def checkpoint(
    audit: AuditService = Depends(get_audit), _caller: Principal = Depends(require_scope("audit:read"))
) -> PlainTextResponse:
    """The latest signed checkpoint, the same note as `GET /v1/audit/checkpoint`."""
    return PlainTextResponse(audit_tiles.checkpoint_note(audit), headers={"Cache-Control": CHECKPOINT_CACHE})


@router.get(
    f"{PREFIX}/{TILE_ROOT}/{{path:path}}",
    response_class=Response,
    responses={
        **content(200, "a hash tile (32-byte hashes) or an entry bundle", **{OCTET_STREAM: BINARY}),
        **problems(400, 404),
    },
)
def tile(
    path: str, audit: AuditService = Depends(get_audit), _caller: Principal = Depends(require_scope("audit:read"))
) -> Response:
    """A hash tile `tile/<L>/<N>[.p/<W>]` or an entry bundle `tile/entries/<N>[.p/<W>]` of the
    tree at the latest checkpoint's size; 400 for a path not in that form, 404 beyond it."""
    served = audit_tiles.read_tile(audit, f"{TILE_ROOT}/{path}")
    cache = IMMUTABLE if served.immutable else SHORT_LIVED
    return Response(served.body, media_type=OCTET_STREAM, headers={"Cache-Control": cache})
