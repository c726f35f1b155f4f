"""Erasing personal data from the audit log.

The salt and personal data of an entry are deleted, never the entry, and an
``audit.pii.erased`` marker is logged in the same transaction: the marker a verifier honours
(audit.erasure). Over HTTP the authenticated admin approves
(``POST /v1/admin/audit/pii/{seq}/erase``) and the service writes the marker; the
``audit erase-pii`` command is confirmed by the approving administrator's TOTP code
(integrity/operator_auth.py) and the operator who ran it writes the marker, naming that admin
as ``user:<name>``.
"""

from __future__ import annotations

from audit import store
from audit.erasure import ERASED_ACTION, SERVICE_ACTOR, marker_data, marker_writer, valid_approver, valid_reason
from audit.errors import InvalidEntry
from integrity.audit_writer import AuditWriter


def erase_pii(writer: AuditWriter, seq: int, reason: str, *, approved_by: str, actor: str = SERVICE_ACTOR) -> int:
    """Delete the salt and personal data of entry ``seq`` and log ``audit.pii.erased`` in
    the same transaction; returns the erasure entry's seq. The chain stays verifiable.

    The marker is written by the service, or by the operator who ran the command
    (``operator:<login>``), naming ``approved_by`` (the approving admin as an actor,
    ``user:<name>`` or ``client:<id>``) and the reason: a verifier honours no other
    (``audit.erasure``)."""
    if not marker_writer(actor):
        raise InvalidEntry("an erasure marker is written by the service or an operator")
    reason = reason.strip()
    if not valid_reason(reason):
        raise InvalidEntry("an erasure needs a reason (at most 500 characters)")
    if not valid_approver(approved_by):
        raise InvalidEntry("an erasure needs the approving admin as 'user:<name>' or 'client:<id>'")
    data = marker_data(seq, approved_by=approved_by, reason=reason)
    with writer.engine.begin() as conn:
        store.lock_appends(conn)
        store.delete_pii(conn, seq)
        return writer.record(actor, ERASED_ACTION, f"audit:{seq}", data, conn=conn)
