"""The log's side of witnessing (C2SP tlog-witness) against three real ``bhxh-integrity witness
serve`` processes, quorum 2, on SQLite and PostgreSQL: checkpoints get cosigned off the append
path, a dead witness only lowers the count, a witness that lost track (409) is caught up, a
fork is refused, and bad BHXH_WITNESSES settings stop the start in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from sqlalchemy import func, select
from tlog_scales.signing import Vkey, VkeySet
from tlog_scales.tlog import Checkpoint as TlogCheckpoint

from audit.checkpoint import Checkpoint, SignedCheckpoint
from audit.cosignature import Cosigner, CosignerKey
from audit.errors import CosignatureInvalid
from audit.export import checkpoint_line
from audit.policy import Policy
from audit.verify_report import Verdict
from audit.witness import AddCheckpoint
from audit.witness_store import audit_cosignatures, audit_witness_sizes, set_witness_size
from integrity.witness_service import init_witness
from integrity.witnessing import Outcome
from tests.audit.witness_support import LOG_VKEY, REPO, WitnessProcess, demo_log_signer
from tests.conftest import Service
from tests.loopback import free_port

QUORUM = 2


class PinnedWitness(WitnessProcess):
    """A witness process that keeps its port across a restart (the log's settings name it)."""

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        if not self.spawn():
            pytest.fail(f"witness did not start: {self.log_file.read_text()}")


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[WitnessProcess]]:
    started: list[WitnessProcess] = []
    try:
        for n in (1, 2, 3):
            directory = tmp_path / f"w{n}"
            keys = list(init_witness(directory, f"witness{n}.test/w"))
            witness = PinnedWitness(directory, keys, tmp_path / f"w{n}.log")
            witness.start()
            started.append(witness)
        yield started
    finally:
        for witness in started:
            witness.stop()


def witness_settings(witnesses: list[WitnessProcess]) -> list[dict[str, object]]:
    return [{"name": w.keys[0].name, "url": w.url, "vkey": [key.to_text() for key in w.keys]} for w in witnesses]


@pytest.fixture
def log(db_url: str, witnesses: list[WitnessProcess]) -> Iterator[Service]:
    svc = Service(db_url, witnesses=witness_settings(witnesses), witness_quorum=QUORUM, witness_timeout_seconds=5)
    yield svc
    svc.close()


def _cosignature_rows(svc: Service, checkpoint_id: int) -> int:
    with svc.state.engine.connect() as conn:
        query = (
            select(func.count())
            .select_from(audit_cosignatures)
            .where(audit_cosignatures.c.checkpoint_id == checkpoint_id)
        )
        return int(conn.execute(query).scalar_one())


def _verified_witnesses(note: str, witnesses: list[WitnessProcess]) -> set[str]:
    """Witnesses whose every key verifies its cosignature on ``note``."""
    signed = SignedCheckpoint.from_text(note)
    found = set()
    for w in witnesses:
        try:
            for key in w.keys:
                key.verify(signed)
        except CosignatureInvalid:  # absent or invalid: that witness does not count
            continue
        found.add(w.keys[0].name)
    return found


def test_checkpoints_are_cosigned_off_the_append_path_and_served(log: Service, witnesses: list[WitnessProcess]) -> None:
    audit = log.state.audit
    for i in range(3):
        audit.record("system", "test.event", f"s{i}")
    # The hook only wakes the witnessing thread: checkpoint_now returns before any witness answers.
    signed = audit.checkpoint_now()
    deadline = time.monotonic() + 60
    while _cosignature_rows(log, signed.id) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _cosignature_rows(log, signed.id) == 6  # three witnesses, an ML-DSA-44 and an Ed25519 line each

    response = log.client.get("/v1/audit/checkpoint", headers=log.auth("audit:read"))
    assert response.status_code == 200
    assert response.text.startswith(signed.note)
    assert _verified_witnesses(response.text, witnesses) == {w.keys[0].name for w in witnesses}
    with log.state.engine.connect() as conn:
        sizes = dict(conn.execute(select(audit_witness_sizes.c.witness, audit_witness_sizes.c.tree_size)).all())
    assert set(sizes.values()) == {signed.tree_size}

    # A fork: another root at the same size, signed with the log's own key, is refused by all.
    fork = SignedCheckpoint.sign(Checkpoint(audit.origin, signed.tree_size, b"\x07" * 32), [demo_log_signer()])
    body = AddCheckpoint(signed.tree_size, (), fork).to_body()
    assert [w.add(body).status_code for w in witnesses] == [422, 422, 422]


def test_a_dead_witness_leaves_a_quorum_of_two_and_is_caught_up_later(
    log: Service, witnesses: list[WitnessProcess]
) -> None:
    audit = log.state.audit
    witnessing = audit.witnessing
    assert witnessing is not None
    audit.record("system", "test.event", "first")
    audit.checkpoint_now()
    first = witnessing.witness_latest()
    assert first is not None and first.witnessed == 3

    witnesses[0].kill()
    audit.record("system", "test.event", "second")
    signed = audit.checkpoint_now()
    round_ = witnessing.witness_latest()
    assert round_ is not None and round_.checkpoint_id == signed.id
    # (The hook's own round may have run first: then the live two are already CURRENT.)
    assert round_.results[0].outcome is Outcome.UNREACHABLE
    assert round_.witnessed == QUORUM and round_.quorum_seconds is not None
    with log.state.engine.connect() as conn:
        assert conn.execute(select(audit_witness_sizes.c.tree_size).where(_named(witnesses[0]))).scalar_one() == (
            first.tree_size
        )
    assert _verified_witnesses(audit.current_checkpoint().note, witnesses) == {w.keys[0].name for w in witnesses[1:]}

    # Back up, the witness still holds the first checkpoint; the log sends a proof from there.
    witnesses[0].start()
    audit.record("system", "test.event", "third")
    signed = audit.checkpoint_now()
    caught_up = witnessing.witness_latest()
    assert caught_up is not None and caught_up.witnessed == 3, caught_up
    assert _verified_witnesses(audit.current_checkpoint().note, witnesses) == {w.keys[0].name for w in witnesses}
    assert signed.tree_size > first.tree_size

    # Another instance's record was lost: this database believes witness 2 never cosigned. It
    # answers 409 with its size, and the log sends a proof from there.
    with log.state.engine.begin() as conn:
        set_witness_size(conn, witnesses[1].keys[0].name, 0, log.clock())
    audit.record("system", "test.event", "fourth")
    signed = audit.checkpoint_now()
    again = witnessing.witness_latest()
    assert again is not None and again.witnessed == 3, again
    with log.state.engine.connect() as conn:
        assert conn.execute(select(audit_witness_sizes.c.tree_size).where(_named(witnesses[1]))).scalar_one() == (
            signed.tree_size
        )


def _named(witness: WitnessProcess) -> object:
    return audit_witness_sizes.c.witness == witness.keys[0].name


def test_cosignatures_that_do_not_verify_are_not_stored(db_url: str, witnesses: list[WitnessProcess]) -> None:
    configured = witness_settings(witnesses)
    # The same key listed for two witnesses is refused at start-up.
    configured[0] = {**configured[0], "vkey": [key.to_text() for key in witnesses[1].keys]}
    with pytest.raises(ValidationError, match="verifier key is listed twice"):
        Service(db_url, witnesses=configured, witness_quorum=QUORUM)
    # Witness 1 configured with other keys under its name: its answers verify with none of them.
    stranger = [CosignerKey.from_public_key(witnesses[0].keys[0].name, k.public_key) for k in witnesses[1].keys]
    configured[0] = {**configured[0], "vkey": [key.to_text() for key in stranger]}
    svc = Service(db_url, witnesses=configured, witness_quorum=QUORUM)
    try:
        svc.state.audit.record("system", "test.event", "a")
        signed = svc.state.audit.checkpoint_now()
        assert svc.state.audit.witnessing is not None
        round_ = svc.state.audit.witnessing.witness_latest()
        assert round_ is not None and round_.results[0].outcome is Outcome.INVALID
        assert round_.witnessed == 2
        assert _cosignature_rows(svc, signed.id) == 4
    finally:
        svc.close()


# --- verification with a trust policy ---------------------------------------------------------


def _verify(export: Path, *options: str) -> tuple[int, dict[str, object]]:
    done = _cli(["audit", "verify", "--export", str(export), *options, "--json"], export.parent)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout else {}


def _checkpoint_notes(export: Path) -> list[str]:
    lines = (json.loads(line) for line in export.read_bytes().splitlines() if line.strip())
    return [obj["checkpoint"] for obj in lines if "checkpoint" in obj and "seq" not in obj]


def test_an_export_verifies_under_a_policy_only_with_the_quorum_of_known_witnesses(
    log: Service, witnesses: list[WitnessProcess], tmp_path: Path
) -> None:
    audit = log.state.audit
    for i in range(4):
        audit.record("system", "test.event", f"s{i}")
    witnesses[0].kill()
    for i in range(3):
        audit.record("system", "test.event", f"t{i}")
    # The export submits its own closing checkpoint first: it leaves cosigned by the two alive.
    response = log.client.get("/v1/audit/export", headers=log.auth("audit:read"))
    assert response.status_code == 200
    export = tmp_path / "export.ndjson"
    export.write_bytes(response.content)
    last = _checkpoint_notes(export)[-1]
    assert _verified_witnesses(last, witnesses) == {w.keys[0].name for w in witnesses[1:]}

    vkey = LOG_VKEY.read_text().strip()
    w1, w2, w3 = (w.keys for w in witnesses)  # (ML-DSA-44, Ed25519) each
    policy = tmp_path / "policy.txt"
    policy.write_text(
        f"log {vkey}\n# one key per witness: both kinds of cosignature are counted\n"
        f"witness W1 {w1[1].to_text()}\nwitness W2 {w2[0].to_text()}\nwitness W3 {w3[1].to_text()}\n"
        "group two-of-three 2 W1 W2 W3\nquorum two-of-three\n"
    )
    code, report = _verify(export, "--policy", str(policy))
    assert (code, report["verdict"]) == (0, "verified"), report
    assert set(report["anchored"]["signers"]) >= {"W2", "W3"}  # type: ignore[index]

    # The live log under the same policy (stored cosignatures) is verified as well.
    assert audit.verify(policy=Policy.from_bytes(policy.read_bytes())).verdict is Verdict.VERIFIED

    # The log key alone (--public-key: no witness required) verifies too.
    code, report = _verify(export, "--public-key", str(LOG_VKEY))
    assert (code, report["verdict"]) == (0, "verified"), report

    # Witness 3 unknown to the policy (a fourth, never-running witness instead): its
    # cosignature is reported and not counted, so one known cosignature is short of 2.
    w4 = init_witness(tmp_path / "w4", "witness4.test/w")
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(
        f"log {vkey}\nwitness W1 {w1[1].to_text()}\nwitness W2 {w2[0].to_text()}\n"
        f"witness W4 {w4[1].to_text()}\ngroup g 2 W1 W2 W4\nquorum g\n"
    )
    code, report = _verify(export, "--policy", str(stranger))
    assert (code, report["verdict"]) == (1, "not_verified"), report
    assert audit.verify(policy=Policy.from_bytes(stranger.read_bytes())).verdict is Verdict.NOT_VERIFIED
    assert report["fault"] == "unanchored"
    last_check = [c for c in report["checkpoints"] if c["tree_size"] == audit.size()]  # type: ignore[union-attr]
    ignored = set(last_check[-1]["ignored_cosigners"]) if last_check else set()
    assert {f"{k.name}+{k.key_id.hex()}" for k in witnesses[2].keys} <= ignored, last_check

    # A fork: another root at the exported size, signed with the log key itself.
    size = audit.size()
    fork = SignedCheckpoint.sign(Checkpoint(audit.origin, size, b"\x09" * 32), [demo_log_signer()])
    forked = tmp_path / "forked.ndjson"
    forked.write_bytes(export.read_bytes() + checkpoint_line(fork.to_text()))
    code, report = _verify(forked, "--policy", str(policy))
    assert (code, report["verdict"]) == (1, "failed"), report

    # Every cosigned checkpoint of the export also verifies with an independent implementation,
    # both cosignature kinds.
    alive = [key for w in witnesses[1:] for key in w.keys]
    keyset = VkeySet(*(Vkey.from_string(key.to_text()) for key in alive))
    cosigned = [note for note in _checkpoint_notes(export) if _verified_witnesses(note, witnesses)]
    assert cosigned
    for note in cosigned:
        checkpoint = TlogCheckpoint.from_text(note)
        checkpoint.verify(Vkey.from_string(vkey))
        valid = keyset.verify(checkpoint.signatures, checkpoint)
        assert {(v.name, v.key_id) for v, _ in valid} == {(v.name, v.key_id) for v in keyset.keys.values()}


def test_bad_policy_options_are_one_line_errors(tmp_path: Path) -> None:
    export = tmp_path / "export.ndjson"
    export.write_text("")
    policy = tmp_path / "policy.txt"
    policy.write_text(f"log {LOG_VKEY.read_text().strip()}\nquorum W1\n")
    for options, needle in (
        (["--policy", str(policy)], "line 2: the quorum 'W1' is not a witness or group defined above"),
        (["--policy", str(tmp_path / "missing.txt")], "missing.txt"),
        (["--policy", str(policy), "--public-key", str(LOG_VKEY)], "--policy or --public-key, not both"),
    ):
        done = _cli(["audit", "verify", "--export", str(export), *options], tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr


# --- settings ---------------------------------------------------------------------------------


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("BHXH_WITNESSES", '[{"name": "w1"', "BHXH_WITNESSES is not valid JSON"),
        ("BHXH_WITNESSES", '[{"name": "w1", "url": "http://127.0.0.1:1", "vkey": "nope"}]', "BHXH_WITNESSES.0.VKEY"),
        ("BHXH_WITNESSES", '[{"name": "w1", "url": "ftp://x", "vkey": "VKEY"}]', "BHXH_WITNESSES.0.URL"),
        ("BHXH_WITNESS_QUORUM", "2", "the quorum (2) is more than the witnesses"),
        ("BHXH_WITNESS_TIMEOUT_SECONDS", "0", "BHXH_WITNESS_TIMEOUT_SECONDS"),
    ],
)
def test_a_bad_witness_setting_stops_the_start_in_one_line(
    tmp_path: Path, variable: str, value: str, needle: str
) -> None:
    vkey = Cosigner("w1", Ed25519PrivateKey.generate()).key.to_text()
    env = {variable: value.replace("VKEY", vkey)}
    if variable == "BHXH_WITNESS_QUORUM":
        env["BHXH_WITNESSES"] = json.dumps([{"name": "w1", "url": "http://127.0.0.1:1", "vkey": vkey}])
    work = tmp_path / "work"
    work.mkdir()
    done = _cli(["audit", "verify", "--demo"], work, **env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: invalid settings: ")
    assert needle in done.stderr, done.stderr
    assert list(work.iterdir()) == []
