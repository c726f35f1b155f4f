"""``bhxh-integrity audit …`` on both back ends: exit 0 verified, 1 fault, 2 bad input; the
offline verification of an export needs no database; reports in HTML and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from api.cli_audit import app
from integrity.app_state import AppState, build_state
from tests.conftest import DEMO_KEYS, demo_settings

VKEY = DEMO_KEYS / "audit-log.vkey"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_KEYS_DIR": str(DEMO_KEYS),
        "BHXH_DEMO": "1",
        "BHXH_CHECKPOINT_PUBLISH_DIR": str(tmp_path / "published"),
        "BHXH_LOG_LEVEL": "ERROR",
    }


@pytest.fixture
def state(db_url: str, tmp_path: Path) -> Iterator[AppState]:
    st = build_state(demo_settings(db_url, checkpoint_publish_dir=tmp_path / "published"))
    st.audit.ensure_genesis()
    for i in range(6):
        st.audit.record("user:an", "receipt.issued", f"R-{i}", {"i": i}, {"name": f"Hồ Văn {i}"} if i == 2 else None)
    st.audit.checkpoint_now()
    yield st
    st.close()


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_verify_live_log_exits_0_with_json_verdict(env: dict[str, str], state: AppState) -> None:
    code, out = _run(env, "verify", "--json")
    assert code == 0, out
    data = json.loads(out)
    size = state.audit.size()  # the key import, the genesis entry and the six events
    assert size == 8
    assert data["ok"] is True and data["entries_checked"] == size and data["verified_tree_size"] == size


def test_verify_live_log_exits_1_on_tampering(env: dict[str, str], state: AppState, tmp_path: Path) -> None:
    with state.engine.begin() as conn:
        if state.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_entries_no_update"))
        conn.execute(text("UPDATE audit_entries SET subject = 'forged' WHERE seq = 3"))
    report = tmp_path / "report.html"
    code, out = _run(env, "verify", "--report", str(report))
    assert code == 1
    assert "changed" in out and "seq 3" in out
    assert "PHÁT HIỆN SAI LỆCH" in report.read_text(encoding="utf-8")


def test_export_verifies_offline_without_a_database(env: dict[str, str], state: AppState, tmp_path: Path) -> None:
    export = tmp_path / "audit.ndjson"
    code, out = _run(env, "export", "--out", str(export))
    assert code == 0, out
    offline = {"BHXH_DATABASE_URL": "sqlite:////nonexistent/dir/never.db", "BHXH_LOG_LEVEL": "ERROR"}
    report = tmp_path / "report.json"
    code, out = _run(offline, "verify", "--export", str(export), "--public-key", str(VKEY), "--report", str(report))
    assert code == 0, out
    assert json.loads(report.read_text())["ok"] is True
    pem_code, _ = _run(offline, "verify", "--export", str(export), "--public-key", str(DEMO_KEYS / "audit-log.pub.pem"))
    assert pem_code == 0


def test_tampered_export_exits_1_naming_the_fault(env: dict[str, str], state: AppState, tmp_path: Path) -> None:
    export = tmp_path / "audit.ndjson"
    _run(env, "export", "--out", str(export))
    lines = export.read_bytes().splitlines(keepends=True)
    entry_lines = [i for i, line in enumerate(lines) if b'"seq"' in line]
    del lines[entry_lines[4]]
    export.write_bytes(b"".join(lines))
    code, out = _run({}, "verify", "--export", str(export), "--public-key", str(VKEY), "--json")
    assert code == 1
    data = json.loads(out)
    assert (data["fault"], data["first_bad_seq"]) == ("deleted", 4)


def test_trusted_checkpoint_catches_a_cut_export(env: dict[str, str], state: AppState, tmp_path: Path) -> None:
    kept = tmp_path / "kept.txt"
    code, note = _run(env, "checkpoint")
    assert code == 0
    kept.write_text(note)
    export = tmp_path / "audit.ndjson"
    _run(env, "export", "--out", str(export))
    lines = [line for line in export.read_bytes().splitlines(keepends=True) if b'"checkpoint"' not in line][:5]
    export.write_bytes(b"".join(lines))
    code, out = _run(
        {}, "verify", "--export", str(export), "--public-key", str(VKEY), "--trusted-checkpoint", str(kept), "--json"
    )
    assert code == 1 and json.loads(out)["fault"] == "cut_tail"


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--export", "missing.ndjson"],
        ["verify", "--public-key", str(VKEY)],
        ["verify", "--export", "x.ndjson", "--public-key", "/nonexistent.vkey"],
        ["verify", "--trusted-checkpoint", "/nonexistent.txt"],
        ["verify", "--export", "x.ndjson", "--public-key", str(VKEY), "--report", "r.pdf"],
    ],
    ids=["no-public-key", "key-without-export", "missing-key-file", "missing-checkpoint", "bad-report-suffix"],
)
def test_bad_usage_exits_2(
    env: dict[str, str], state: AppState, tmp_path: Path, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.ndjson").write_text("")
    code, _ = _run(env, *args)
    assert code == 2


def test_checkpoint_command_signs_and_publishes(env: dict[str, str], state: AppState, tmp_path: Path) -> None:
    state.audit.record("system", "test.event", "one more")
    code, out = _run(env, "checkpoint", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["tree_size"] == state.audit.size()
    assert (tmp_path / "published" / "checkpoint").read_text() == data["note"]


def test_erase_pii_command(env: dict[str, str], state: AppState) -> None:
    seq = str(next(e.seq for e in state.audit.entries(0, state.audit.size()) if e.pii))
    code, out = _run(env, "erase-pii", seq, "--reason", "data subject request", "--json")
    assert code == 0, out
    assert json.loads(out)["seq"] == int(seq)
    assert _run(env, "erase-pii", seq, "--reason", "again")[0] == 2
    assert _run(env, "erase-pii", seq)[0] == 2  # --reason is required
    code, out = _run(env, "verify", "--json")
    assert code == 0 and json.loads(out)["pii"]["erased"] == 1
