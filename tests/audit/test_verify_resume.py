"""A verification resumed from ``ChainVerifier.resume_state`` reaches, by property, the report of
one pass over the whole log: over random logs, resume points and corruptions after the resume
point, exported lines or stored rows, the reference and the fast verifier in any mix."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.entry import canonical
from audit.errors import InvalidTreeSize
from audit.verify import ChainVerifier, ResumeState
from audit.verify_fast import FastChainVerifier
from tests.audit.logbuilder import Log, build_log
from tests.audit.test_verify_fast import TAMPERS, _rows, _tamper

KINDS = {"reference": ChainVerifier, "fast": FastChainVerifier}


def _verifier(log: Log, kind: str, resume: ResumeState | None = None) -> ChainVerifier:
    verifier = KINDS[kind]([log.signer.verifier], resume=resume)
    for checkpoint in log.checkpoints:
        verifier.add_checkpoint_text(checkpoint.to_text())
    return verifier


def _lines(objs: list[dict[str, Any]]) -> list[bytes]:
    return [canonical(obj) + b"\n" for obj in objs]


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 24),
    every=st.integers(1, 7),
    split=st.integers(0, 24),
    tamper=st.sampled_from(TAMPERS),
    k=st.integers(0, 40),
    first_kind=st.sampled_from(sorted(KINDS)),
    then_kind=st.sampled_from(sorted(KINDS)),
    anchored_to_end=st.booleans(),
)
def test_a_resumed_verification_of_an_export_reaches_the_report_of_one_pass(
    size: int, every: int, split: int, tamper: str, k: int, first_kind: str, then_kind: str, anchored_to_end: bool
) -> None:
    log = build_log(size, every=every)
    if anchored_to_end:
        log.checkpoints.append(log.checkpoint_at(size))
    at = split % (size + 1)
    objs = log.objects()
    tail = objs[at:]
    _tamper(tail, tamper, k)  # only after the resume point: what is resumed from was found intact
    lines = _lines(objs[:at]) + _lines(tail)

    one_pass = _verifier(log, then_kind)
    for line in lines:
        one_pass.add_line(line)
    expected = one_pass.finish().to_dict()

    first = _verifier(log, first_kind)
    for line in lines[:at]:
        first.add_line(line)
    state = first.resume_state()
    assert state is not None and state.size == at
    resumed = _verifier(log, then_kind, resume=state)
    for line in lines[at:]:
        resumed.add_line(line)
    assert resumed.finish().to_dict() == expected


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(1, 16),
    split=st.integers(0, 16),
    k=st.integers(0, 30),
    tamper=st.sampled_from(["none", "data", "spaces", "hash", "swap"]),
    kind=st.sampled_from(sorted(KINDS)),
)
def test_a_resumed_verification_of_stored_rows_reaches_the_report_of_one_pass(
    size: int, split: int, k: int, tamper: str, kind: str
) -> None:
    log = build_log(size, every=4)
    log.checkpoints.append(log.checkpoint_at(size))
    rows = [list(row) for row in _rows(log)]
    at = split % (size + 1)
    if at < size:
        k = at + k % (size - at)
        if tamper == "data":
            rows[k][5] = '{"n":-1}'
        elif tamper == "spaces":
            rows[k][5] = rows[k][5].replace(":", " : ")
        elif tamper == "hash":
            rows[k][8] = "0" * 64
        elif tamper == "swap" and k + 1 < size:
            rows[k], rows[k + 1] = rows[k + 1], rows[k]
    one_pass = _verifier(log, kind)
    for row in rows:
        one_pass.add_stored(tuple(row))  # type: ignore[arg-type]
    first = _verifier(log, kind)
    for row in rows[:at]:
        first.add_stored(tuple(row))  # type: ignore[arg-type]
    state = first.resume_state()
    assert state is not None
    resumed = _verifier(log, kind, resume=state)
    for row in rows[at:]:
        resumed.add_stored(tuple(row))  # type: ignore[arg-type]
    assert resumed.finish().to_dict() == one_pass.finish().to_dict()


def test_no_state_is_given_once_a_fault_was_found() -> None:
    log = build_log(8, every=4)
    changed = log.objects()
    changed[5]["subject"] = "altered"
    verifier = _verifier(log, "reference")
    for line in _lines(changed[:7]):
        verifier.add_line(line)
    assert verifier.resume_state() is None  # a break still being classified
    verifier.finish()
    assert verifier.resume_state() is None  # a fault found

    forged = build_log(8, every=4)
    other = _verifier(forged, "fast")
    other.add_checkpoint_text(build_log(8).checkpoint_at(4).to_text())  # signed by another key
    for line in _lines(forged.objects()[:4]):
        other.add_line(line)
    assert other.resume_state() is None


def test_a_state_of_the_wrong_shape_is_refused() -> None:
    log = build_log(6, every=3)
    verifier = _verifier(log, "reference")
    for line in _lines(log.objects()):
        verifier.add_line(line)
    state = verifier.resume_state()
    assert state is not None and state.size == 6 and state.root == log.checkpoint_at(6).root_hash
    with pytest.raises(InvalidTreeSize):
        ChainVerifier([log.signer.verifier], resume=replace(state, size=7))
