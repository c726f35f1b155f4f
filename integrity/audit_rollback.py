"""A log put back behind its witnesses: no append until an administrator acknowledges the loss.

A witness keeps the latest checkpoint it cosigned (C2SP tlog-witness). A log restored to an
older state (``restore``, ``pg_restore``, a snapshot) holds fewer entries than its witnesses
counted, or another history at a size they cosigned. The witnessing round finds it (the
witness's 409 names its size; a 422, or a 409 naming our own size, says it holds another root)
and records a finding (audit.rollback_store). From then on every append is refused, nothing is
written, so that nothing more happens on a log whose loss nobody has looked at.

``audit acknowledge-rollback`` writes ONE entry, ``audit.rollback.acknowledged``, naming the
lost range, the witnesses and their sizes, the operator and the reason, and appends work again.
The witnesses still hold the lost history: each refuses this log's checkpoints until its
operator resets its record of the log (docs/witness.md), which the witnessing round reports
(``Outcome.DIVERGED``) instead of finding the same loss again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine

from audit import rollback_store, store
from audit.erasure import valid_reason
from audit.errors import EntryNotFound, InvalidEntry, LogRolledBack, NothingToAcknowledge
from audit.rollback_store import Rollback, RollbackEvidence
from audit.store import PendingEvent
from integrity.backup import LostRange
from integrity.clock import Clock

ACKNOWLEDGED_ACTION = "audit.rollback.acknowledged"
ACKNOWLEDGE_COMMAND = "bhxh-integrity audit acknowledge-rollback"


@dataclass(frozen=True)
class Acknowledgement:
    seq: int  # the audit.rollback.acknowledged entry
    log_size: int  # the log's size before it
    lost: LostRange  # entries the witnesses counted that the log does not hold (as it holds them)
    findings: tuple[Rollback, ...]


def describe(finding: Rollback) -> str:
    when = finding.detected_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if finding.evidence is RollbackEvidence.AHEAD:
        seen = f"witness {finding.witness} cosigned {finding.witness_size} entries and the log holds {finding.log_size}"
    else:
        seen = f"witness {finding.witness} cosigned another tree of size {finding.witness_size} than this log's"
    return f"the audit log was rolled back ({seen}; found {when})"


def refuse_if_rolled_back(conn: Connection) -> None:
    """The writer's gate, first in every appending transaction: LogRolledBack while a finding
    is not acknowledged, so that the transaction writes nothing."""
    finding = rollback_store.first_open(conn) if rollback_store.any_open(conn) else None
    if finding is not None:
        raise LogRolledBack(
            f"{describe(finding)}: appends are refused until an administrator runs `{ACKNOWLEDGE_COMMAND}`"
        )


def rolled_back(engine: Engine) -> list[Rollback]:
    """The findings not acknowledged yet (empty: the log takes appends)."""
    with engine.connect() as conn:
        return rollback_store.open_rollbacks(conn)


def found(
    conn: Connection, witness: str, witness_size: int, evidence: RollbackEvidence, at: datetime
) -> tuple[Rollback, bool] | None:
    """Record what ``witness`` showed: (the open finding, whether it is new); None when it is
    the loss an administrator already acknowledged for that witness."""
    if acknowledged_loss(conn, witness) == witness_size:
        return None
    new = rollback_store.record(conn, witness, witness_size, store.tree_size(conn), evidence, at)
    finding = next(f for f in rollback_store.open_rollbacks(conn) if f.witness == witness)
    return finding, new


def acknowledged_loss(conn: Connection, witness: str) -> int | None:
    """The size of the lost history ``witness`` still holds, once acknowledged: None when there
    is none, or when the witness has cosigned this log past the acknowledgement since (its
    operator reset its record)."""
    last = rollback_store.last_acknowledged(conn, witness)
    if last is None or last.acknowledged_seq is None:
        return None
    if rollback_store.cosigned_beyond(conn, witness, last.acknowledged_seq):
        return None
    # Only an acknowledgement the log itself holds counts: a row written behind the service's
    # back, without the entry, leaves the loss unacknowledged.
    if not _acknowledges(conn, last):
        return None
    return last.witness_size


def _acknowledges(conn: Connection, finding: Rollback) -> bool:
    assert finding.acknowledged_seq is not None
    try:
        entry = store.get_entry(conn, finding.acknowledged_seq)
    except EntryNotFound:
        return False
    named = entry.data.get("findings") if entry.action == ACKNOWLEDGED_ACTION else None
    return isinstance(named, list) and any(
        isinstance(item, dict)
        and item.get("witness") == finding.witness
        and item.get("witness_size") == finding.witness_size
        for item in named
    )


def acknowledge(engine: Engine, clock: Clock, origin: str, reason: str, *, actor: str) -> Acknowledgement:
    """Write the ``audit.rollback.acknowledged`` entry (as ``actor``, the operator) and mark
    every open finding acknowledged by it, in one transaction; appends work again after it.
    NothingToAcknowledge (nothing written) when the log is not rolled back."""
    reason = reason.strip()
    if not valid_reason(reason):
        raise InvalidEntry("an acknowledgement needs a reason (at most 500 characters)")
    with engine.begin() as conn:
        store.lock_appends(conn)
        findings = rollback_store.open_rollbacks(conn)
        if not findings:
            raise NothingToAcknowledge("the audit log is not rolled back: there is nothing to acknowledge")
        size = store.tree_size(conn)
        lost = _lost(conn, findings)
        data = {
            "reason": reason,
            "log_size": size,
            "lost_first": lost.first,
            "lost_last": lost.last,
            "findings": [
                {
                    "witness": f.witness,
                    "witness_size": f.witness_size,
                    "log_size": f.log_size,
                    "evidence": f.evidence.value,
                    "detected_at": f.detected_at.isoformat(),
                }
                for f in findings
            ],
        }
        # Straight to the store: the writer's gate refuses every append until this one is in.
        seq = store.append(conn, [PendingEvent.of(actor, ACKNOWLEDGED_ACTION, origin, data)], clock)[0].seq
        rollback_store.acknowledge(conn, [f.id for f in findings], seq, clock())
    return Acknowledgement(seq, size, lost, tuple(findings))


def _lost(conn: Connection, findings: Sequence[Rollback]) -> LostRange:
    """The entries of the witnesses' history the log does not hold as they do: past the log's
    size for a larger tree; for another root at a size, everything past the largest tree that
    witness cosigned of this log (up to there both histories are the same)."""
    firsts, lasts = [], []
    for finding in findings:
        if finding.evidence is RollbackEvidence.AHEAD:
            firsts.append(finding.log_size)
        else:
            firsts.append(min(rollback_store.cosigned_size(conn, finding.witness), finding.witness_size - 1))
        lasts.append(finding.witness_size - 1)
    return LostRange(max(0, min(firsts)), max(lasts))
