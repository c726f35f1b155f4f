"""The report's incremental verification on both back ends: after appends it reaches the report
a full verification of the same log gives; what it cannot see (a change to an entry already
verified) the admin's full re-verification finds and logs; a history rewritten with its tree
shows at the next checkpoint; a cut tail and an altered stored tree show without waiting."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text

from audit.entry import hash_body
from audit.merkle import CompactRange
from audit.verify import Fault, Verdict
from integrity.audit_service import AuditService
from integrity.clock import FrozenClock
from integrity.incremental_verification import FULL_VERIFICATION_ACTION, IncrementalVerification
from integrity.reports import VerificationMode
from tests.integrity.test_audit_service import make_service
from tests.integrity.test_audit_tamper import _unlock

KEY = Ed25519PrivateKey.generate()


def _instance(engine: Engine, tmp_path: Path) -> AuditService:
    # Checkpoints only when the test signs one: a background one would change what is compared.
    return make_service(engine, FrozenClock(), tmp_path, checkpoint_key=KEY, checkpoint_every=10_000)


def _append(log: AuditService, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        personal = {"name": f"Trần Thị {i}"} if i % 3 == 1 else None
        log.record("user:an", ("receipt.issued", "signature.created")[i % 2], f"R-{i}", {"n": i}, personal)


@pytest.fixture
def log(engine: Engine, tmp_path: Path) -> Iterator[AuditService]:
    svc = _instance(engine, tmp_path)
    _append(svc, 10)
    svc.checkpoint_now()
    yield svc
    svc.close()


def _without_checkpoints(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key != "checkpoints"}


def test_incremental_reports_equal_full_verifications_as_the_log_grows(log: AuditService) -> None:
    verifications = IncrementalVerification(log)
    first = verifications.report()
    assert first.mode is VerificationMode.FULL and first.context.resumed_from is None
    assert first.report.ok and first.report.to_dict() == log.verify().to_dict()
    assert verifications.kept is not None and verifications.kept.size == log.size() == 10
    appended = 10
    # (entries appended, checkpoint signed after them)
    for count, sign in [(3, True), (0, False), (5, False), (2, True), (1, True), (7, False), (0, True)]:
        before = verifications.kept.size
        _append(log, count, appended)
        appended += count
        if sign:
            log.checkpoint_now()
        result = verifications.report()
        assert result.mode is VerificationMode.INCREMENTAL and result.context.resumed_from == before
        full = log.verify()
        assert result.report.to_dict() == full.to_dict()
        signed = log.latest_checkpoint()
        assert signed is not None
        anchored = signed.tree_size == log.size()
        assert result.report.verdict is (Verdict.VERIFIED if anchored else Verdict.NOT_VERIFIED)
        assert verifications.kept.size == signed.tree_size
    # An erasure of an entry already verified changes what a full run counts: the next run is a
    # full one that also holds the log to the kept checkpoint, and counts the same as a full run.
    kept = verifications.kept.size
    log.erase_pii(1, "data subject request", approved_by="user:admin")
    log.checkpoint_now()
    result = verifications.report()
    full = log.verify()
    assert result.mode is VerificationMode.FULL and result.context.trusted_checkpoint_size == kept
    assert result.report.verdict is full.verdict is Verdict.VERIFIED
    assert _without_checkpoints(result.report.to_dict()) == _without_checkpoints(full.to_dict())
    assert result.report.pii_erased == 1
    assert verifications.report().mode is VerificationMode.INCREMENTAL


def test_a_changed_verified_entry_is_found_by_the_full_run_which_is_logged(log: AuditService, engine: Engine) -> None:
    verifications = IncrementalVerification(log)
    assert verifications.report().report.ok
    _unlock(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET subject = 'forged' WHERE seq = 3"))
    # Not read again incrementally: the stored hashes still give the verified root.
    unseen = verifications.report()
    assert unseen.mode is VerificationMode.INCREMENTAL and unseen.report.verdict is Verdict.VERIFIED
    size = log.size()
    full = verifications.full(actor="user:hoa")
    assert full.mode is VerificationMode.FULL and full.report.verdict is Verdict.FAILED
    assert full.report.fault is Fault.CHANGED and full.report.first_bad_seq == 3
    logged = log.entry(size)
    assert (logged.actor, logged.action, logged.subject) == ("user:hoa", FULL_VERIFICATION_ACTION, log.origin)
    assert logged.data["verdict"] == "failed" and logged.data["fault"] == "changed"
    assert logged.data["entries_checked"] == size
    # Nothing verified is kept any more: every report verifies in full and finds it again.
    assert verifications.kept is None
    again = verifications.report()
    assert again.mode is VerificationMode.FULL and again.report.first_bad_seq == 3
    assert verifications.kept is None


def _rewrite_entry_and_rebuild_tree(engine: Engine, seq: int) -> None:
    """An insider's rewrite of one entry: new content, its hash recomputed, and the stored tree
    rebuilt over the new hashes, so that the service signs and proves the rewritten history."""
    _unlock(engine)
    with engine.begin() as conn:
        row = conn.execute(text("SELECT * FROM audit_entries WHERE seq = :s"), {"s": seq}).mappings().one()
        body = {k: row[k] for k in ("seq", "ts", "actor", "action", "subject", "pii", "prev")}
        body["data"] = {"n": -1}
        conn.execute(
            text("UPDATE audit_entries SET data = :d, hash = :h WHERE seq = :s"),
            {"d": '{"n":-1}', "h": hash_body(body), "s": seq},
        )
        hashes = [r[0] for r in conn.execute(text("SELECT hash FROM audit_entries ORDER BY seq"))]
        conn.execute(text("DELETE FROM audit_tree_nodes"))
        tree = CompactRange()
        for digest in hashes:
            for sub, node in tree.append(bytes.fromhex(digest)):
                conn.execute(
                    text("INSERT INTO audit_tree_nodes (level, idx, hash) VALUES (:l, :i, :h)"),
                    {"l": sub.level, "i": sub.index, "h": node},
                )


def test_a_history_rewritten_with_its_tree_shows_at_the_next_checkpoint(
    log: AuditService, engine: Engine, tmp_path: Path
) -> None:
    verifications = IncrementalVerification(log)
    assert verifications.report().report.ok
    kept = verifications.kept
    assert kept is not None
    _rewrite_entry_and_rebuild_tree(engine, 3)
    assert verifications.report().report.verdict is Verdict.VERIFIED  # nothing new to check yet
    assert log.verify().verdict is Verdict.FAILED
    # Another instance goes on appending, from the stored tree, and signs the next checkpoint.
    other = _instance(engine, tmp_path)
    try:
        _append(other, 3, 100)
        signed = other.checkpoint_now()
    finally:
        other.close()
    result = verifications.report()
    assert result.mode is VerificationMode.INCREMENTAL and result.report.verdict is Verdict.FAILED
    fault = result.report.faults[0]
    assert fault.kind is Fault.INCONSISTENT_HISTORY and fault.tree_size == signed.tree_size
    assert log.verify().verdict is Verdict.FAILED
    # A failed run keeps the point verified before: the next report finds the fault again.
    assert verifications.kept == kept
    assert verifications.report().report.faults[0] == fault


def test_a_cut_tail_shows_even_with_its_checkpoints_and_published_copies_gone(
    log: AuditService, engine: Engine, tmp_path: Path
) -> None:
    verifications = IncrementalVerification(log)
    assert verifications.report().report.ok
    _unlock(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_pii WHERE seq >= 6"))
        conn.execute(text("DELETE FROM audit_entries WHERE seq >= 6"))
        conn.execute(text("DELETE FROM audit_checkpoints WHERE tree_size > 6"))
    shutil.rmtree(tmp_path / "published")
    with engine.begin() as conn:  # the insider signs nothing: the log's key is not theirs
        assert conn.execute(text("SELECT count(*) FROM audit_checkpoints")).scalar() == 0
    result = verifications.report()
    assert result.mode is VerificationMode.FULL and result.context.trusted_checkpoint_size == 10
    assert result.report.verdict is Verdict.FAILED and result.report.fault is Fault.CUT_TAIL
    # Without the kept checkpoint a full run finds no fault, only entries it cannot anchor.
    assert log.verify().verdict is Verdict.NOT_VERIFIED


def test_a_stored_tree_altered_after_its_checkpoint_fails_the_served_consistency_proof(
    log: AuditService, engine: Engine
) -> None:
    verifications = IncrementalVerification(log)
    assert verifications.report().report.ok
    _append(log, 3, 100)
    log.checkpoint_now()
    _unlock(engine)
    with engine.begin() as conn:  # the node over entries 0..7, which proofs from size 10 go through
        conn.execute(text("UPDATE audit_tree_nodes SET hash = :h WHERE level = 3 AND idx = 0"), {"h": bytes(32)})
    result = verifications.report()
    assert result.mode is VerificationMode.INCREMENTAL and result.report.verdict is Verdict.FAILED
    fault = result.report.faults[0]
    assert fault.kind is Fault.INCONSISTENT_HISTORY and "consistency proof" in fault.detail
    # A full run recomputes every node from the entries and never reads the stored ones.
    assert log.verify().verdict is Verdict.VERIFIED
