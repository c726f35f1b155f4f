"""The erasure marker: the one entry that makes missing personal data legitimate.

Erasing an entry's personal data (its salt and data, never the entry) is recorded as
``audit.pii.erased`` with ``data`` = ``{"seq", "approved_by", "reason"}``: which entry, the
administrator who approved the deletion and why. It is written by the service (over HTTP) or by
the operator who ran the command on the server (``operator:<login>``); no caller of the HTTP
API can write as either. A verifier honours a marker only when all of that holds, so a marker
written by anyone else, or one that names no approver or no reason, leaves the missing data a
fault (docs/audit-log.md, "Personal data").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

ERASED_ACTION = "audit.pii.erased"
# The actor of every entry the service writes on its own account (key imports, the log's
# creation, refusals, erasures): callers of the HTTP API can never act as it.
SERVICE_ACTOR = "system"
# The entries of a person running a command on the server's shell: ``operator:<OS login>``.
OPERATOR_ACTOR = re.compile(r"^operator:[^\s\x00-\x1f\x7f]{1,200}$")
# An approver is a person or a system holding the admin scope, never the service itself.
APPROVER_PATTERN = re.compile(r"^(user|client):[^\s\x00-\x1f\x7f]{1,200}$")
MAX_REASON_CHARS = 500


def marker_data(seq: int, *, approved_by: str, reason: str) -> dict[str, Any]:
    """The ``data`` of the erasure marker for entry ``seq``."""
    return {"seq": seq, "approved_by": approved_by, "reason": reason}


def valid_approver(approved_by: object) -> bool:
    return isinstance(approved_by, str) and APPROVER_PATTERN.match(approved_by) is not None


def marker_writer(actor: object) -> bool:
    """Whether ``actor`` may write an erasure marker: the service, or an operator on its shell."""
    return actor == SERVICE_ACTOR or (isinstance(actor, str) and OPERATOR_ACTOR.match(actor) is not None)


def valid_reason(reason: object) -> bool:
    return isinstance(reason, str) and bool(reason.strip()) and len(reason) <= MAX_REASON_CHARS


def honoured_seq(marker_seq: object, actor: object, action: object, data: object) -> int | None:
    """The seq whose personal data an entry legitimately erased, or None when the entry is not
    an erasure marker the verifier may honour: not written by the service or an operator,
    naming no approver or no reason, or pointing at itself or a later entry (only earlier data
    can be erased)."""
    if action != ERASED_ACTION or not marker_writer(actor) or not isinstance(data, Mapping):
        return None
    seq = data.get("seq")
    if type(seq) is not int or seq < 0 or type(marker_seq) is not int or seq >= marker_seq:
        return None
    if not valid_approver(data.get("approved_by")) or not valid_reason(data.get("reason")):
        return None
    return seq
