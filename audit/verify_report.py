"""What a verification found: the fault kinds, one fault, one checkpoint as seen, and the
verdict; and where a verification stood, to be resumed. Values only; ``audit.verify`` computes
them and every human form (CLI, HTML) is rendered from ``VerificationReport``.

The verdict rule: an entry is *anchored* when it lies inside the tree of a checkpoint whose
signature verifies with a trusted key and whose root equals the root recomputed from the
entries. A log (or an export) is verified only when no fault was found AND every entry read is
anchored; without a trusted signature over them, entries prove nothing about what the log held,
since whoever holds the database can recompute any hash chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from audit.merkle import fold


class Fault(StrEnum):
    CHANGED = "changed"
    INSERTED = "inserted"
    DELETED = "deleted"
    REORDERED = "reordered"
    CUT_TAIL = "cut_tail"
    FORGED_CHECKPOINT = "forged_checkpoint"
    INCONSISTENT_HISTORY = "inconsistent_history"
    PII_MISMATCH = "pii_mismatch"
    # Entries no trusted signed checkpoint covers: not proven, whatever their hashes say.
    UNANCHORED = "unanchored"
    # An RFC 3161 time-stamp of a checkpoint that is malformed, over another text or from a TSA
    # the auditor does not trust.
    TIMESTAMP_INVALID = "timestamp_invalid"
    # A checkpoint without a time-stamp, when the auditor requires one on every checkpoint.
    UNTIMESTAMPED = "untimestamped"


# Faults that prove nothing was tampered with, only that something is not proven.
UNPROVEN = frozenset({Fault.UNANCHORED, Fault.UNTIMESTAMPED})


class Verdict(StrEnum):
    VERIFIED = "verified"  # no fault, every entry anchored
    NOT_VERIFIED = "not_verified"  # no sign of tampering, but entries not anchored (or time required, absent)
    FAILED = "failed"  # tampering or a bad checkpoint was found


@dataclass(frozen=True)
class FaultReport:
    """One fault. ``seq`` is the first bad entry; None when no entry is to blame (a checkpoint
    that is malformed or not signed by a trusted key). ``tree_size`` names the checkpoint."""

    kind: Fault
    seq: int | None
    detail: str
    tree_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "seq": self.seq, "detail": self.detail, "tree_size": self.tree_size}


@dataclass(frozen=True)
class CheckpointCheck:
    """A checkpoint as the verifier saw it. ``matches`` is None when the stream never reached
    its size (or the chain broke before it)."""

    source: str  # "log" (stored or exported), "published", or "trusted" (kept by the auditor)
    tree_size: int | None
    root_hash: str | None
    signers: tuple[str, ...]  # the log keys, then (with a trust policy) the witnesses that cosigned
    signature_valid: bool
    matches: bool | None
    # With a trust policy (C2SP tlog-policy): whether its witness quorum cosigned the checkpoint
    # (None without a policy), and the names on signature lines by keys the policy does not list
    # (reported, never counted).
    witnessed: bool | None = None
    ignored_cosigners: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "signers": list(self.signers),
            "signature_valid": self.signature_valid,
            "matches": self.matches,
            "witnessed": self.witnessed,
            "ignored_cosigners": list(self.ignored_cosigners),
        }


class TimestampStatus(StrEnum):
    TRUSTED = "trusted"  # a token over this checkpoint from a TSA the auditor trusts
    INVALID = "invalid"  # a token that does not verify: a fault
    MISSING = "missing"  # no token: no trusted time for this checkpoint
    UNCHECKED = "unchecked"  # a token, but no TSA root was given to check it


@dataclass(frozen=True)
class TimestampCheck:
    """The RFC 3161 time-stamp of one checkpoint as the verifier judged it."""

    tree_size: int | None
    status: TimestampStatus
    gen_time: datetime | None = None  # the TSA's genTime, UTC, when TRUSTED
    tsa: str | None = None  # subject of the TSA certificate that signed it
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "status": self.status.value,
            "gen_time": self.gen_time.isoformat() if self.gen_time else None,
            "tsa": self.tsa,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class VerificationReport:
    """The verdict: machine form via ``to_dict``, human forms (CLI, HTML) rendered from it."""

    faults: tuple[FaultReport, ...]
    entries_checked: int
    first_seq: int | None
    last_seq: int | None
    root_hash: str  # RFC 9162 root over all entries read, hex
    checkpoints: tuple[CheckpointCheck, ...]
    verified_tree_size: int  # the largest size covered by a matching, validly signed checkpoint
    pii_checked: int
    pii_erased: int
    pii_unavailable: int
    actions_per_day: tuple[tuple[str, str, int], ...]  # (YYYY-MM-DD, action, count)
    faults_truncated: bool = False
    anchored_by: tuple[str, ...] = ()  # the trusted keys that signed the anchoring checkpoint
    anchor_note: str | None = None  # that checkpoint's signed note, for the auditor to keep
    timestamps: tuple[TimestampCheck, ...] = ()  # one per checkpoint when time-stamps were judged

    @property
    def ok(self) -> bool:
        """No fault at all, unanchored entries included: the log is verified."""
        return not self.faults

    @property
    def verdict(self) -> Verdict:
        if not self.faults:
            return Verdict.VERIFIED
        if all(f.kind in UNPROVEN for f in self.faults):
            return Verdict.NOT_VERIFIED
        return Verdict.FAILED

    @property
    def fault(self) -> Fault | None:
        return self.faults[0].kind if self.faults else None

    @property
    def first_bad_seq(self) -> int | None:
        return self.faults[0].seq if self.faults else None

    @property
    def anchored_entries(self) -> int:
        """Entries 0 .. verified_tree_size - 1: inside a trusted, matching signed checkpoint."""
        return min(self.verified_tree_size, self.entries_checked)

    @property
    def uncovered_entries(self) -> int:
        """Entries after the last matching signed checkpoint: not anchored by a signature."""
        return max(0, self.entries_checked - self.verified_tree_size)

    def to_dict(self) -> dict[str, Any]:
        anchored, uncovered = self.anchored_entries, self.uncovered_entries
        return {
            "ok": self.ok,
            "verdict": self.verdict.value,
            "fault": self.fault.value if self.fault else None,
            "first_bad_seq": self.first_bad_seq,
            "faults": [f.to_dict() for f in self.faults],
            "faults_truncated": self.faults_truncated,
            "entries_checked": self.entries_checked,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "tree_size": self.entries_checked,
            "root_hash": self.root_hash,
            "verified_tree_size": self.verified_tree_size,
            "uncovered_entries": uncovered,
            "anchored": {
                "entries": anchored,
                "first": 0 if anchored else None,
                "last": anchored - 1 if anchored else None,
                "checkpoint_size": self.verified_tree_size,
                "signers": list(self.anchored_by),
            },
            "unanchored": {
                "entries": uncovered,
                "first": anchored if uncovered else None,
                "last": self.entries_checked - 1 if uncovered else None,
            },
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "pii": {"checked": self.pii_checked, "erased": self.pii_erased, "unavailable": self.pii_unavailable},
            "actions_per_day": [{"day": d, "action": a, "count": n} for d, a, n in self.actions_per_day],
            "timestamps": [t.to_dict() for t in self.timestamps],
        }


@dataclass(frozen=True)
class ResumeState:
    """Where a verification stood after its first ``size`` entries, all found intact and in
    order, with no fault: what ``ChainVerifier(resume=…)`` needs to go on at entry ``size`` and
    reach the report that one pass over the whole log would give (``ChainVerifier.resume_state``).

    Nothing here is taken on trust by the verifier beyond what the caller vouches for: the
    caller keeps it where whoever holds the log cannot write, and checks that ``root`` is the
    root of a signed checkpoint it verified."""

    size: int  # entries read (seq 0 .. size - 1)
    frontier: tuple[bytes, ...]  # the RFC 9162 compact range over them: it fixes the root at ``size``
    recent: tuple[str, ...]  # the last entry hashes, newest first (64 zeros stand before entry 0)
    roots: tuple[tuple[int, bytes], ...]  # the root at each checkpoint size reached, to judge those again
    first_seq: int | None
    last_seq: int | None
    actions_per_day: tuple[tuple[str, str, int], ...]  # the chart's counts so far
    pii_checked: int
    pii_erased: int
    pii_unavailable: int

    @property
    def root(self) -> bytes:
        """The RFC 9162 root over the first ``size`` entries."""
        return fold(self.frontier)
