"""The tamper-evident audit log (pure domain): entries, hash chain, RFC 9162 Merkle tree,
C2SP signed checkpoints, proofs, storage on a caller's connection, export and the verifier."""

from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint, SignedNote, VerifierKey, origin_for
from audit.entry import GENESIS_PREV, Entry, build_entry, canonical, format_ts, hash_body, validate_event
from audit.errors import (
    AuditError,
    AuditUnavailable,
    CheckpointSignatureInvalid,
    EntryNotFound,
    InvalidEntry,
    InvalidProof,
    InvalidTreeSize,
    MalformedCheckpoint,
    MalformedExport,
    MalformedVerifierKey,
    NoCheckpoint,
    PiiAlreadyErased,
    PiiMismatch,
    PiiNotFound,
)
from audit.export import export_lines, load_verifier_keys, verify_export
from audit.merkle import verify_consistency, verify_inclusion
from audit.verify import ChainVerifier, CheckpointCheck, Fault, FaultReport, VerificationReport

__all__ = [
    "GENESIS_PREV",
    "AuditError",
    "AuditUnavailable",
    "ChainVerifier",
    "Checkpoint",
    "CheckpointCheck",
    "CheckpointSignatureInvalid",
    "Entry",
    "EntryNotFound",
    "Fault",
    "FaultReport",
    "InvalidEntry",
    "InvalidProof",
    "InvalidTreeSize",
    "MalformedCheckpoint",
    "MalformedExport",
    "MalformedVerifierKey",
    "NoCheckpoint",
    "NoteSigner",
    "PiiAlreadyErased",
    "PiiMismatch",
    "PiiNotFound",
    "SignedCheckpoint",
    "SignedNote",
    "VerificationReport",
    "VerifierKey",
    "build_entry",
    "canonical",
    "export_lines",
    "format_ts",
    "hash_body",
    "load_verifier_keys",
    "origin_for",
    "validate_event",
    "verify_consistency",
    "verify_export",
    "verify_inclusion",
]
