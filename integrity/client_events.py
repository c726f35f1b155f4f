"""Events other systems append over the API: each client writes only its own.

The log's namespaces belong to the service: an ``audit.pii.erased`` entry is the marker a
verifier honours for a deletion of personal data, and ``auth.*`` entries fill a person's "My
security" page. A client with ``audit:append`` therefore writes only actions under
``ext.<its name>.`` (its name as registered), and the entry's actor is always that client
(``client:<id>``), never a value the caller chooses.

A refused attempt writes nothing of the event. The service logs the refusal as its own entry
(``audit.append.refused``) naming the client and the action tried, never the event's subject,
data or personal data. An authenticated client can write as many entries of its own, so this
entry adds no amplification worth bounding (unlike anonymous refusals, integrity.refusal_log).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, NoReturn

from audit.erasure import SERVICE_ACTOR
from integrity.audit_service import AuditService
from integrity.errors import AuditNamespaceRefused

EXT_PREFIX = "ext."
MAX_NAMESPACE_CHARS = 40
# One segment: no dot (client "a" must not reach the namespace of client "a.b"), no capital.
NAMESPACE_PATTERN = re.compile(rf"[a-z0-9](?:[a-z0-9-]{{0,{MAX_NAMESPACE_CHARS - 2}}}[a-z0-9])?")
REFUSED_ACTION = "audit.append.refused"


class RefusalReason(StrEnum):
    """Why an append was refused; the value is recorded in the refusal entry."""

    RESERVED = "reserved-namespace"  # the action is outside ``ext.<own name>.``
    UNUSABLE_NAME = "client-name-unusable"  # the client's name cannot be a namespace
    NOT_A_CLIENT = "not-a-client"  # only API clients append events


def namespace_of(client_name: str) -> str | None:
    """``ext.<name>.`` for a client whose registered name can be a namespace, else None."""
    return f"{EXT_PREFIX}{client_name}." if NAMESPACE_PATTERN.fullmatch(client_name) else None


def append_client_event(
    audit: AuditService,
    *,
    client_id: str,
    client_name: str,
    action: str,
    subject: str,
    data: dict[str, Any] | None,
    personal: dict[str, Any] | None,
) -> int:
    """Append a client's event under ``client:<client_id>``; returns its seq. Raises
    AuditNamespaceRefused (after logging the refusal) for an action outside the client's
    namespace, InvalidEntry (nothing written) for a malformed event."""
    prefix = namespace_of(client_name)
    if prefix is None:
        refuse(
            audit,
            RefusalReason.UNUSABLE_NAME,
            f"the client name {client_name!r} cannot name an event namespace (lower-case letters, digits and "
            f"hyphens, at most {MAX_NAMESPACE_CHARS} characters): this client cannot append events",
            actor=f"client:{client_id}",
            client_name=client_name,
            action=action,
            prefix=None,
        )
    if not action.startswith(prefix) or len(action) == len(prefix):
        refuse(
            audit,
            RefusalReason.RESERVED,
            f"the action {action!r} is outside this client's namespace: use an action under {prefix!r} "
            "(every other namespace belongs to the service)",
            actor=f"client:{client_id}",
            client_name=client_name,
            action=action,
            prefix=prefix,
        )
    return audit.record(f"client:{client_id}", action, subject, data, personal)


def refuse(
    audit: AuditService,
    reason: RefusalReason,
    message: str,
    *,
    actor: str,
    client_name: str,
    action: str,
    prefix: str | None,
) -> NoReturn:
    """Log the refused append as the service's own security event, then raise."""
    audit.record(
        SERVICE_ACTOR,
        REFUSED_ACTION,
        actor,
        {"reason": reason.value, "client": client_name, "action": action, "allowed_prefix": prefix},
    )
    raise AuditNamespaceRefused(message, allowed_prefix=prefix)
