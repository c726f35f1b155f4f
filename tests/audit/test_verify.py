"""The offline verifier on exports: each fault kind named with its first bad seq (tamper
matrix), never a false alarm on an untouched log (property), constant-memory streaming, and
the anchoring rule: only entries under a trusted signed checkpoint count as verified."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.checkpoint import NoteSigner, SignedCheckpoint
from audit.entry import GENESIS_PREV
from audit.errors import MalformedExport, MalformedVerifierKey
from audit.export import export_lines, verify_export
from audit.verify import Fault, Verdict, VerificationReport
from tests.audit.logbuilder import KEY_NAME, Log, _Pii, build_log, forged_entry, rehash, rewrite_from, write_export

SIZE = 20  # checkpoints at 4, 8, 12, 16, 20


@pytest.fixture(scope="module")
def log() -> Log:
    return build_log(SIZE)


def _verify(
    tmp_path: Path,
    log: Log,
    objs: list[dict[str, Any]],
    notes: list[str] | None = None,
    trusted: SignedCheckpoint | None = None,
) -> VerificationReport:
    notes = [c.to_text() for c in log.checkpoints] if notes is None else notes
    path = write_export(tmp_path / "export.ndjson", objs, notes)
    return verify_export(path, log.vkey, trusted_checkpoint=trusted)


def test_untouched_export_verifies(tmp_path: Path, log: Log) -> None:
    report = _verify(tmp_path, log, log.objects())
    assert report.ok and report.fault is None and report.first_bad_seq is None
    assert report.entries_checked == SIZE and report.verified_tree_size == SIZE and report.uncovered_entries == 0
    assert [c.tree_size for c in report.checkpoints] == [4, 8, 12, 16, 20]
    assert all(c.matches and c.signature_valid and c.signers == (KEY_NAME,) for c in report.checkpoints)
    assert report.pii_unavailable == 7 and report.pii_checked == 0


def test_export_written_by_the_exporter_verifies_with_personal_data(tmp_path: Path, log: Log) -> None:
    path = tmp_path / "export.ndjson"
    entries = [
        (
            e,
            _Pii(log.personal[e.seq].salt, json.loads(log.personal[e.seq].canonical))
            if e.seq in log.personal
            else None,
        )
        for e in log.entries
    ]
    with path.open("wb") as out:
        for line in export_lines(entries, [c.to_text() for c in log.checkpoints], include_pii=True):
            out.write(line)
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[4]) == {"checkpoint": log.checkpoints[0].to_text()}  # right after entry 3
    report = verify_export(path, log.vkey)
    assert report.ok and report.pii_checked == 7


def _change(objs: list, k: int) -> None:
    objs[k]["subject"] = "altered"


def _change_rehash(objs: list, k: int) -> None:
    objs[k]["data"] = {"n": 999}
    rehash(objs[k])


def _change_seq_field(objs: list, k: int) -> None:
    objs[k]["seq"] = 70


def _change_prev_field(objs: list, k: int) -> None:
    objs[k]["prev"] = "f" * 64


def _delete(objs: list, k: int) -> None:
    del objs[k]


def _delete_two(objs: list, k: int) -> None:
    del objs[k : k + 2]


def _insert(objs: list, k: int) -> None:
    objs.insert(k, forged_entry(k, objs[k - 1]["hash"] if k else GENESIS_PREV))


def _duplicate(objs: list, k: int) -> None:
    objs.insert(k, dict(objs[3]))


def _swap(objs: list, k: int) -> None:
    objs[k], objs[k + 1] = objs[k + 1], objs[k]


def _move_later(objs: list, k: int) -> None:
    objs.insert(k + 7, objs.pop(k))


def _garbage(objs: list, k: int) -> None:
    objs[k] = {"not": "an entry"}


MATRIX: list[tuple[str, Callable[[list, int], None], int, Fault, int]] = [
    ("changed", _change, 7, Fault.CHANGED, 7),
    ("changed-first", _change, 0, Fault.CHANGED, 0),
    ("changed-and-rehashed", _change_rehash, 7, Fault.CHANGED, 7),
    ("seq-field-altered", _change_seq_field, 7, Fault.CHANGED, 7),
    ("prev-field-altered", _change_prev_field, 7, Fault.CHANGED, 7),
    ("not-an-entry", _garbage, 7, Fault.CHANGED, 7),
    ("deleted", _delete, 7, Fault.DELETED, 7),
    ("deleted-first", _delete, 0, Fault.DELETED, 0),
    ("deleted-two", _delete_two, 7, Fault.DELETED, 7),
    ("inserted", _insert, 7, Fault.INSERTED, 7),
    ("inserted-first", _insert, 0, Fault.INSERTED, 0),
    ("duplicated", _duplicate, 10, Fault.INSERTED, 10),
    ("reordered", _swap, 7, Fault.REORDERED, 7),
    ("reordered-last-two", _swap, SIZE - 2, Fault.REORDERED, SIZE - 2),
    ("moved-later", _move_later, 5, Fault.REORDERED, 5),
]


@pytest.mark.parametrize(("tamper", "k", "fault", "seq"), [m[1:] for m in MATRIX], ids=[m[0] for m in MATRIX])
def test_tampered_export_names_fault_and_first_bad_seq(
    tmp_path: Path, log: Log, tamper: Callable[[list, int], None], k: int, fault: Fault, seq: int
) -> None:
    objs = log.objects()
    tamper(objs, k)
    report = _verify(tmp_path, log, objs)
    assert not report.ok
    assert (report.fault, report.first_bad_seq) == (fault, seq), report.faults


def test_unparsable_line_is_a_changed_entry(tmp_path: Path, log: Log) -> None:
    path = write_export(tmp_path / "e.ndjson", log.objects(), [c.to_text() for c in log.checkpoints])
    lines = path.read_bytes().splitlines(keepends=True)
    lines[9] = b"{not json\n"
    path.write_bytes(b"".join(lines))
    report = verify_export(path, log.vkey)
    assert (report.fault, report.first_bad_seq) == (Fault.CHANGED, 9)


@pytest.mark.parametrize("keep", [17, 16, 1])
def test_cut_tail_below_signed_checkpoint_is_reported(tmp_path: Path, log: Log, keep: int) -> None:
    report = _verify(tmp_path, log, log.objects()[:keep])
    assert (report.fault, report.first_bad_seq) == (Fault.CUT_TAIL, keep)
    assert report.faults[0].tree_size == SIZE


def test_cut_tail_with_checkpoints_stripped_is_caught_by_the_auditors_checkpoint(tmp_path: Path, log: Log) -> None:
    notes = [c.to_text() for c in log.checkpoints if c.size <= 12]
    report = _verify(tmp_path, log, log.objects()[:14], notes, trusted=log.checkpoints[-1])
    assert (report.fault, report.first_bad_seq) == (Fault.CUT_TAIL, 14)


def test_checkpoint_signed_by_another_key_is_forged(tmp_path: Path, log: Log) -> None:
    mallory = NoteSigner(KEY_NAME, Ed25519PrivateKey.generate())
    notes = [c.to_text() for c in log.checkpoints] + [log.checkpoint_at(SIZE, mallory).to_text()]
    report = _verify(tmp_path, log, log.objects(), notes)
    assert (report.fault, report.first_bad_seq) == (Fault.FORGED_CHECKPOINT, None)
    assert report.faults[0].tree_size == SIZE
    assert [c.signature_valid for c in report.checkpoints].count(False) == 1


def test_checkpoint_with_edited_size_is_forged(tmp_path: Path, log: Log) -> None:
    notes = [c.to_text() for c in log.checkpoints]
    notes[1] = notes[1].replace("\n8\n", "\n9\n")
    report = _verify(tmp_path, log, log.objects(), notes)
    assert (report.fault, report.first_bad_seq) == (Fault.FORGED_CHECKPOINT, None)


def test_malformed_checkpoint_line_is_forged(tmp_path: Path, log: Log) -> None:
    notes = [c.to_text() for c in log.checkpoints] + ["not a signed note"]
    report = _verify(tmp_path, log, log.objects(), notes)
    assert report.fault == Fault.FORGED_CHECKPOINT


def test_checkpoint_of_another_log_is_refused(tmp_path: Path, log: Log) -> None:
    from audit.checkpoint import Checkpoint

    other = SignedCheckpoint.sign(
        Checkpoint("bhxh-integrity/audit/other", 4, log.checkpoints[0].root_hash), [log.signer]
    )
    path = write_export(tmp_path / "e.ndjson", log.objects(), [other.to_text()])
    report = verify_export(path, log.vkey, origin="bhxh-integrity/audit/test-log")
    assert report.fault == Fault.FORGED_CHECKPOINT


def test_rewritten_history_contradicts_the_logs_own_signed_checkpoints(tmp_path: Path, log: Log) -> None:
    objs = log.objects()
    rewrite_from(objs, 9)
    report = _verify(tmp_path, log, objs)
    assert (report.fault, report.first_bad_seq) == (Fault.INCONSISTENT_HISTORY, 8)
    assert report.faults[0].tree_size == 12


def test_rewritten_history_contradicts_the_auditors_kept_checkpoint(tmp_path: Path, log: Log) -> None:
    objs = log.objects()
    rewrite_from(objs, 9)
    # The insider strips the checkpoints that would betray the rewrite and signs nothing new.
    notes = [c.to_text() for c in log.checkpoints if c.size <= 8]
    # The rewritten entries hash and chain correctly, but no trusted signature covers them.
    stripped = _verify(tmp_path, log, objs, notes)
    assert not stripped.ok and stripped.verdict is Verdict.NOT_VERIFIED
    assert [(f.kind, f.seq) for f in stripped.faults] == [(Fault.UNANCHORED, 8)]
    assert stripped.anchored_entries == 8 and stripped.uncovered_entries == SIZE - 8
    report = _verify(tmp_path, log, objs, notes, trusted=log.checkpoints[3])
    assert (report.fault, report.first_bad_seq) == (Fault.INCONSISTENT_HISTORY, 8)
    assert [c.source for c in report.checkpoints if c.matches is False] == ["trusted"]


def test_personal_data_not_matching_its_commitment_is_reported(tmp_path: Path, log: Log) -> None:
    objs = log.objects(include_pii=True)
    objs[4]["pii_data"]["name"] = "Someone Else"
    report = _verify(tmp_path, log, objs)
    assert (report.fault, report.first_bad_seq) == (Fault.PII_MISMATCH, 4)


def test_missing_personal_data_in_an_export_is_not_a_fault(tmp_path: Path, log: Log) -> None:
    report = _verify(tmp_path, log, log.objects())
    assert report.ok and report.pii_unavailable == 7


def test_wrong_public_key_makes_every_checkpoint_unverifiable(tmp_path: Path, log: Log) -> None:
    path = write_export(tmp_path / "e.ndjson", log.objects(), [c.to_text() for c in log.checkpoints])
    other = NoteSigner(KEY_NAME, Ed25519PrivateKey.generate()).verifier.to_text()
    report = verify_export(path, other)
    assert report.fault == Fault.FORGED_CHECKPOINT and report.verified_tree_size == 0


def test_pem_public_key_is_accepted(tmp_path: Path, log: Log) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pem = log.signer.private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    path = write_export(tmp_path / "e.ndjson", log.objects(), [c.to_text() for c in log.checkpoints])
    assert verify_export(path, pem).ok


def test_unreadable_export_and_key_are_refused(tmp_path: Path, log: Log) -> None:
    with pytest.raises(MalformedExport):
        verify_export(tmp_path / "missing.ndjson", log.vkey)
    path = write_export(tmp_path / "e.ndjson", log.objects(), [])
    with pytest.raises(MalformedVerifierKey):
        verify_export(path, "# only a comment\n")


def test_report_to_dict_carries_the_verdict_and_the_chart(tmp_path: Path, log: Log) -> None:
    objs = log.objects()
    del objs[5]
    data = _verify(tmp_path, log, objs).to_dict()
    assert data["ok"] is False and data["fault"] == "deleted" and data["first_bad_seq"] == 5
    assert {"day": "2025-11-20", "action": "receipt.issued", "count": 7} in data["actions_per_day"]
    json.dumps(data)


TAMPERS = ["change", "change_rehash", "delete", "insert", "swap", "cut"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 24), kind=st.sampled_from(TAMPERS), data=st.data())
def test_any_single_tampering_is_detected_and_untouched_logs_pass(
    tmp_path: Path, size: int, kind: str, data: st.DataObject
) -> None:
    log = build_log(size, every=5)
    log.checkpoints.append(log.checkpoint_at(size))  # the latest entries are covered too
    notes = [c.to_text() for c in log.checkpoints]
    assert _verify(tmp_path, log, log.objects(), notes).ok
    objs = log.objects()
    last = size - 1
    if kind in ("swap",) and size < 2:
        kind = "change"
    k = data.draw(st.integers(0, last - 1 if kind == "swap" else last))
    expected: tuple[Fault, int | None]
    if kind == "change":
        _change(objs, k)
        expected = (Fault.CHANGED, k)
    elif kind == "change_rehash":
        _change_rehash(objs, k)
        expected = (Fault.CHANGED, k) if k < last else (Fault.INCONSISTENT_HISTORY, None)
    elif kind == "delete":
        _delete(objs, k)
        expected = (Fault.DELETED, k) if k < last else (Fault.CUT_TAIL, k)
    elif kind == "insert":
        _insert(objs, k)
        expected = (Fault.INSERTED, k)
    elif kind == "swap":
        _swap(objs, k)
        expected = (Fault.REORDERED, k)
    else:
        del objs[k:]
        expected = (Fault.CUT_TAIL, k)
    report = _verify(tmp_path, log, objs, notes)
    assert not report.ok
    assert report.fault == expected[0], report.faults
    if expected[1] is None:
        assert report.first_bad_seq is not None and report.first_bad_seq <= k
    else:
        assert report.first_bad_seq == expected[1], report.faults


def test_rewrite_before_a_later_break_is_still_reported_first(tmp_path: Path, log: Log) -> None:
    objs = log.objects()
    rewrite_from(objs, 5)
    del objs[14]
    report = _verify(tmp_path, log, objs)
    assert (report.fault, report.first_bad_seq) == (Fault.INCONSISTENT_HISTORY, 4)
    assert [f.kind for f in report.faults] == [Fault.INCONSISTENT_HISTORY, Fault.DELETED, Fault.UNANCHORED]
    assert report.faults[-1].seq == 4 and report.verdict is Verdict.FAILED


def test_checkpoints_before_a_break_are_still_judged(tmp_path: Path, log: Log) -> None:
    objs = log.objects()
    del objs[17]
    report = _verify(tmp_path, log, objs)
    assert (report.fault, report.first_bad_seq) == (Fault.DELETED, 17)
    assert [c.matches for c in report.checkpoints] == [True, True, True, True, None]
    assert report.verified_tree_size == 16


def _custom_log(tmp_path: Path, data: dict, subject: str) -> tuple[Log, list[dict[str, Any]]]:
    from audit.entry import build_entry

    log = build_log(6, every=3)
    entries = list(log.entries)
    prev = entries[1].hash
    tricky = build_entry(
        seq=2,
        ts=entries[2].ts,
        actor="peer:portal",
        action="exchange.accepted",
        subject=subject,
        data=data,
        pii=None,
        prev=prev,
    )
    log.entries[2] = tricky
    prev = tricky.hash
    for seq in range(3, 6):
        e = entries[seq]
        log.entries[seq] = build_entry(
            seq=seq, ts=e.ts, actor=e.actor, action=e.action, subject=e.subject, data=e.data, pii=e.pii, prev=prev
        )
        prev = log.entries[seq].hash
    log.checkpoints = [log.checkpoint_at(3), log.checkpoint_at(6)]
    return log, log.objects()


TRICKY_DATA = {
    "hash": "a" * 64,
    "pii": None,
    "prev": "b" * 64,
    "seq": 9,
    "subject": 'x","ts":"',
    "ts": "2025-01-01T00:00:00.000000Z",
    "nested": {
        "k": ',"hash":"'
        + "c" * 64
        + '","pii":null,"prev":"'
        + "d" * 64
        + '","seq":1,"subject":"s","ts":"2025-01-01T00:00:00.000000Z"}'
    },
}


def test_entries_whose_data_mimics_the_line_layout_verify(tmp_path: Path) -> None:
    log, objs = _custom_log(tmp_path, TRICKY_DATA, 'quote " back\\slash ,"hash":"')
    report = _verify(tmp_path, log, objs)
    assert report.ok and report.entries_checked == 6 and report.verified_tree_size == 6
    assert ("2025-11-22", "exchange.accepted", 1) in report.actions_per_day


def test_hash_member_moved_into_data_is_detected(tmp_path: Path) -> None:
    log, objs = _custom_log(tmp_path, {"k": 1}, "s")
    claimed = objs[2].pop("hash")
    objs[2]["data"] = {"k": 1, "hash": claimed}
    report = _verify(tmp_path, log, objs)
    assert (report.fault, report.first_bad_seq) == (Fault.CHANGED, 2)


def test_export_in_another_json_layout_still_verifies(tmp_path: Path, log: Log) -> None:
    path = tmp_path / "pretty.ndjson"
    with path.open("w", encoding="utf-8") as out:
        for obj in reversed(log.objects()):  # reversed key order, spaces, ASCII escapes
            out.write(json.dumps(dict(reversed(list(obj.items())))) + "\n")
        for cp in log.checkpoints:
            out.write(json.dumps({"checkpoint": cp.to_text()}, indent=None) + "\n")
    lines = path.read_text().splitlines()
    entry_lines = lines[:SIZE][::-1]
    path.write_text("\n".join(entry_lines + lines[SIZE:]) + "\n")
    report = verify_export(path, log.vkey)
    assert report.ok and report.entries_checked == SIZE and report.verified_tree_size == SIZE


# ------------------------------------------------------------------- anchoring


def _actor_rewritten_and_tail_dropped(log: Log, k: int) -> list[dict[str, Any]]:
    """What an insider without the signing key does: rewrite one actor, drop the last entry and
    recompute every hash and link after the change."""
    objs = log.objects()[:-1]
    objs[k]["actor"] = "user:mallory"
    prev = objs[k - 1]["hash"] if k else GENESIS_PREV
    for obj in objs[k:]:
        obj["prev"] = prev
        prev = rehash(obj)["hash"]
    return objs


def test_recomputed_chain_without_checkpoints_is_not_verified(tmp_path: Path) -> None:
    log = build_log(6, every=2)
    report = _verify(tmp_path, log, _actor_rewritten_and_tail_dropped(log, 2), notes=[])
    assert not report.ok and report.verdict is Verdict.NOT_VERIFIED
    assert [(f.kind, f.seq) for f in report.faults] == [(Fault.UNANCHORED, 0)]
    assert (
        "entries 0–4" in report.faults[0].detail and "not covered by any trusted checkpoint" in report.faults[0].detail
    )
    assert report.anchored_entries == 0 and report.uncovered_entries == 5 and report.anchored_by == ()


def test_recomputed_chain_keeping_the_early_checkpoints_is_anchored_only_up_to_them(tmp_path: Path) -> None:
    log = build_log(6, every=2)
    objs = _actor_rewritten_and_tail_dropped(log, 3)
    report = _verify(tmp_path, log, objs, notes=[log.checkpoints[0].to_text()])
    assert [(f.kind, f.seq) for f in report.faults] == [(Fault.UNANCHORED, 2)]
    assert report.to_dict()["unanchored"] == {"entries": 3, "first": 2, "last": 4}


def test_genuine_entries_past_the_last_checkpoint_are_not_verified(tmp_path: Path) -> None:
    log = build_log(6, every=2)
    report = _verify(tmp_path, log, log.objects(), notes=[log.checkpoints[0].to_text()])
    assert report.verdict is Verdict.NOT_VERIFIED and report.fault is Fault.UNANCHORED
    assert (report.anchored_entries, report.uncovered_entries) == (2, 4)


def test_fully_anchored_export_names_its_anchor(tmp_path: Path, log: Log) -> None:
    report = _verify(tmp_path, log, log.objects())
    assert report.verdict is Verdict.VERIFIED and report.anchored_entries == SIZE
    assert report.anchored_by == (KEY_NAME,) and report.anchor_note == log.checkpoints[-1].to_text()
    data = report.to_dict()
    assert data["verdict"] == "verified" and data["unanchored"]["entries"] == 0
    assert data["anchored"] == {
        "entries": SIZE,
        "first": 0,
        "last": SIZE - 1,
        "checkpoint_size": SIZE,
        "signers": [KEY_NAME],
    }


def test_checkpoints_signed_only_by_another_key_anchor_nothing(tmp_path: Path, log: Log) -> None:
    mallory = NoteSigner(KEY_NAME, Ed25519PrivateKey.generate())
    report = _verify(tmp_path, log, log.objects(), notes=[log.checkpoint_at(SIZE, mallory).to_text()])
    assert [f.kind for f in report.faults] == [Fault.FORGED_CHECKPOINT, Fault.UNANCHORED]
    assert report.verdict is Verdict.FAILED and report.anchored_entries == 0


def test_empty_export_without_checkpoints_has_nothing_to_prove(tmp_path: Path, log: Log) -> None:
    report = _verify(tmp_path, log, [], notes=[])
    assert report.ok and report.entries_checked == 0 and report.anchored_entries == 0


# ------------------------------------------------------- a checkpoint kept earlier


def test_kept_checkpoint_is_proven_by_a_later_extension(tmp_path: Path, log: Log) -> None:
    kept = log.checkpoints[1]  # size 8, kept by the auditor from an earlier run
    report = _verify(tmp_path, log, log.objects(), trusted=kept)
    assert report.ok
    assert [c.matches for c in report.checkpoints if c.source == "trusted"] == [True]


def test_kept_checkpoint_catches_a_fork_signed_with_the_logs_own_key(tmp_path: Path, log: Log) -> None:
    # The operator holds the key: it can rewrite history and sign every checkpoint again. Alone,
    # the fork verifies; the checkpoint the auditor kept says otherwise.
    kept = log.checkpoints[2]  # size 12
    objs = log.objects()
    rewrite_from(objs, 5)
    fork = build_log(0, signer=log.signer)
    from audit.entry import entry_from_dict

    fork.entries = [entry_from_dict(obj) for obj in objs]
    notes = [fork.checkpoint_at(size).to_text() for size in (4, 8, 12, 16, 20)]
    assert _verify(tmp_path, fork, objs, notes).ok
    report = _verify(tmp_path, fork, objs, notes, trusted=kept)
    assert not report.ok and report.verdict is Verdict.FAILED
    assert (report.fault, report.faults[0].tree_size) == (Fault.INCONSISTENT_HISTORY, 12)


def test_kept_checkpoint_catches_an_export_cut_back_to_an_older_checkpoint(tmp_path: Path, log: Log) -> None:
    notes = [c.to_text() for c in log.checkpoints if c.size <= 12]
    assert _verify(tmp_path, log, log.objects()[:12], notes).ok  # alone, a genuine older export
    report = _verify(tmp_path, log, log.objects()[:12], notes, trusted=log.checkpoints[3])
    assert (report.fault, report.first_bad_seq, report.faults[0].tree_size) == (Fault.CUT_TAIL, 12, 16)


def test_kept_checkpoint_signed_by_another_key_is_refused(tmp_path: Path, log: Log) -> None:
    mallory = NoteSigner(KEY_NAME, Ed25519PrivateKey.generate())
    report = _verify(tmp_path, log, log.objects(), trusted=log.checkpoint_at(8, mallory))
    assert report.fault == Fault.FORGED_CHECKPOINT
    assert [c.source for c in report.checkpoints if not c.signature_valid] == ["trusted"]
