"""``bhxh-integrity audit …`` on both back ends: exit 0 verified, 1 fault, 2 bad input; the
offline verification of an export needs no database; reports in HTML and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from typer.testing import CliRunner

from api.cli_audit import app
from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint
from audit.entry import GENESIS_PREV, canonical, hash_body
from audit.export import checkpoint_line
from audit.merkle import CompactRange
from integrity.app_state import AppState, build_state
from tests.api.operator_support import enrolled_admin
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
    size = state.audit.size()  # the two key imports (receipt, data message), the genesis entry and the six events
    assert size == 9
    code, out = _run(env, "verify", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["ok"] is True and data["entries_checked"] == size and data["verified_tree_size"] == size
    assert data["verification"] == "full"
    # The live check only reads: an auditor with read access may run it again and again (and
    # while a rollback awaits acknowledgement) and the log stays as it was.
    assert state.audit.size() == size
    again, out = _run(env, "verify", "--json")
    assert again == 0 and json.loads(out)["ok"] is True, out


def test_verify_live_log_exits_1_on_tampering(env: dict[str, str], state: AppState, tmp_path: Path) -> None:
    with state.engine.begin() as conn:
        if state.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_entries_no_update"))
        conn.execute(text("UPDATE audit_entries SET subject = 'forged' WHERE seq = 3"))
    report = tmp_path / "report.html"
    size = state.audit.size()
    code, out = _run(env, "verify", "--report", str(report))
    assert code == 1
    assert "changed" in out and "seq 3" in out
    assert "PHÁT HIỆN SAI LỆCH" in report.read_text(encoding="utf-8")
    assert state.audit.size() == size


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


def test_erase_pii_command(env: dict[str, str], state: AppState, db_url: str) -> None:
    seq = str(next(e.seq for e in state.audit.entries(0, state.audit.size()) if e.pii))
    hoa = enrolled_admin(db_url, "hoa")  # the approving admin confirms with a TOTP code
    approver = ("--approved-by", "hoa")
    code, out = _run(
        env, "erase-pii", seq, *approver, "--code", hoa.code(), "--reason", "data subject request", "--json"
    )
    assert code == 0, out
    assert json.loads(out)["seq"] == int(seq)
    assert _run(env, "erase-pii", seq, *approver, "--code", hoa.code(), "--reason", "again")[0] == 2
    assert _run(env, "erase-pii", seq, *approver, "--code", "123456")[0] == 2  # --reason is required
    assert _run(env, "erase-pii", seq, "--reason", "again")[0] == 2  # --approved-by is required
    code, out = _run(env, "verify", "--json")
    assert code == 1 and json.loads(out)["verdict"] == "not_verified"  # the erasure entry is not anchored yet
    assert _run(env, "checkpoint")[0] == 0
    code, out = _run(env, "verify", "--json")
    assert code == 0 and json.loads(out)["pii"]["erased"] == 1


# ------------------------------------------------------- anchored verification


def _export(env: dict[str, str], tmp_path: Path, name: str = "audit.ndjson") -> Path:
    path = tmp_path / name
    code, out = _run(env, "export", "--out", str(path))
    assert code == 0, out
    return path


def _split(path: Path) -> tuple[list[dict], list[str]]:
    """The export's entry objects and checkpoint notes."""
    objs, notes = [], []
    for line in path.read_bytes().splitlines():
        obj = json.loads(line)
        if "checkpoint" in obj:
            notes.append(obj["checkpoint"])
        else:
            objs.append(obj)
    return objs, notes


def _write(path: Path, objs: list[dict], notes: list[str]) -> Path:
    path.write_bytes(b"".join([canonical(o) + b"\n" for o in objs] + [checkpoint_line(n) for n in notes]))
    return path


def _relink(objs: list[dict], start: int) -> None:
    prev = objs[start - 1]["hash"] if start else GENESIS_PREV
    for obj in objs[start:]:
        obj["prev"] = prev
        prev = obj["hash"] = hash_body({k: v for k, v in obj.items() if k != "hash"})


def _offline(path: Path, *extra: str) -> tuple[int, str]:
    code, out = _run({}, "verify", "--export", str(path), "--public-key", str(VKEY), *extra)
    return code, out if "--json" in extra else " ".join(out.split())  # the terminal wraps lines


def test_fresh_export_verifies_with_every_entry_anchored(env: dict[str, str], state: AppState, tmp_path: Path) -> None:
    state.audit.record("user:an", "receipt.issued", "past the last checkpoint")
    export = _export(env, tmp_path)
    objs, notes = _split(export)
    assert SignedCheckpoint.from_text(notes[-1]).size == len(objs) == state.audit.size()
    code, out = _offline(export)
    assert code == 0, out
    assert "TOÀN VẸN / VERIFIED" in out and "every entry anchored" in out
    assert f"anchored: {len(objs)} entries (0–{len(objs) - 1})" in out


def test_rewritten_recomputed_and_stripped_export_is_not_verified(
    env: dict[str, str], state: AppState, tmp_path: Path
) -> None:
    objs, _ = _split(_export(env, tmp_path))
    objs[3]["actor"] = "user:mallory"
    del objs[-1]
    _relink(objs, 3)
    forged = _write(tmp_path / "forged.ndjson", objs, [])
    code, out = _offline(forged)
    assert code == 1, out
    assert "CHƯA XÁC MINH / NOT VERIFIED" in out and "TOÀN VẸN" not in out
    assert f"entries 0–{len(objs) - 1} are not covered by any trusted checkpoint" in out
    code, out = _offline(forged, "--json")
    data = json.loads(out)
    assert (data["ok"], data["verdict"], data["fault"]) == (False, "not_verified", "unanchored")


@pytest.mark.parametrize(
    ("tamper", "fault"),
    [("reorder", "reordered"), ("cut", "cut_tail"), ("strip", "unanchored"), ("other-key", "forged_checkpoint")],
)
def test_tampered_export_exits_1_with_its_fault(
    env: dict[str, str], state: AppState, tmp_path: Path, tamper: str, fault: str
) -> None:
    objs, notes = _split(_export(env, tmp_path))
    if tamper == "reorder":
        objs[4], objs[5] = objs[5], objs[4]
    elif tamper == "cut":
        del objs[-1]
    elif tamper == "strip":
        notes = []
    else:
        mallory = NoteSigner(state.audit.signer.name, Ed25519PrivateKey.generate())
        latest = SignedCheckpoint.from_text(notes[-1]).checkpoint
        notes = [SignedCheckpoint.sign(latest, [mallory]).to_text()]
    code, out = _offline(_write(tmp_path / "tampered.ndjson", objs, notes), "--json")
    assert code == 1, out
    data = json.loads(out)
    assert data["ok"] is False and data["fault"] == fault
    assert data["unanchored"]["entries"] > 0 or fault == "cut_tail"


def test_since_a_kept_checkpoint_passes_for_an_extension(env: dict[str, str], state: AppState, tmp_path: Path) -> None:
    kept = tmp_path / "kept.txt"
    code, out = _offline(_export(env, tmp_path, "first.ndjson"), "--save-checkpoint", str(kept))
    assert code == 0, out
    first_size = SignedCheckpoint.from_text(kept.read_text()).size
    for i in range(3):
        state.audit.record("user:an", "receipt.issued", f"later-{i}")
    later = _export(env, tmp_path, "later.ndjson")
    code, out = _offline(later, "--since", str(kept), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["trusted_checkpoint_size"] == first_size < data["entries_checked"]
    assert [c["matches"] for c in data["checkpoints"] if c["source"] == "trusted"] == [True]


def test_since_a_kept_checkpoint_fails_for_a_fork_and_a_cut_tail(
    env: dict[str, str], state: AppState, tmp_path: Path
) -> None:
    export = _export(env, tmp_path)
    kept = tmp_path / "kept.txt"
    assert _offline(export, "--save-checkpoint", str(kept))[0] == 0
    objs, notes = _split(export)
    # A fork: history rewritten and signed again with the log's own key (the operator holds it).
    forked = [dict(o) for o in objs]
    forked[2]["subject"] = "rewritten"
    _relink(forked, 2)
    tree = CompactRange()
    for obj in forked:
        tree.push(bytes.fromhex(obj["hash"]))
    resigned = SignedCheckpoint.sign(Checkpoint(state.audit.origin, len(forked), tree.root()), [state.audit.signer])
    fork = _write(tmp_path / "fork.ndjson", forked, [resigned.to_text()])
    assert _offline(fork)[0] == 0  # alone, a fork signed with the log's key verifies
    code, out = _offline(fork, "--since", str(kept), "--json")
    assert code == 1 and json.loads(out)["fault"] == "inconsistent_history"
    # A cut tail: an older, genuine prefix (up to the first checkpoint) with only the checkpoints it reaches.
    first = min(SignedCheckpoint.from_text(n).size for n in notes)
    assert first < len(objs)
    small = [n for n in notes if SignedCheckpoint.from_text(n).size <= first]
    cut = _write(tmp_path / "cut.ndjson", objs[:first], small)
    assert _offline(cut)[0] == 0
    code, out = _offline(cut, "--since", str(kept))
    assert code == 1 and "cut_tail" in out
    assert not (tmp_path / "not-saved.txt").exists()
    assert _offline(cut, "--since", str(kept), "--save-checkpoint", str(tmp_path / "not-saved.txt"))[0] == 1
    assert not (tmp_path / "not-saved.txt").exists()
