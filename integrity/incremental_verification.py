"""The live log's verification report, verified incrementally from the last checkpoint verified.

A full verification reads every entry since entry 0. The report (``GET /v1/audit/report``, the
auditors' web page ``/audit/report``) instead keeps, at the largest checkpoint it verified, the
state the verifier had there (``audit.verify.ResumeState``: the RFC 9162 compact range, which
fixes the root at that size, the last hashes, the root at each checkpoint size reached and the
report's running counts) and each report reads only the entries after it. Everything else a
full verification is given is given again: every stored and published checkpoint (signatures
checked again; those of a size already passed are judged against the root kept for that size),
the honoured erasures, the personal data of the new entries. So the report reaches the verdict
a full verification of the same snapshot gives, within what is said below.

What an incremental run sees:
- everything about the entries after the kept checkpoint: hashes, chain (the link from the
  last verified entry included), personal data, their checkpoints;
- whether each new checkpoint extends the verified history: its root is recomputed from the
  kept compact range (which IS the verified root) extended by the new entries, a consistency
  proof made of the verifier's own hashes. A checkpoint over a rewritten history, even one the
  service signed after an insider rebuilt the stored tree, is ``inconsistent_history``;
- the RFC 9162 consistency proof the log serves from the kept size to the newest verified
  checkpoint, checked against the kept root: the stored tree nodes, from which the service signs
  checkpoints and answers proofs, must still lead to the history verified. (A full verification
  recomputes every node from the entries and never reads the stored ones: this check is the one
  place where the incremental verdict can be stricter; the next checkpoint the service signs
  from altered nodes fails both.)
- a log now shorter than the kept size, a kept checkpoint no longer in the log, a new
  checkpoint of a size already passed, an erasure of an entry already verified, other trusted
  keys: the run is then a full one that also requires the log to still hold the kept
  checkpoint's tree, as an auditor's ``--since`` does (a cut tail shows even where no published
  copy is kept).

What it cannot see: a change, made in the database, to an entry or to personal data already
verified that leaves the stored hashes and tree nodes as they were (an UPDATE of a subject, of
a salt). The entries before the kept size are not read again; their stored hashes still give
the verified root. The full re-verification (an admin action: ``?full=true``, or
``bhxh-integrity audit verify``) reads them all and finds it; a rewrite that also changes the
hashes or the tree shows at the latest at the next checkpoint, whose root no longer extends the
verified one.

Where the kept state lives: in this process's memory, never in the database. It plays the part
of the checkpoint an auditor keeps: an insider who can rewrite the log's tables could rewrite a
state stored beside them, and the report would then resume from the history they chose. Several
instances each keep their own; each verifies the whole log once (at its first report, or after
a failed full re-verification) and then only what is new, and a restart costs one full pass.
Only a state from a run that found no fault is kept, and a run that finds a fault never replaces
it, so every later report finds the fault again from the same place.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from audit import store
from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.errors import AuditError
from audit.merkle import verify_consistency
from audit.verify import Fault, FaultReport, ResumeState, Verdict, VerificationReport
from audit.verify_fast import FastChainVerifier
from audit.witness_store import cosigned_notes
from integrity.audit_service import AuditService
from integrity.db import READ_ONLY
from integrity.logs import get_logger
from integrity.reports import ReportContext, VerificationMode

FULL_VERIFICATION_ACTION = "audit.verification.full"


@dataclass(frozen=True)
class VerifiedPoint:
    """The largest checkpoint this process verified, and the verifier's state there."""

    state: ResumeState
    note: str  # the checkpoint's signed note, as verified
    keys: tuple[str, ...]  # the trusted keys it was verified with
    erased: frozenset[int]  # honoured erasures of entries below ``state.size`` at the time
    verified_at: datetime

    @property
    def size(self) -> int:
        return self.state.size


@dataclass(frozen=True)
class LiveReport:
    """A verification of the live log, with the context its report is rendered with."""

    report: VerificationReport
    context: ReportContext

    @property
    def mode(self) -> VerificationMode:
        return self.context.verification


@dataclass(frozen=True)
class _Checkpoints:
    """The checkpoints a run is given: the stored ones (with their cosignatures), the published
    copies, and the size and root of each that parses."""

    stored: list[str]
    published: list[str]
    parsed: list[SignedCheckpoint]
    signed_at: tuple[tuple[int, datetime], ...]


class IncrementalVerification:
    """The report's verifications of one process. Thread-safe: one run at a time, so concurrent
    reports wait for the one running and then resume from what it verified."""

    def __init__(self, audit: AuditService) -> None:
        self.audit = audit
        self._kept: VerifiedPoint | None = None
        self._lock = threading.Lock()
        self._log = get_logger("bhxh.audit")

    @property
    def kept(self) -> VerifiedPoint | None:
        return self._kept

    def report(self) -> LiveReport:
        """Verify from the kept checkpoint (the whole log when none is kept yet)."""
        with self._lock:
            result, point = self._run(self._kept)
            if point is not None:
                self._kept = point
            return result

    def full(self, *, actor: str) -> LiveReport:
        """The admin's full re-verification: every entry from entry 0 again, logged as
        ``audit.verification.full`` by ``actor`` with its verdict. What it verified replaces the
        kept state (nothing is kept when it found a fault: reports then verify in full until a
        run finds none)."""
        with self._lock:
            result, point = self._run(None)
            self._kept = point
        record_full_verification(self.audit, result.report, actor=actor)
        return result

    # ---------------------------------------------------------------- one run

    def _run(self, kept: VerifiedPoint | None) -> tuple[LiveReport, VerifiedPoint | None]:
        audit = self.audit
        keys_text = tuple(audit.verifier_keys())
        keys = [VerifierKey.from_text(k) for k in keys_text]
        published = audit.published_notes()
        with _snapshot(audit) as conn:
            size = store.tree_size(conn)
            erased = store.erased_seqs(conn)
            checkpoints = _checkpoints(conn, published)
            resume = kept if kept is not None and _resumable(kept, keys_text, size, erased, checkpoints) else None
            if kept is not None and resume is None:
                self._log.info("audit_verification_full_pass", reason="kept checkpoint not resumable", kept=kept.size)
            elif kept is None:
                self._log.info("audit_verification_full_pass", reason="no checkpoint verified yet")
            # Without a state to resume from, a kept checkpoint still binds the log (``--since``).
            trusted = SignedCheckpoint.from_text(kept.note) if kept is not None and resume is None else None
            verifier = FastChainVerifier(
                keys,
                origin=audit.origin,
                trusted_checkpoint=trusted,
                erased=erased,
                pii_expected=True,
                resume=resume.state if resume is not None else None,
            )
            for note in checkpoints.stored:
                verifier.add_checkpoint_text(note)
            for note in checkpoints.published:
                verifier.add_checkpoint_text(note, source="published")
            start = resume.size if resume is not None else 0
            # The next point to keep: the largest checkpoint size the log now holds.
            target = max((cp.size for cp in checkpoints.parsed if start < cp.size <= size), default=None)
            captured: ResumeState | None = None
            for row, stored_pii in store.iter_rows(conn, with_pii=True, start=start):
                personal = (stored_pii.salt, stored_pii.personal()) if stored_pii else None
                verifier.add_stored(row, personal)  # type: ignore[arg-type]
                if row[0] + 1 == target:
                    captured = verifier.resume_state()
            report = verifier.finish()
        if resume is not None:
            report = self._check_served_proof(report, resume)
        context = replace(
            audit.report_context(trusted_checkpoint=trusted),
            verification=VerificationMode.INCREMENTAL if resume is not None else VerificationMode.FULL,
            resumed_from=resume.size if resume is not None else None,
            signed_at=checkpoints.signed_at,
        )
        point = self._point(report, captured, keys_text, erased)
        return LiveReport(report, context), point

    def _check_served_proof(self, report: VerificationReport, resume: VerifiedPoint) -> VerificationReport:
        """The log's RFC 9162 consistency proof from the kept size to the newest checkpoint this
        run verified must lead from the kept root to that checkpoint's signed root."""
        if report.verdict is Verdict.FAILED or report.anchor_note is None or report.verified_tree_size <= resume.size:
            return report
        newest = SignedCheckpoint.from_text(report.anchor_note)
        try:
            proof = self.audit.consistency_proof(resume.size, newest.size)
            verify_consistency(resume.size, newest.size, resume.state.root, newest.root_hash, proof.path)
        except AuditError as exc:  # InvalidProof, or a size the log no longer holds
            fault = FaultReport(
                Fault.INCONSISTENT_HISTORY,
                None,
                f"the log's consistency proof from the verified checkpoint at size {resume.size} to the "
                f"checkpoint at size {newest.size} does not hold: {exc}",
                newest.size,
            )
            kept = tuple(f for f in report.faults if f.kind is not Fault.UNANCHORED)
            unanchored = tuple(f for f in report.faults if f.kind is Fault.UNANCHORED)
            return replace(report, faults=(*kept, fault, *unanchored))
        return report

    def _point(
        self, report: VerificationReport, captured: ResumeState | None, keys: tuple[str, ...], erased: set[int]
    ) -> VerifiedPoint | None:
        """The point to keep after a run: its state at the checkpoint that anchors the report,
        only when the run found no fault."""
        if report.verdict is Verdict.FAILED or captured is None or report.anchor_note is None:
            return None
        if report.verified_tree_size != captured.size:
            return None
        return VerifiedPoint(
            state=captured,
            note=report.anchor_note,
            keys=keys,
            erased=frozenset(seq for seq in erased if seq < captured.size),
            verified_at=self.audit.clock(),
        )


def record_full_verification(audit: AuditService, report: VerificationReport, *, actor: str) -> int:
    """Log that ``actor`` ran a full re-verification, and what it found; returns the entry's seq.
    The entry itself comes after the tree it reports on: the next checkpoint anchors it."""
    return audit.record(
        actor,
        FULL_VERIFICATION_ACTION,
        audit.origin,
        {
            "verdict": report.verdict.value,
            "fault": report.fault.value if report.fault else None,
            "entries_checked": report.entries_checked,
            "verified_tree_size": report.verified_tree_size,
            "root_hash": report.root_hash,
        },
    )


def _resumable(
    kept: VerifiedPoint, keys: tuple[str, ...], size: int, erased: set[int], checkpoints: _Checkpoints
) -> bool:
    """Whether resuming from ``kept`` gives the verdict a full run would: same trusted keys, the
    log still as long, no erasure below the kept size since, every checkpoint of a size already
    passed judged before (its root kept), and the kept checkpoint still in the log."""
    if keys != kept.keys or size < kept.size:
        return False
    if frozenset(seq for seq in erased if seq < kept.size) != kept.erased:
        return False
    roots = dict(kept.state.roots)
    if any(cp.size not in roots for cp in checkpoints.parsed if cp.size <= kept.size):
        return False
    return any(cp.size == kept.size and cp.root_hash == kept.state.root for cp in checkpoints.parsed)


def _checkpoints(conn: Connection, published: Sequence[str]) -> _Checkpoints:
    rows = list(store.iter_checkpoints(conn))
    stored = cosigned_notes(conn, [(cp.id, cp.note) for cp in rows])
    parsed = []
    for note in (*stored, *published):
        try:
            parsed.append(SignedCheckpoint.from_text(note))
        except AuditError:
            continue  # the verifier reports it (forged_checkpoint)
    return _Checkpoints(stored, list(published), parsed, tuple((cp.tree_size, cp.signed_at) for cp in rows))


@contextmanager
def _snapshot(audit: AuditService) -> Iterator[Connection]:
    """One read-only snapshot: every read of a run sees the same log."""
    with audit.engine.connect() as conn:
        options: dict[str, Any] = dict(READ_ONLY)
        if conn.dialect.name == "postgresql":
            options["isolation_level"] = "REPEATABLE READ"
        yield conn.execution_options(**options)
