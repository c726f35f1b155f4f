"""Errors of the audit-log domain, all under one base class (one flat file, as in
pyca/cryptography's ``exceptions.py``)."""

from __future__ import annotations


class AuditError(Exception):
    """Base of every error raised by ``audit``."""


class InvalidEntry(AuditError):
    """An entry to append is malformed: actor, action, subject, data or personal data refused."""


class AuditUnavailable(AuditError):
    """The log cannot take appends now (the service is closed or its writer failed)."""


class EntryNotFound(AuditError):
    """No entry with that sequence number (or a range outside the log)."""


class InvalidTreeSize(AuditError):
    """A tree size or leaf index outside what the log holds or what a proof can cover."""


class NoCheckpoint(AuditError):
    """The log has no signed checkpoint yet."""


class InvalidProof(AuditError):
    """An RFC 9162 inclusion or consistency proof does not verify."""


class MalformedCheckpoint(AuditError):
    """A signed note or tlog checkpoint does not parse (C2SP signed-note / tlog-checkpoint)."""


class MalformedVerifierKey(AuditError):
    """A signed-note verifier key string does not parse or is not Ed25519."""


class CheckpointSignatureInvalid(AuditError):
    """No signature on the note verifies under the given trusted keys."""


class MalformedExport(AuditError):
    """An export line is not an entry, a checkpoint, or is not valid JSON."""


class PiiMismatch(AuditError):
    """Stored personal data no longer matches the salted commitment in its entry."""


class PiiNotFound(AuditError):
    """The entry has no personal data stored (none recorded, or already erased)."""


class PiiAlreadyErased(PiiNotFound):
    """The entry's personal data was erased earlier."""
