"""A log restored behind its witnesses, on SQLite and PostgreSQL, against three real ``witness
serve`` processes: the next witnessing round finds it rolled back, every append is refused
(503 problem+json over HTTP, LogRolledBack inside) with nothing written, the real CLI's
``audit acknowledge-rollback`` logs the lost range and lets appends resume, the witnesses that
hold the lost history are reported rather than found again, and one whose operator reset its
record cosigns again. Acknowledging with nothing to acknowledge is one line, exit 2, nothing
written; the database refuses to clear a finding any other way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from api.errors import PROBLEM_JSON, TYPE_PREFIX
from audit.errors import LogRolledBack
from audit.rollback_store import RollbackEvidence
from audit.witness import origin_hash
from audit.witness_store import set_witness_size
from integrity.audit_rollback import ACKNOWLEDGED_ACTION
from integrity.witness_service import init_witness
from integrity.witnessing import Outcome
from tests.audit.witness_support import DEMO_ORIGIN, REPO, WitnessProcess
from tests.conftest import DEMO_KEYS, Service
from tests.integrity.test_witnessing import PinnedWitness, _verified_witnesses, witness_settings
from tests.tools import require_tool

OPERATOR = "restore-admin"
REASON = "restored the 1 June backup after the disk failure"


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[WitnessProcess]]:
    started: list[WitnessProcess] = []
    try:
        for n in (1, 2, 3):
            directory = tmp_path / f"w{n}"
            witness = PinnedWitness(
                directory, list(init_witness(directory, f"witness{n}.test/w")), tmp_path / f"w{n}.log"
            )
            witness.start()
            started.append(witness)
        yield started
    finally:
        for witness in started:
            witness.stop()


def _settings(witnesses: list[WitnessProcess]) -> dict[str, object]:
    return {"witnesses": witness_settings(witnesses), "witness_quorum": 2, "witness_timeout_seconds": 5}


def _cli(args: list[str], db_url: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``bhxh-integrity ARGS`` as an operator runs it: its own process, settings from the environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BHXH_") and k != "SUDO_USER"}
    settings = {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_KEYS_DIR": str(DEMO_KEYS),
        "BHXH_LOG_LEVEL": "ERROR",
        "LOGNAME": OPERATOR,
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        cwd=cwd,
        env={**base, **settings, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _libpq(db_url: str) -> str:
    return db_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _backup(db_url: str, tmp_path: Path) -> Path:
    """The database as it is now, by the tool its back end is backed up with."""
    if db_url.startswith("sqlite"):
        out = tmp_path / "backup.db"
        done = _cli(["backup", "--out", str(out)], db_url, tmp_path)
        assert done.returncode == 0, done.stderr
        return out
    out = tmp_path / "backup.dump"
    pg_dump = require_tool("pg_dump", "postgresql-client")
    subprocess.run([pg_dump, "-Fc", "-f", str(out), _libpq(db_url)], check=True, capture_output=True, timeout=120)
    return out


def _restore(db_url: str, backup: Path, tmp_path: Path) -> None:
    """Put the backup back (every instance stopped), as docs/operations.md says."""
    if db_url.startswith("sqlite"):
        done = _cli(["restore", "--from", str(backup), "--force"], db_url, tmp_path)
        assert done.returncode == 0, done.stderr
        return
    pg_restore = require_tool("pg_restore", "postgresql-client")
    subprocess.run(
        [pg_restore, "--clean", "--if-exists", "-d", _libpq(db_url), str(backup)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _event(svc: Service, auth: dict[str, str], subject: str) -> int:
    body = {"action": "ext.test-client.visit", "subject": subject, "data": {}}
    answer = svc.client.post("/v1/audit/events", json=body, headers=auth)
    return answer.status_code


def test_a_restore_behind_the_witnesses_stops_appends_until_the_loss_is_acknowledged(
    db_url: str, witnesses: list[WitnessProcess], tmp_path: Path
) -> None:
    names = [w.keys[0].name for w in witnesses]
    svc = Service(db_url, **_settings(witnesses))
    try:
        audit = svc.state.audit
        auth = svc.auth("audit:append")
        for i in range(3):
            audit.record("system", "test.event", f"before-{i}")
        first = audit.witness_now()
        assert first is not None and first.witnessed == 3, first
        backup = _backup(db_url, tmp_path)
        for i in range(5):
            assert _event(svc, auth, f"after-{i}") == 201
        second = audit.witness_now()
        assert second is not None and second.witnessed == 3, second
        witnessed_size = second.tree_size
    finally:
        svc.close()

    _restore(db_url, backup, tmp_path)
    svc = Service(db_url, **_settings(witnesses))
    try:
        audit = svc.state.audit
        size = audit.size()
        assert size < witnessed_size

        # What serve does at start: a checkpoint, and the witnesses asked before any append.
        found = audit.witness_now()
        assert found is not None and [r.outcome for r in found.results] == [Outcome.ROLLED_BACK] * 3, found
        findings = audit.rolled_back()
        assert sorted((f.witness, f.witness_size, f.log_size, f.evidence) for f in findings) == [
            (name, witnessed_size, size, RollbackEvidence.AHEAD) for name in sorted(names)
        ]

        # Every append is refused, over HTTP and inside the service, and nothing is written.
        answer = svc.client.post(
            "/v1/audit/events", json={"action": "ext.test-client.visit", "subject": "refused"}, headers=auth
        )
        assert answer.status_code == 503
        assert answer.headers["content-type"] == PROBLEM_JSON
        problem = answer.json()
        assert problem["type"] == TYPE_PREFIX + "audit-log-rolled-back"
        assert f"cosigned {witnessed_size} entries and the log holds {size}" in problem["detail"]
        assert "bhxh-integrity audit acknowledge-rollback" in problem["detail"]
        with pytest.raises(LogRolledBack):
            audit.record("system", "test.event", "refused inside")
        with pytest.raises(LogRolledBack), svc.state.engine.begin() as conn:
            audit.record("system", "test.event", "refused in a transaction", conn=conn)
        assert audit.size() == size
        # Another round finds the same loss: still one finding per witness.
        audit.witness_now()
        assert len(audit.rolled_back()) == 3

        # The operator acknowledges with the real command.
        done = _cli(
            ["audit", "acknowledge-rollback", "--reason", REASON, "--demo", "--json"],
            db_url,
            tmp_path,
            BHXH_WITNESSES=json.dumps(witness_settings(witnesses)),
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert (out["seq"], out["log_size"], out["lost_first"], out["lost_last"]) == (
            size,
            size,
            size,
            witnessed_size - 1,
        )
        entry = audit.entry(out["seq"])
        assert (entry.actor, entry.action, entry.subject) == (f"operator:{OPERATOR}", ACKNOWLEDGED_ACTION, DEMO_ORIGIN)
        assert entry.data["reason"] == REASON
        assert (entry.data["lost_first"], entry.data["lost_last"]) == (size, witnessed_size - 1)
        assert sorted(f["witness"] for f in entry.data["findings"]) == sorted(names)
        assert {f["witness_size"] for f in entry.data["findings"]} == {witnessed_size}
        assert audit.rolled_back() == []

        # Appends work again.
        assert _event(svc, auth, "resumed") == 201
        assert audit.size() == size + 2

        # The witnesses still hold the lost history: reported, never found again as a new loss.
        held = audit.witness_now()
        assert held is not None and [r.outcome for r in held.results] == [Outcome.DIVERGED] * 3, held
        assert audit.rolled_back() == []
        assert _event(svc, auth, "still appending") == 201

        # The first witness's operator resets its record of the log: it cosigns again.
        reset = witnesses[0]
        reset.stop()
        record = reset.directory / "logs" / origin_hash(DEMO_ORIGIN)
        record.rename(reset.directory / "lost-history-of-the-log")
        reset.start()
        again = audit.witness_now()
        assert again is not None, again
        # (The checkpoint's own background round may have been first: then it is CURRENT here.)
        assert again.results[0].outcome in (Outcome.COSIGNED, Outcome.CURRENT), again
        assert [r.outcome for r in again.results[1:]] == [Outcome.DIVERGED, Outcome.DIVERGED], again
        assert again.witnessed == 1
        assert _verified_witnesses(audit.current_checkpoint().note, witnesses) == {names[0]}
        assert audit.verify().ok
    finally:
        svc.close()


def test_acknowledging_when_nothing_was_rolled_back_is_refused_and_writes_nothing(db_url: str, tmp_path: Path) -> None:
    svc = Service(db_url)
    try:
        svc.state.audit.record("system", "test.event", "a")
        size = svc.state.audit.size()
        done = _cli(["audit", "acknowledge-rollback", "--reason", REASON, "--demo", "--json"], db_url, tmp_path)
        assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done
        assert done.stderr.count("\n") == 1 and "not rolled back: there is nothing to acknowledge" in done.stderr
        assert svc.state.audit.size() == size
    finally:
        svc.close()


def test_a_blank_reason_is_refused_and_the_log_stays_rolled_back(db_url: str, tmp_path: Path) -> None:
    svc = Service(db_url)
    try:
        audit = svc.state.audit
        audit.record("system", "test.event", "a")
        with svc.state.engine.begin() as conn:
            # A witness size this log never reached, as a 409 would have recorded it.
            set_witness_size(conn, "witness1.test/w", 9, svc.clock())
        _stored_size_round(svc)
        size = audit.size()
        done = _cli(["audit", "acknowledge-rollback", "--reason", "  ", "--demo"], db_url, tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done
        assert done.stderr.count("\n") == 1 and "needs a reason" in done.stderr
        assert audit.size() == size and len(audit.rolled_back()) == 1
    finally:
        svc.close()


def _stored_size_round(svc: Service) -> None:
    """A witnessing round against a witness whose recorded size is past the log: no request
    is sent (the recorded size already says it), and the log is found rolled back."""
    from integrity.witnessing import Witness, Witnessing

    witnessing = Witnessing(
        svc.state.engine, [Witness("witness1.test/w", "http://127.0.0.1:9", ())], quorum=1, timeout=1, clock=svc.clock
    )
    try:
        svc.state.audit.checkpoint_now()
        round_ = witnessing.witness_latest()
    finally:
        witnessing.close()
    assert round_ is not None and round_.results[0].outcome is Outcome.ROLLED_BACK, round_


def test_the_database_clears_a_finding_only_by_one_acknowledgement(db_url: str, engine: Engine) -> None:
    svc = Service(db_url)
    try:
        with svc.state.engine.begin() as conn:
            set_witness_size(conn, "witness1.test/w", 50, svc.clock())
        _stored_size_round(svc)
        for statement in (
            "DELETE FROM audit_rollbacks",
            "UPDATE audit_rollbacks SET acknowledged_seq = 0",  # without the time of acknowledgement
            "UPDATE audit_rollbacks SET witness_size = 1",
        ):
            with pytest.raises(DBAPIError), engine.begin() as conn:
                conn.execute(text(statement))
        assert len(svc.state.audit.rolled_back()) == 1
        done = svc.state.audit.acknowledge_rollback(REASON, actor=f"operator:{OPERATOR}")
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text("UPDATE audit_rollbacks SET acknowledged_seq = NULL, acknowledged_at = NULL"))
        assert svc.state.audit.rolled_back() == []
        assert svc.state.audit.entry(done.seq).action == ACKNOWLEDGED_ACTION
    finally:
        svc.close()
