"""Trusted time for the audit log, against a real TSA (``openssl ts -reply`` over HTTP) on SQLite
and PostgreSQL: with BHXH_TSA_URL set each checkpoint gets an RFC 3161 time-stamp after its
commit, the export carries it, and ``audit verify --export … --tsa-cert ROOT`` prints the time,
fails on a token over another checkpoint or from an untrusted TSA, and on a missing one only
when asked to. A TSA that is down or answers wrongly never costs a checkpoint nor an append."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from api.cli_audit import app
from audit.entry import canonical
from audit.timestamp_store import audit_checkpoint_timestamps
from audit.timestamps import request_for, verify_token
from tests.conftest import DEMO_KEYS, Service
from tests.tsa_support import DEMO_CA_CERT, OpensslTsa, throwaway_ca

VKEY = DEMO_KEYS / "audit-log.vkey"
DEMO_ROOT = x509.load_pem_x509_certificate(DEMO_CA_CERT.read_bytes())


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[OpensslTsa]:
    with OpensslTsa(tmp_path / "tsa") as server:
        yield server


@pytest.fixture
def log(db_url: str, tsa: OpensslTsa) -> Iterator[Service]:
    svc = Service(db_url, tsa_url=tsa.url)
    svc.state.audit.ensure_genesis()
    yield svc
    svc.close()


def _stored(svc: Service) -> dict[int, bytes]:
    t = audit_checkpoint_timestamps.c
    with svc.state.engine.connect() as conn:
        return {row.checkpoint_id: bytes(row.response) for row in conn.execute(select(t.checkpoint_id, t.response))}


def _wait_stamped(svc: Service, checkpoint_id: int) -> bytes:
    deadline = time.monotonic() + 30
    while checkpoint_id not in (stored := _stored(svc)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint_id in stored, "the checkpoint was not time-stamped"
    return stored[checkpoint_id]


def _export(svc: Service, path: Path) -> list[dict]:
    with path.open("wb") as out:
        svc.state.audit.export(out)
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _write(path: Path, objs: list[dict]) -> Path:
    path.write_bytes(b"".join(canonical(obj) + b"\n" for obj in objs))
    return path


def _verify(export: Path, *extra: str) -> tuple[int, str]:
    args = ["verify", "--export", str(export), "--public-key", str(VKEY), *extra]
    result = CliRunner().invoke(app, args, env={})
    return result.exit_code, result.output if "--json" in extra else " ".join(result.output.split())


def _checkpoints(objs: list[dict]) -> list[dict]:
    return [obj for obj in objs if "checkpoint" in obj]


def test_checkpoints_are_timestamped_after_commit_over_the_signed_note(log: Service, tsa: OpensslTsa) -> None:
    audit = log.state.audit
    for i in range(3):
        audit.record("user:an", "receipt.issued", f"R-{i}")
    signed = audit.checkpoint_now()
    token = _wait_stamped(log, signed.id)
    stamp = verify_token(token, signed.note, [DEMO_ROOT])
    assert stamp.tsa == "CN=BHXH Test TSA"
    assert abs((stamp.gen_time - signed.signed_at).total_seconds()) < 3600
    # The set-up's checkpoints are stamped too (the same round, older after newer), each once.
    for checkpoint in audit.checkpoints():
        _wait_stamped(log, checkpoint.id)
    assert len(_stored(log)) == len(audit.checkpoints()) == tsa.requests


def test_export_carries_the_tokens_and_verifies_offline_with_the_time(
    log: Service, tsa: OpensslTsa, tmp_path: Path
) -> None:
    for i in range(4):
        log.state.audit.record("user:an", "receipt.issued", f"R-{i}")
    objs = _export(log, tmp_path / "audit.ndjson")
    lines = _checkpoints(objs)
    assert len(lines) >= 2 and all(set(line) == {"checkpoint", "timestamp"} for line in lines)

    code, out = _verify(tmp_path / "audit.ndjson", "--tsa-cert", str(DEMO_CA_CERT))
    assert code == 0, out
    assert "TOÀN VẸN / VERIFIED" in out
    assert out.count("thời điểm / timestamped at") == len(lines) and "UTC (CN=BHXH Test TSA)" in out

    code, out = _verify(tmp_path / "audit.ndjson", "--tsa-cert", str(DEMO_CA_CERT), "--json")
    assert code == 0, out
    checks = json.loads(out)["timestamps"]
    assert [c["status"] for c in checks] == ["trusted"] * len(lines)
    assert all(c["gen_time"].endswith("+00:00") for c in checks)

    # Without a TSA root the time-stamps are reported, not checked, and prove nothing.
    code, out = _verify(tmp_path / "audit.ndjson")
    assert code == 0 and "time-stamp not checked" in out and "timestamped at" not in out


def test_swapped_tokens_fail_with_the_fault(log: Service, tmp_path: Path) -> None:
    log.state.audit.record("user:an", "receipt.issued", "R-1")
    objs = _export(log, tmp_path / "audit.ndjson")
    first, last = _checkpoints(objs)[0], _checkpoints(objs)[-1]
    first["timestamp"], last["timestamp"] = last["timestamp"], first["timestamp"]
    swapped = _write(tmp_path / "swapped.ndjson", objs)

    code, out = _verify(swapped, "--tsa-cert", str(DEMO_CA_CERT), "--json")
    assert code == 1, out
    data = json.loads(out)
    assert data["verdict"] == "failed"
    faults = [f for f in data["faults"] if f["kind"] == "timestamp_invalid"]
    assert len(faults) == 2 and all("another text than this checkpoint" in f["detail"] for f in faults)
    code, out = _verify(swapped, "--tsa-cert", str(DEMO_CA_CERT))
    assert code == 1 and "Dấu thời gian không hợp lệ (invalid time-stamp)" in out


def test_a_token_from_an_untrusted_tsa_fails(log: Service, tmp_path: Path) -> None:
    objs = _export(log, tmp_path / "audit.ndjson")
    line = _checkpoints(objs)[-1]
    # A TSA certified by a CA the auditor does not trust, time-stamping the very same note.
    with OpensslTsa(tmp_path / "rogue", issuer=throwaway_ca(), common_name="Rogue TSA") as rogue:
        line["timestamp"] = base64.b64encode(rogue.reply(request_for(line["checkpoint"]).der)).decode()
    forged = _write(tmp_path / "rogue.ndjson", objs)
    code, out = _verify(forged, "--tsa-cert", str(DEMO_CA_CERT), "--json")
    assert code == 1, out
    fault = next(f for f in json.loads(out)["faults"] if f["kind"] == "timestamp_invalid")
    assert "does not verify" in fault["detail"]

    # And the genuine tokens fail against a root that is not their TSA's.
    other_root = tmp_path / "other-root.pem"
    other_root.write_bytes(throwaway_ca()[0].public_bytes(serialization.Encoding.PEM))
    code, out = _verify(tmp_path / "audit.ndjson", "--tsa-cert", str(other_root), "--json")
    assert code == 1 and json.loads(out)["fault"] == "timestamp_invalid"


def test_garbage_in_the_timestamp_field_is_a_fault(log: Service, tmp_path: Path) -> None:
    objs = _export(log, tmp_path / "audit.ndjson")
    for bad in ("not base64!", base64.b64encode(b"\x30\x03\x02\x01\x00").decode(), 42):
        _checkpoints(objs)[-1]["timestamp"] = bad
        code, out = _verify(_write(tmp_path / "bad.ndjson", objs), "--tsa-cert", str(DEMO_CA_CERT), "--json")
        assert code == 1, out
        assert json.loads(out)["fault"] == "timestamp_invalid"


def test_tsa_down_keeps_the_checkpoint_and_a_later_one_is_stamped(
    log: Service, tsa: OpensslTsa, tmp_path: Path
) -> None:
    audit = log.state.audit
    assert audit.timestamping is not None
    audit.timestamping.stamp_pending()  # settle the set-up's checkpoints first
    tsa.available = False
    audit.record("user:an", "receipt.issued", "during the outage")
    missed = audit.checkpoint_now()
    outcome = audit.timestamping.stamp_pending()
    assert outcome.stamped == () and outcome.error is not None and "503" in outcome.error
    assert audit.latest_checkpoint() == missed  # stored and served without its time-stamp
    assert missed.id not in _stored(log)
    assert audit.record("user:an", "receipt.issued", "appends go on") == missed.tree_size

    # An export made meanwhile: no trusted time for its checkpoints, a failure only on demand.
    objs = _export(log, tmp_path / "outage.ndjson")
    assert "timestamp" not in _checkpoints(objs)[-1]
    code, out = _verify(tmp_path / "outage.ndjson", "--tsa-cert", str(DEMO_CA_CERT))
    assert code == 0, out
    assert "không có thời điểm tin cậy / no trusted time" in out
    code, out = _verify(tmp_path / "outage.ndjson", "--tsa-cert", str(DEMO_CA_CERT), "--require-timestamps", "--json")
    assert code == 1, out
    data = json.loads(out)
    assert data["verdict"] == "not_verified" and data["fault"] == "untimestamped"

    tsa.available = True
    audit.record("user:an", "receipt.issued", "after the outage")
    later = audit.checkpoint_now()
    _wait_stamped(log, later.id)
    _wait_stamped(log, missed.id)  # the missed ones are caught up in the same round
    code, out = _verify(_export_path(log, tmp_path), "--tsa-cert", str(DEMO_CA_CERT), "--require-timestamps")
    assert code == 0, out


def _export_path(svc: Service, tmp_path: Path) -> Path:
    path = tmp_path / "after.ndjson"
    _export(svc, path)
    return path


def test_a_wrong_answer_is_refused_and_nothing_is_stored(log: Service, tsa: OpensslTsa) -> None:
    audit = log.state.audit
    assert audit.timestamping is not None
    audit.timestamping.stamp_pending()
    before = _stored(log)
    tsa.answer_to = request_for("another note\n").der  # answers with another imprint and nonce
    audit.record("user:an", "receipt.issued", "R")
    signed = audit.checkpoint_now()
    outcome = audit.timestamping.stamp_pending()
    assert outcome.stamped == () and outcome.error is not None and "another nonce" in outcome.error
    assert _stored(log) == before and audit.latest_checkpoint() == signed


def test_a_slow_tsa_never_holds_up_appends_or_checkpoints(log: Service, tsa: OpensslTsa) -> None:
    audit = log.state.audit
    tsa.delay = 3.0
    started = time.monotonic()
    for i in range(5):
        audit.record("user:an", "receipt.issued", f"R-{i}")
    audit.checkpoint_now()
    assert time.monotonic() - started < 2.0


def test_old_exports_without_timestamps_still_verify(log: Service, tmp_path: Path) -> None:
    objs = _export(log, tmp_path / "audit.ndjson")
    for line in _checkpoints(objs):
        del line["timestamp"]
    old = _write(tmp_path / "old.ndjson", objs)
    assert _verify(old)[0] == 0
    code, out = _verify(old, "--tsa-cert", str(DEMO_CA_CERT))
    assert code == 0 and "no trusted time" in out
    code, out = _verify(old, "--tsa-cert", str(DEMO_CA_CERT), "--require-timestamps")
    assert code == 1 and "Checkpoint thiếu dấu thời gian" in out


def test_timestamp_options_misused_exit_2(tmp_path: Path) -> None:
    export = tmp_path / "x.ndjson"
    export.write_bytes(b"")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    cases = [
        ["verify", "--export", str(export), "--public-key", str(VKEY), "--require-timestamps"],
        ["verify", "--export", str(export), "--public-key", str(VKEY), "--tsa-cert", str(not_pem)],
        ["verify", "--export", str(export), "--public-key", str(VKEY), "--tsa-cert", str(tmp_path / "missing.pem")],
        ["verify", "--tsa-cert", str(DEMO_CA_CERT)],
    ]
    for args in cases:
        result = CliRunner().invoke(app, args, env={})
        assert result.exit_code == 2, (args, result.output)


def test_checkpoint_rows_stay_append_only(log: Service) -> None:
    audit = log.state.audit
    assert audit.timestamping is not None
    audit.timestamping.stamp_pending()
    with log.state.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_checkpoint_timestamps)).scalar_one() >= 1
    with pytest.raises(DBAPIError, match="append-only"), log.state.engine.begin() as conn:
        conn.execute(audit_checkpoint_timestamps.update().values(tsa="rewritten"))
