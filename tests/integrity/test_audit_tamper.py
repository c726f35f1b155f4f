"""Tamper matrix on the live database, as an insider would do it: drop the append-only guards,
then change, delete, insert, reorder, cut, forge, rewrite. The verifier must name the exact
fault and the first bad seq on SQLite and on PostgreSQL. Also: 4 processes appending at once
(no gaps, no forks) and an acknowledged append surviving kill -9."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import Connection, Engine, select, text

from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint
from audit.entry import GENESIS_PREV, hash_body
from audit.tables import audit_entries
from audit.verify import Fault, Verdict
from integrity.audit_service import AuditService
from integrity.clock import FrozenClock
from tests.integrity.test_audit_service import KEY_NAME, make_service

SIZE = 20  # checkpoints every 4 entries: 4, 8, 12, 16, 20
PII_SEQS = (4, 9)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def log(engine: Engine, tmp_path: Path) -> Iterator[AuditService]:
    svc = make_service(engine, FrozenClock(), tmp_path, checkpoint_every=4)
    for seq in range(SIZE):
        personal = {"name": f"Lê Văn {seq}"} if seq in PII_SEQS else None
        svc.record("user:an", "receipt.issued", f"R-{seq}", {"n": seq}, personal)
    svc.maybe_checkpoint()
    assert [c.tree_size for c in svc.checkpoints()] == [4, 8, 12, 16, 20]
    yield svc
    svc.close()


def _unlock(engine: Engine) -> None:
    """What an insider with the database owner's rights does first: drop the guards (triggers,
    UNIQUE(prev), the personal-data foreign key) so that rows can be moved freely."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in ("audit_entries", "audit_tree_nodes", "audit_checkpoints", "audit_keys"):
                conn.execute(text(f"DROP TRIGGER {table}_append_only ON {table}"))
            conn.execute(text("DROP TRIGGER audit_pii_no_update ON audit_pii"))
            conn.execute(text("ALTER TABLE audit_entries DROP CONSTRAINT uq_audit_entries_prev"))
            conn.execute(text("ALTER TABLE audit_pii DROP CONSTRAINT audit_pii_seq_fkey"))
        return
    db = sqlite3.connect(engine.url.database, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("BEGIN IMMEDIATE")
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
        # UNIQUE(prev) cannot be dropped in SQLite: rebuild the table without it.
        db.execute(
            "CREATE TABLE entries_copy (seq INTEGER PRIMARY KEY, ts VARCHAR(32) NOT NULL, actor VARCHAR(210) NOT NULL, "
            "action VARCHAR(100) NOT NULL, subject VARCHAR(500) NOT NULL, data TEXT NOT NULL, pii VARCHAR(64), "
            "prev VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL)"
        )
        db.execute("INSERT INTO entries_copy SELECT * FROM audit_entries")
        db.execute("DROP TABLE audit_entries")
        db.execute("ALTER TABLE entries_copy RENAME TO audit_entries")
        db.execute("CREATE TABLE pii_copy (seq INTEGER PRIMARY KEY, salt BLOB NOT NULL, data TEXT NOT NULL)")
        db.execute("INSERT INTO pii_copy SELECT * FROM audit_pii")
        db.execute("DROP TABLE audit_pii")
        db.execute("ALTER TABLE pii_copy RENAME TO audit_pii")
        db.execute("COMMIT")
    finally:
        db.close()


def _row(conn: Connection, seq: int) -> dict:
    return dict(conn.execute(select(audit_entries).where(audit_entries.c.seq == seq)).one()._mapping)


def _body(row: dict) -> dict:
    return {
        "seq": row["seq"],
        "ts": row["ts"],
        "actor": row["actor"],
        "action": row["action"],
        "subject": row["subject"],
        "data": json.loads(row["data"]),
        "pii": row["pii"],
        "prev": row["prev"],
    }


def _set_seq(conn: Connection, old: int, new: int) -> None:
    conn.execute(text("UPDATE audit_entries SET seq = :new WHERE seq = :old"), {"new": new, "old": old})


def _change(conn: Connection) -> None:
    conn.execute(text("UPDATE audit_entries SET subject = 'altered' WHERE seq = 7"))


def _change_rehash(conn: Connection) -> None:
    row = _row(conn, 7)
    row["data"] = json.dumps({"n": 700})
    new_hash = hash_body(_body(row))
    conn.execute(text("UPDATE audit_entries SET data = :d, hash = :h WHERE seq = 7"), {"d": row["data"], "h": new_hash})


def _delete(conn: Connection) -> None:
    conn.execute(text("DELETE FROM audit_entries WHERE seq = 7"))


def _delete_renumber(conn: Connection) -> None:
    conn.execute(text("DELETE FROM audit_entries WHERE seq = 7"))
    for seq in range(8, SIZE):
        _set_seq(conn, seq, seq - 1)


def _insert_renumber(conn: Connection) -> None:
    for seq in range(SIZE - 1, 6, -1):
        _set_seq(conn, seq, seq + 1)
    prev = _row(conn, 6)["hash"]
    forged = {
        "seq": 7,
        "ts": "2025-01-01T00:00:00.000000Z",
        "actor": "user:mallory",
        "action": "receipt.issued",
        "subject": "forged",
        "data": {},
        "pii": None,
        "prev": prev,
    }
    conn.execute(
        text("INSERT INTO audit_entries VALUES (:seq, :ts, :actor, :action, :subject, :data, :pii, :prev, :hash)"),
        {**forged, "data": "{}", "hash": hash_body(forged)},
    )


def _reorder(conn: Connection) -> None:
    _set_seq(conn, 7, -1)
    _set_seq(conn, 8, 7)
    _set_seq(conn, -1, 8)


def _cut_tail(conn: Connection) -> None:
    conn.execute(text("DELETE FROM audit_entries WHERE seq >= 17"))


def _rewrite_from_9(conn: Connection) -> None:
    prev = _row(conn, 8)["hash"]
    for seq in range(9, SIZE):
        row = _row(conn, seq)
        row["prev"] = prev
        if seq == 9:
            row["subject"] = "rewritten"
        prev = hash_body(_body(row))
        conn.execute(
            text("UPDATE audit_entries SET subject = :s, prev = :p, hash = :h WHERE seq = :q"),
            {"s": row["subject"], "p": row["prev"], "h": prev, "q": seq},
        )


def _forge_checkpoint(conn: Connection) -> None:
    mallory = NoteSigner(KEY_NAME, Ed25519PrivateKey.generate())
    note = SignedCheckpoint.sign(Checkpoint("bhxh-integrity/audit/test-log", 3, bytes(32)), [mallory]).to_text()
    conn.execute(
        text("INSERT INTO audit_checkpoints (tree_size, root_hash, note, signed_at) VALUES (3, :r, :n, :t)"),
        {"r": "00" * 32, "n": note, "t": "2025-01-01 00:00:00"},
    )


def _pii_changed(conn: Connection) -> None:
    conn.execute(text("""UPDATE audit_pii SET data = '{"name":"Someone Else"}' WHERE seq = 4"""))


def _pii_deleted_without_erasure(conn: Connection) -> None:
    conn.execute(text("DELETE FROM audit_pii WHERE seq = 4"))


MATRIX: list[tuple[str, Callable[[Connection], None], Fault, int | None]] = [
    ("changed", _change, Fault.CHANGED, 7),
    ("changed-and-rehashed", _change_rehash, Fault.CHANGED, 7),
    ("deleted", _delete, Fault.DELETED, 7),
    ("deleted-and-renumbered", _delete_renumber, Fault.DELETED, 7),
    ("inserted-and-renumbered", _insert_renumber, Fault.INSERTED, 7),
    ("reordered", _reorder, Fault.REORDERED, 7),
    ("cut-tail", _cut_tail, Fault.CUT_TAIL, 17),
    ("forged-checkpoint", _forge_checkpoint, Fault.FORGED_CHECKPOINT, None),
    ("rewritten-history", _rewrite_from_9, Fault.INCONSISTENT_HISTORY, 8),
    ("personal-data-changed", _pii_changed, Fault.PII_MISMATCH, 4),
    ("personal-data-deleted-without-erasure", _pii_deleted_without_erasure, Fault.PII_MISMATCH, 4),
]


@pytest.mark.parametrize(("tamper", "fault", "seq"), [m[1:] for m in MATRIX], ids=[m[0] for m in MATRIX])
def test_insider_tampering_in_the_database_is_named_with_its_first_bad_seq(
    log: AuditService, engine: Engine, tamper: Callable[[Connection], None], fault: Fault, seq: int | None
) -> None:
    assert log.verify().ok
    _unlock(engine)
    with engine.begin() as conn:
        tamper(conn)
    report = log.verify()
    assert not report.ok
    assert (report.fault, report.first_bad_seq) == (fault, seq), report.faults


def _published(tmp_path: Path) -> list[SignedCheckpoint]:
    return [
        SignedCheckpoint.from_text(p.read_text()) for p in sorted((tmp_path / "published").glob("checkpoint-*.txt"))
    ]


def test_cut_tail_with_checkpoints_deleted_is_caught_by_published_checkpoints(
    log: AuditService, engine: Engine, tmp_path: Path
) -> None:
    _unlock(engine)
    with engine.begin() as conn:
        _cut_tail(conn)
        conn.execute(text("DELETE FROM audit_checkpoints WHERE tree_size > 16"))
    # The database alone shows no tampering, but entry 16 is under no signed checkpoint any more.
    alone = log.verify(use_publish_dir=False)
    assert alone.verdict is Verdict.NOT_VERIFIED
    assert [(f.kind, f.seq) for f in alone.faults] == [(Fault.UNANCHORED, 16)]
    report = log.verify()  # the publish directory outside the database is read by default
    assert (report.fault, report.first_bad_seq) == (Fault.CUT_TAIL, 17)
    assert len(_published(tmp_path)) == 5


def test_rewritten_history_with_checkpoints_deleted_is_caught_by_the_auditors_checkpoint(
    log: AuditService, engine: Engine
) -> None:
    kept = SignedCheckpoint.from_text(log.checkpoints()[3].note)  # size 16, kept by the auditor
    _unlock(engine)
    with engine.begin() as conn:
        _rewrite_from_9(conn)
        conn.execute(text("DELETE FROM audit_checkpoints WHERE tree_size > 8"))
    # Rehashed and relinked, the rewrite breaks no chain; but it is not anchored, so not verified.
    alone = log.verify(use_publish_dir=False)
    assert not alone.ok and alone.verdict is Verdict.NOT_VERIFIED
    assert [(f.kind, f.seq) for f in alone.faults] == [(Fault.UNANCHORED, 8)]
    assert "entries 8–19" in alone.faults[0].detail
    report = log.verify(trusted_checkpoint=kept, use_publish_dir=False)
    assert (report.fault, report.first_bad_seq) == (Fault.INCONSISTENT_HISTORY, 8)


def test_erased_personal_data_is_reported_as_erased_not_as_a_fault(log: AuditService) -> None:
    log.erase_pii(4, "request of the data subject", approved_by="user:admin")
    log.checkpoint_now()  # the erasure entry is anchored too
    report = log.verify()
    assert report.ok and report.pii_erased == 1 and report.pii_checked == 1


def test_export_of_the_live_log_verifies_offline_and_detects_the_same_tampering(
    log: AuditService, engine: Engine, tmp_path: Path
) -> None:
    from audit.export import verify_export

    vkeys = "\n".join(log.verifier_keys())
    clean = tmp_path / "clean.ndjson"
    with clean.open("wb") as out:
        log.export(out)
    assert verify_export(clean, vkeys).ok
    _unlock(engine)
    with engine.begin() as conn:
        _reorder(conn)
    tampered = tmp_path / "tampered.ndjson"
    with tampered.open("wb") as out:
        log.export(out)
    report = verify_export(tampered, vkeys)
    assert (report.fault, report.first_bad_seq) == (Fault.REORDERED, 7)


def test_export_ends_with_a_checkpoint_over_exactly_the_exported_entries(log: AuditService, tmp_path: Path) -> None:
    from audit.export import verify_export

    log.record("user:an", "receipt.issued", "past the last checkpoint")
    lines = log.export_lines()
    head = [next(lines)]
    for i in range(3):  # appended while the export streams: not in this export
        log.record("user:an", "receipt.issued", f"during-{i}")
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"".join(head + list(lines)))
    last = json.loads(path.read_bytes().splitlines()[-1])
    signed = SignedCheckpoint.from_text(last["checkpoint"])
    assert signed.size == SIZE + 1
    report = verify_export(path, "\n".join(log.verifier_keys()))
    assert report.ok and report.entries_checked == SIZE + 1 and report.verified_tree_size == SIZE + 1
    assert log.size() == SIZE + 4


# --------------------------------------------------------------- processes


def _append_worker(url: str, key_pem: bytes, worker: int, count: int) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from integrity.clock import system_clock
    from integrity.db import make_engine

    engine = make_engine(url)
    key = load_pem_private_key(key_pem, None)
    svc = AuditService(
        engine,
        clock=system_clock,
        log_id="test-log",
        checkpoint_key=key,  # type: ignore[arg-type]
        checkpoint_key_name=KEY_NAME,
        checkpoint_every=7,
        checkpoint_seconds=3600,
    )
    try:
        for i in range(count):
            if i % 3 == 0:
                with engine.begin() as conn:
                    svc.record(f"peer:w{worker}", "exchange.accepted", f"{worker}-{i}", {"i": i}, conn=conn)
            else:
                svc.record(f"peer:w{worker}", "exchange.accepted", f"{worker}-{i}", {"i": i})
        svc.maybe_checkpoint()
    finally:
        svc.close()
        engine.dispose()


def test_four_processes_appending_at_once_leave_one_chain_without_gaps(engine: Engine, db_url: str) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_worker, args=(db_url, pem, w, 40)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    with engine.connect() as conn:
        seqs = list(conn.execute(select(audit_entries.c.seq).order_by(audit_entries.c.seq)).scalars())
        subjects = set(conn.execute(select(audit_entries.c.subject)).scalars())
    assert seqs == list(range(160))
    assert subjects == {f"{w}-{i}" for w in range(4) for i in range(40)}
    svc = AuditService(
        engine,
        clock=FrozenClock(),
        log_id="test-log",
        checkpoint_key=key,
        checkpoint_key_name=KEY_NAME,
        checkpoint_every=7,
        checkpoint_seconds=3600,
    )
    try:
        assert svc.verify().verified_tree_size >= 154
        svc.checkpoint_now()
        report = svc.verify()
        assert report.ok and report.entries_checked == 160 and report.verified_tree_size == 160
    finally:
        svc.close()


_KILL_CHILD = """
import sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from integrity.audit_service import AuditService
from integrity.clock import system_clock
from integrity.db import make_engine
engine = make_engine(sys.argv[1])
svc = AuditService(engine, clock=system_clock, log_id="t", checkpoint_key=Ed25519PrivateKey.generate(),
                   checkpoint_key_name="bhxh-integrity/audit/t", checkpoint_every=1000, checkpoint_seconds=3600)
i = 0
while True:
    seq = svc.record("system", "test.durable", str(i))
    print(seq, flush=True)
    i += 1
"""


def test_acknowledged_appends_survive_kill_minus_9(engine: Engine, db_url: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, db_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    acknowledged = []
    assert child.stdout is not None
    for line in child.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) == 60:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with engine.connect() as conn:
        stored = set(conn.execute(select(audit_entries.c.seq)).scalars())
    assert set(acknowledged) <= stored
    assert sorted(stored) == list(range(len(stored)))
    assert conn_first_prev(engine) == GENESIS_PREV


def conn_first_prev(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(select(audit_entries.c.prev).where(audit_entries.c.seq == 0)).scalar_one()


def test_data_reserialised_with_the_same_content_is_not_a_fault(log: AuditService, engine: Engine) -> None:
    _unlock(engine)
    with engine.begin() as conn:
        conn.execute(text("""UPDATE audit_entries SET data = '{ "n" : 7 }' WHERE seq = 7"""))
    assert log.verify().ok
    with engine.begin() as conn:
        conn.execute(text("""UPDATE audit_entries SET data = '{ "n" : 8 }' WHERE seq = 7"""))
    report = log.verify()
    assert (report.fault, report.first_bad_seq) == (Fault.CHANGED, 7)
