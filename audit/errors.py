"""Errors of the audit-log domain, all under one base class (one flat file, as in
pyca/cryptography's ``exceptions.py``)."""

from __future__ import annotations

from enum import StrEnum


class AuditError(Exception):
    """Base of every error raised by ``audit``."""


class InvalidEntry(AuditError):
    """An entry to append is malformed: actor, action, subject, data or personal data refused."""


class AuditUnavailable(AuditError):
    """The log cannot take appends now (the service is closed or its writer failed)."""


class LogRolledBack(AuditUnavailable):
    """A witness cosigned more of the log than the log holds, or another history at a size it
    holds: the log was restored to an older state. Appends are refused, and nothing is
    written, until an administrator acknowledges the loss (``audit acknowledge-rollback``)."""


class NothingToAcknowledge(AuditError):
    """An acknowledgement of a rollback while the log is not in the rolled-back state."""


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


class CosignatureInvalid(AuditError):
    """A checkpoint has no cosignature by the expected cosigner, or it does not verify
    (C2SP tlog-cosignature)."""


class WitnessRefusal(StrEnum):
    """Why a witness refuses to cosign a checkpoint (C2SP tlog-witness ``add-checkpoint``)."""

    MALFORMED = "malformed"  # the request does not parse, or old size > checkpoint size
    UNKNOWN_LOG = "unknown-log"  # no log with the checkpoint's origin is witnessed
    UNTRUSTED = "untrusted"  # no valid signature by a trusted key of that log
    OLD_SIZE_MISMATCH = "old-size-mismatch"  # the old size is not the size last cosigned
    INCONSISTENT = "inconsistent"  # the consistency proof or the empty-tree root is wrong


class CheckpointRefused(AuditError):
    """The witness refuses the checkpoint; ``stored_size`` is the size it last cosigned for the
    log when the refusal is an old-size mismatch (the client resubmits from that size)."""

    def __init__(self, reason: WitnessRefusal, message: str, stored_size: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.stored_size = stored_size


class PolicyInvalid(AuditError):
    """A trust policy file does not parse or breaks a rule of C2SP tlog-policy."""


class MalformedWitnessState(AuditError):
    """A witness's stored record of a log does not parse."""


class MalformedTilePath(AuditError):
    """A tile or entry-bundle path is not in the C2SP tlog-tiles form (``tile/<L>/<N>[.p/<W>]``)."""


class TileNotFound(AuditError):
    """The tile or entry bundle lies beyond the log's latest checkpoint (C2SP tlog-tiles)."""


class EntryTooLong(AuditError):
    """An entry's canonical bytes do not fit an entry bundle's 16-bit length prefix."""


class TimestampInvalid(AuditError):
    """An RFC 3161 time-stamp of a checkpoint is malformed, not granted, over another text, or
    not signed by a trusted time-stamping authority."""
