"""The fast path (audit.verify_fast) against the reference verifier (audit.verify): on any log,
untouched or tampered, exported or as stored rows, both reach the same report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.entry import GENESIS_PREV, build_entry, canonical
from audit.export import verify_export
from audit.verify import ChainVerifier, StoredRow
from audit.verify_fast import FastChainVerifier
from tests.audit.logbuilder import Log, build_log, forged_entry, rehash, write_export

TAMPERS = ["none", "change", "change_rehash", "rewrite", "delete", "insert", "swap", "cut", "garbage", "reserialise"]


def _tamper(objs: list[dict[str, Any]], kind: str, k: int) -> None:
    if not objs or kind == "none":
        return
    k %= len(objs)
    if kind == "change":
        objs[k]["subject"] = "altered"
    elif kind == "change_rehash":
        objs[k]["data"] = {"n": -1}
        rehash(objs[k])
    elif kind == "rewrite":
        objs[k]["actor"] = "user:mallory"
        prev = objs[k - 1]["hash"] if k else GENESIS_PREV
        for obj in objs[k:]:
            obj["prev"] = prev
            prev = rehash(obj)["hash"]
    elif kind == "delete":
        del objs[k]
    elif kind == "insert":
        objs.insert(k, forged_entry(k, objs[k - 1]["hash"] if k else GENESIS_PREV))
    elif kind == "swap" and k + 1 < len(objs):
        objs[k], objs[k + 1] = objs[k + 1], objs[k]
    elif kind == "cut":
        del objs[k:]
    elif kind == "garbage":
        objs[k] = {"not": "an entry"}


def _both(path: Path, log: Log) -> tuple[dict[str, Any], dict[str, Any]]:
    fast = verify_export(path, log.vkey).to_dict()
    reference = verify_export(path, log.vkey, reference=True).to_dict()
    return fast, reference


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(0, 20),
    every=st.integers(1, 7),
    kind=st.sampled_from(TAMPERS),
    k=st.integers(0, 40),
    anchored_to_end=st.booleans(),
)
def test_fast_and_reference_agree_on_exports(
    tmp_path: Path, size: int, every: int, kind: str, k: int, anchored_to_end: bool
) -> None:
    log = build_log(size, every=every)
    if anchored_to_end:
        log.checkpoints.append(log.checkpoint_at(size))
    objs = log.objects()
    _tamper(objs, kind, k)
    path = write_export(tmp_path / "e.ndjson", objs, [c.to_text() for c in log.checkpoints])
    if kind == "reserialise" and objs:
        lines = path.read_bytes().splitlines(keepends=True)
        lines[k % len(objs)] = json.dumps(objs[k % len(objs)], indent=None, separators=(", ", ": ")).encode() + b"\n"
        path.write_bytes(b"".join(lines))
    fast, reference = _both(path, log)
    assert fast == reference


_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(_texts, st.one_of(_texts, st.integers(-1000, 1000), st.none()), max_size=4), subject=_texts)
def test_fast_and_reference_agree_on_any_entry_content(tmp_path: Path, data: dict, subject: str) -> None:
    log = build_log(6, every=3)
    prev = GENESIS_PREV
    for seq, old in enumerate(list(log.entries)):
        log.entries[seq] = build_entry(
            seq=seq,
            ts=old.ts,
            actor=old.actor,
            action=old.action,
            subject=subject if seq == 2 else old.subject,
            data=data if seq == 2 else old.data,
            pii=old.pii,
            prev=prev,
        )
        prev = log.entries[seq].hash
    log.checkpoints = [log.checkpoint_at(3), log.checkpoint_at(6)]
    path = write_export(tmp_path / "e.ndjson", log.objects(), [c.to_text() for c in log.checkpoints])
    fast, reference = _both(path, log)
    assert fast["ok"] and fast == reference


def _rows(log: Log) -> list[StoredRow]:
    return [
        (e.seq, e.ts, e.actor, e.action, e.subject, canonical(dict(e.data)).decode(), e.pii, e.prev, e.hash)
        for e in log.entries
    ]


@settings(max_examples=80, deadline=None)
@given(size=st.integers(1, 16), k=st.integers(0, 30), kind=st.sampled_from(["none", "data", "spaces", "hash", "swap"]))
def test_fast_and_reference_agree_on_stored_rows(size: int, k: int, kind: str) -> None:
    log = build_log(size, every=4)
    log.checkpoints.append(log.checkpoint_at(size))
    rows = [list(row) for row in _rows(log)]
    k %= size
    if kind == "data":
        rows[k][5] = '{"n":-1}'
    elif kind == "spaces":
        rows[k][5] = rows[k][5].replace(":", " : ")  # same content, another layout
    elif kind == "hash":
        rows[k][8] = "0" * 64
    elif kind == "swap" and k + 1 < size:
        rows[k], rows[k + 1] = rows[k + 1], rows[k]
    reports = []
    for kind_ in (ChainVerifier, FastChainVerifier):
        verifier = kind_([log.signer.verifier])
        for cp in log.checkpoints:
            verifier.add_checkpoint_text(cp.to_text())
        for row in rows:
            verifier.add_stored(tuple(row))  # type: ignore[arg-type]
        reports.append(verifier.finish().to_dict())
    assert reports[0] == reports[1]
    if kind in ("none", "spaces"):
        assert reports[0]["ok"]
