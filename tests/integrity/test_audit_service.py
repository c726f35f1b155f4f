"""AuditService on both back ends: appends (own transaction, caller's transaction, group commit),
checkpoints (every N, every N seconds, published, rotation), proofs, erasure, and the
append-only guards of the database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from audit import merkle
from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.errors import EntryNotFound, InvalidEntry, InvalidTreeSize, PiiAlreadyErased, PiiNotFound
from audit.store import StoredCheckpoint
from audit.tables import audit_checkpoints, audit_entries, audit_pii
from audit.verify import Fault, Verdict
from integrity.audit_service import AuditService, Claim
from integrity.clock import FrozenClock
from tests.conftest import writer_held

KEY_NAME = "bhxh-integrity/audit/test-log"


def make_service(engine: Engine, clock: FrozenClock, tmp_path: Path, **overrides: object) -> AuditService:
    options: dict[str, object] = {
        "clock": clock,
        "log_id": "test-log",
        "checkpoint_key": Ed25519PrivateKey.generate(),
        "checkpoint_key_name": KEY_NAME,
        "checkpoint_every": 5,
        "checkpoint_seconds": 60,
        "publish_dir": tmp_path / "published",
    }
    options.update(overrides)
    return AuditService(engine, **options)  # type: ignore[arg-type]


@pytest.fixture
def audit(engine: Engine, clock: FrozenClock, tmp_path: Path) -> Iterator[AuditService]:
    svc = make_service(engine, clock, tmp_path)
    yield svc
    svc.close()


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()  # type: ignore[arg-type]


def test_records_get_contiguous_seqs_and_link_into_one_chain(audit: AuditService) -> None:
    seqs = [audit.record("user:an", "signature.created", f"msg-{i}", {"i": i}) for i in range(6)]
    assert seqs == list(range(6))
    entries = audit.entries(0, 6)
    assert entries[0].prev == "0" * 64
    assert all(entries[i].prev == entries[i - 1].hash for i in range(1, 6))
    assert [e.data for e in entries] == [{"i": i} for i in range(6)]
    # Entry 5 is past every checkpoint (one per 5 entries): sound, but not yet proven.
    pending = audit.verify()
    assert pending.verdict is Verdict.NOT_VERIFIED and pending.fault is Fault.UNANCHORED
    audit.checkpoint_now()
    assert audit.verify().ok


def test_record_with_conn_commits_with_the_callers_work(audit: AuditService, engine: Engine) -> None:
    with engine.begin() as conn:
        seq = audit.record("system", "admin.client.created", "client:c1", {"name": "portal"}, conn=conn)
    assert seq == 0 and audit.entry(0).action == "admin.client.created"


def test_record_with_conn_rolls_back_with_the_callers_work(audit: AuditService, engine: Engine) -> None:
    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), engine.begin() as conn:
        audit.record("system", "receipt.issued", "X-1", conn=conn)
        raise Boom
    assert audit.size() == 0
    # The seq of the rolled-back entry is reused: no gap in the chain.
    assert audit.record("system", "receipt.issued", "X-2") == 0
    audit.checkpoint_now()
    assert audit.verify().ok


@pytest.mark.parametrize(
    "args",
    [
        ("nobody", "a.b", "s", None, None),
        ("system", "NoDots", "s", None, None),
        ("system", "a.b", "s", {"x": float("nan")}, None),
        ("system", "a.b", "s", None, {}),
    ],
    ids=["actor", "action", "data", "empty-pii"],
)
def test_invalid_event_is_refused_and_nothing_is_written(audit: AuditService, engine: Engine, args: tuple) -> None:
    with pytest.raises(InvalidEntry):
        audit.record(*args)
    with pytest.raises(InvalidEntry), engine.begin() as conn:
        audit.record(*args, conn=conn)
    assert _count(engine, audit_entries) == 0 and _count(engine, audit_pii) == 0


def test_personal_data_is_stored_apart_behind_a_salted_commitment(audit: AuditService, engine: Engine) -> None:
    seq = audit.record(
        "user:an",
        "receipt.issued",
        "000.00.31.H29-251123-0001",
        {"units": 1},
        {"name": "Nguyễn Văn A", "id_number": "079123456789"},
    )
    entry = audit.entry(seq)
    assert entry.pii is not None and len(entry.pii) == 64
    assert "Nguyễn" not in str(entry.to_dict()) and "079123456789" not in str(entry.to_dict())
    with engine.connect() as conn:
        row = conn.execute(select(audit_pii)).one()
    assert row.seq == seq and "079123456789" in row.data and len(row.salt) == 32
    audit.checkpoint_now()
    report = audit.verify()
    assert report.ok and report.pii_checked == 1


def test_concurrent_callers_share_group_commits_without_gaps(audit: AuditService) -> None:
    def work(n: int) -> None:
        for i in range(25):
            audit.record(f"client:c{n}", "exchange.accepted", f"m{i}", {"i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert audit.size() == 200
    audit.checkpoint_now()
    report = audit.verify()
    assert report.ok and report.entries_checked == 200 and report.first_seq == 0 and report.last_seq == 199


class _Keys:
    """A ``claim_many`` over a set in memory that remembers what each call was given."""

    def __init__(self, taken: tuple[str, ...] = (), fail: Exception | None = None) -> None:
        self.taken = set(taken)
        self.calls: list[list[object]] = []
        self.fail = fail

    def __call__(self, conn: object, claims: Sequence[Claim]) -> set[object]:
        self.calls.append([c.key for c in claims])
        if self.fail is not None:
            raise self.fail
        new = {c.key for c in claims} - self.taken
        self.taken |= new
        return new


def _in_one_batch(audit: AuditService, calls: list[Callable[[], object]]) -> list[object]:
    """Run ``calls`` on threads queued behind a held writer, so that they are committed
    together in one batch; returns each result or exception."""
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with writer_held(audit, len(calls)):
        for t in threads:
            t.start()
    for t in threads:
        t.join(10)
    return results


def test_a_claim_appends_only_for_a_key_not_yet_taken(audit: AuditService) -> None:
    keys = _Keys(taken=("old",))
    first = audit.record_if(Claim(keys, "k1"), "client:p", "exchange.accepted", "m1")
    assert first is not None
    assert audit.record_if(Claim(keys, "k1"), "client:p", "exchange.accepted", "m1-again") is None
    assert audit.record_if(Claim(keys, "old"), "client:p", "exchange.accepted", "m0") is None
    assert [e.subject for e in audit.entries(0, audit.size())] == ["m1"]


def test_claims_of_one_batch_take_one_call_and_a_key_goes_to_one_caller(audit: AuditService) -> None:
    keys = _Keys(taken=("old",))

    def claim(key: str, subject: str) -> Callable[[], object]:
        return lambda: audit.record_if(Claim(keys, key), "client:p", "exchange.accepted", subject)

    results = _in_one_batch(
        audit, [claim("a", "a1"), claim("b", "b1"), claim("a", "a2"), claim("c", "c1"), claim("old", "o1")]
    )
    assert len(keys.calls) == 1 and sorted(keys.calls[0]) == ["a", "b", "c", "old"]  # "a" offered once
    accepted = {
        subject for subject, seq in zip(["a1", "b1", "a2", "c1", "o1"], results, strict=True) if seq is not None
    }
    assert accepted in ({"a1", "b1", "c1"}, {"a2", "b1", "c1"})
    assert all(isinstance(r, int) or r is None for r in results)
    logged = [e.subject for e in audit.entries(0, audit.size())]
    audit.checkpoint_now()
    assert sorted(logged) == sorted(["h", *accepted])
    assert audit.verify().ok


def test_a_failing_claim_fails_its_own_callers_only(audit: AuditService) -> None:
    broken = _Keys(fail=ValueError("claim store broken"))
    results = _in_one_batch(
        audit,
        [
            lambda: audit.record_if(Claim(broken, "x"), "client:p", "exchange.accepted", "x1"),
            lambda: audit.record("client:p", "signature.created", "s1"),
            lambda: audit.record_if(Claim(broken, "y"), "client:p", "exchange.accepted", "y1"),
        ],
    )
    assert isinstance(results[0], ValueError) and isinstance(results[2], ValueError)
    assert isinstance(results[1], int)
    assert len(broken.calls) == 1
    assert sorted(e.subject for e in audit.entries(0, audit.size())) == ["h", "s1"]


def test_checkpoints_every_n_entries_and_every_n_seconds(audit: AuditService, clock: FrozenClock) -> None:
    assert audit.ensure_genesis() == "created the audit log bhxh-integrity/audit/test-log"
    assert audit.ensure_genesis() is None
    for i in range(12):
        audit.record("system", "test.event", str(i))
    audit.maybe_checkpoint()
    assert [c.tree_size for c in audit.checkpoints()] == [1, 6, 11]
    assert audit.maybe_checkpoint() == []  # nothing due: same second, fewer than 5 new entries
    clock.advance(61)
    assert [c.tree_size for c in audit.maybe_checkpoint()] == [13]
    clock.advance(61)
    assert audit.maybe_checkpoint() == []  # time passed but nothing new to cover


@pytest.mark.parametrize("outcome", ["rollback", "commit"])
def test_checkpoint_covers_only_committed_entries(audit: AuditService, engine: Engine, outcome: str) -> None:
    audit.record("system", "test.event", "a")
    made: list[StoredCheckpoint] = []
    with engine.connect() as pending:
        tx = pending.begin()
        # A real entry, appended in a transaction that is still open while the checkpoint is asked for.
        assert audit.record("system", "test.event", "pending", conn=pending) == 1
        signer = threading.Thread(target=lambda: made.append(audit.checkpoint_now()))
        signer.start()
        signer.join(0.5)  # let the checkpoint run (or wait) while the entry is uncommitted
        if outcome == "rollback":
            tx.rollback()
        else:
            tx.commit()
    signer.join(30)
    assert not signer.is_alive() and len(made) == 1
    cp = made[0]
    committed = audit.size()
    assert committed == (1 if outcome == "rollback" else 2)
    # Whenever it was signed, the checkpoint covers entries that are in the log, and its root is theirs.
    assert 1 <= cp.tree_size <= committed
    leaves = [audit.entry(seq).leaf() for seq in range(cp.tree_size)]
    assert cp.parsed().root_hash == merkle.root(cp.tree_size, merkle.leaves_resolver(leaves))
    # Nothing signed, stored or published outside the database, covers the rolled-back entry.
    assert all(stored.tree_size <= committed for stored in audit.checkpoints())
    assert all(SignedCheckpoint.from_text(note).size <= committed for note in audit.published_notes())
    assert audit.verify().ok


def test_checkpoint_now_is_idempotent_and_published(audit: AuditService, tmp_path: Path) -> None:
    for i in range(3):
        audit.record("system", "test.event", str(i))
    first = audit.checkpoint_now()
    again = audit.checkpoint_now()
    assert again.id == first.id and len(audit.checkpoints()) == 1
    published = tmp_path / "published"
    assert (published / "checkpoint").read_text() == first.note
    assert [p.read_text() for p in published.glob("checkpoint-*.txt")] == [first.note]
    signed = SignedCheckpoint.from_text(first.note)
    assert signed.checkpoint.origin == "bhxh-integrity/audit/test-log" and signed.size == 3
    key = VerifierKey.from_text(audit.verifier_keys()[0])
    assert signed.verify([key]) == (key,)


def test_rotated_key_signs_from_then_on_and_old_checkpoints_stay_verifiable(
    audit: AuditService, engine: Engine, clock: FrozenClock, tmp_path: Path
) -> None:
    audit.record("system", "test.event", "before")
    old_cp = audit.checkpoint_now()
    audit.close()
    old_key = VerifierKey.from_text(audit.verifier_keys()[0])
    rotated = make_service(engine, clock, tmp_path, retired_keys=[old_key])
    try:
        rotated.record("system", "audit.key.rotated", "audit")
        new_cp = rotated.checkpoint_now()
        keys = [VerifierKey.from_text(k) for k in rotated.verifier_keys()]
        assert len(keys) == 2
        assert SignedCheckpoint.from_text(old_cp.note).verify(keys)[0] == keys[1]
        assert SignedCheckpoint.from_text(new_cp.note).verify(keys)[0] == keys[0]
        report = rotated.verify()
        assert report.ok and report.verified_tree_size == 2
        assert set(rotated.signing_history()) == {k.to_text() for k in keys}
    finally:
        rotated.close()


def test_inclusion_and_consistency_proofs_verify_against_a_signed_checkpoint(audit: AuditService) -> None:
    for i in range(13):
        audit.record("system", "test.event", str(i))
    small = SignedCheckpoint.from_text(audit.checkpoint_now().note)
    for i in range(6):
        audit.record("system", "test.event", f"later-{i}")
    big = SignedCheckpoint.from_text(audit.checkpoint_now().note)
    for seq in (0, 6, 12):
        proof = audit.inclusion_proof(seq, small.size)
        assert proof.root_hash == small.root_hash
        merkle.verify_inclusion(audit.entry(seq).leaf(), seq, small.size, proof.path, small.root_hash)
    consistency = audit.consistency_proof(small.size, big.size)
    merkle.verify_consistency(small.size, big.size, small.root_hash, big.root_hash, consistency.path)
    with pytest.raises(InvalidTreeSize):
        audit.inclusion_proof(19, 19)
    with pytest.raises(InvalidTreeSize):
        audit.inclusion_proof(0, 20)
    with pytest.raises(InvalidTreeSize):
        audit.consistency_proof(5, 20)


def test_erasing_personal_data_keeps_the_log_verifiable(audit: AuditService, engine: Engine) -> None:
    seq = audit.record("user:an", "receipt.issued", "R-1", {}, {"name": "Trần Thị B"})
    audit.record("system", "test.event", "after")
    erased_at = audit.erase_pii(seq, "data subject request 2025-11", approved_by="user:admin")
    assert _count(engine, audit_pii) == 0
    erasure = audit.entry(erased_at)
    # The service writes the marker; the approving admin and the reason are in it.
    assert erasure.action == "audit.pii.erased" and erasure.actor == "system"
    assert erasure.data == {"seq": seq, "approved_by": "user:admin", "reason": "data subject request 2025-11"}
    audit.checkpoint_now()
    report = audit.verify()
    assert report.ok and report.pii_erased == 1 and report.pii_checked == 0
    with pytest.raises(PiiAlreadyErased):
        audit.erase_pii(seq, "again", approved_by="user:admin")
    with pytest.raises(PiiNotFound):
        audit.erase_pii(erased_at, "no personal data there", approved_by="user:admin")
    with pytest.raises(EntryNotFound):
        audit.erase_pii(999, "missing", approved_by="user:admin")
    with pytest.raises(InvalidEntry):
        audit.erase_pii(seq, "  ", approved_by="user:admin")
    assert audit.size() == 3


@pytest.mark.parametrize("approver", ["", "system", "admin", "user:", "user:two words"])
def test_an_erasure_without_an_approving_admin_is_refused_and_erases_nothing(
    audit: AuditService, engine: Engine, approver: str
) -> None:
    seq = audit.record("user:an", "receipt.issued", "R-1", {}, {"name": "Trần Thị B"})
    with pytest.raises(InvalidEntry, match="approving admin"):
        audit.erase_pii(seq, "data subject request", approved_by=approver)
    assert _count(engine, audit_pii) == 1 and audit.size() == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET subject = 'forged' WHERE seq = 0",
        "DELETE FROM audit_entries WHERE seq = 0",
        "UPDATE audit_checkpoints SET tree_size = 0",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_tree_nodes SET idx = 7",
        "DELETE FROM audit_tree_nodes",
        "UPDATE audit_pii SET data = '{}'",
        "DELETE FROM audit_keys",
    ],
)
def test_raw_update_and_delete_on_log_tables_fail(audit: AuditService, engine: Engine, statement: str) -> None:
    audit.record("system", "test.event", "a", {}, {"name": "x"})
    audit.record("system", "test.event", "b")
    audit.checkpoint_now()
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text(statement))
    assert audit.verify().ok


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("table", ["audit_entries", "audit_checkpoints", "audit_tree_nodes", "audit_pii", "audit_keys"])
def test_truncate_of_log_tables_fails_on_postgresql(audit: AuditService, engine: Engine, table: str) -> None:
    audit.record("system", "test.event", "a", {}, {"name": "x"})
    audit.checkpoint_now()
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {table} CASCADE"))
    assert audit.verify().ok


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_guards_fire_even_in_replica_mode_on_postgresql(audit: AuditService, engine: Engine) -> None:
    audit.record("system", "test.event", "a")
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("DELETE FROM audit_entries"))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_service_role_holds_only_select_and_insert_on_postgresql(audit: AuditService, engine: Engine) -> None:
    from integrity.db_grants import apply_service_grants, check_service_role

    role = f"bhxh_audit_svc_{engine.url.database}"[:60]
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        check_service_role(conn, role)
        apply_service_grants(conn, role)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'SET ROLE "{role}"'))
            conn.commit()
            with conn.begin():
                audit.record("system", "test.event", "as service role", {}, {"name": "x"}, conn=conn)
            with conn.begin():
                assert conn.execute(select(func.count()).select_from(audit_entries)).scalar_one() == 1
            for statement in (
                "UPDATE audit_entries SET subject = 'x'",
                "DELETE FROM audit_entries",
                "TRUNCATE audit_entries CASCADE",
                "DROP TRIGGER audit_entries_append_only ON audit_entries",
                "DELETE FROM audit_checkpoints",
            ):
                with pytest.raises(DBAPIError) as caught, conn.begin():
                    conn.execute(text(statement))
                assert "permission denied" in str(caught.value) or "must be owner" in str(caught.value)
            with conn.begin():  # erasure is the one sanctioned removal
                conn.execute(text("DELETE FROM audit_pii"))
            conn.execute(text("RESET ROLE"))
            conn.commit()
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


def test_checkpoint_rows_record_each_signed_size(audit: AuditService, engine: Engine) -> None:
    for i in range(10):
        audit.record("system", "test.event", str(i))
    audit.maybe_checkpoint()
    with engine.connect() as conn:
        sizes = sorted(conn.execute(select(audit_checkpoints.c.tree_size)).scalars())
    assert sizes[-1] == 10 and 5 in sizes


def test_a_fork_cannot_commit_even_when_the_lock_is_bypassed(audit: AuditService, engine: Engine) -> None:
    from audit.entry import build_entry

    for i in range(3):
        audit.record("system", "test.event", str(i))
    first = audit.entry(0)
    # A second successor of entry 0 at the next free seq: a fork of the chain.
    fork = build_entry(
        seq=3, ts=first.ts, actor="system", action="test.fork", subject="x", data={}, pii=None, prev=first.hash
    )
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(
            audit_entries.insert().values(
                seq=3,
                ts=fork.ts,
                actor=fork.actor,
                action=fork.action,
                subject=fork.subject,
                data="{}",
                pii=None,
                prev=fork.prev,
                hash=fork.hash,
            )
        )
    audit.checkpoint_now()
    assert audit.size() == 3 and audit.verify().ok


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_migration_grants_the_configured_service_role_only_select_and_insert(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    import psycopg

    from integrity.db import make_engine
    from integrity.migrate import upgrade

    suffix = uuid.uuid4().hex[:8]
    role, dbname = f"bhxh_svc_{suffix}", f"bhxh_grant_{suffix}"
    base = engine.url.set(database="postgres").render_as_string(hide_password=False).replace("+psycopg", "")
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
        admin.execute(f'CREATE DATABASE "{dbname}"')
    fresh = make_engine(engine.url.set(database=dbname).render_as_string(hide_password=False))
    try:
        monkeypatch.setenv("BHXH_DB_SERVICE_ROLE", role)
        upgrade(fresh)
        with fresh.connect() as conn:

            def can(table: str, privilege: str) -> bool:
                return conn.execute(
                    text("SELECT has_table_privilege(:r, :t, :p)"), {"r": role, "t": table, "p": privilege}
                ).scalar_one()

            for table in ("audit_entries", "audit_checkpoints", "audit_tree_nodes", "audit_keys"):
                assert can(table, "SELECT") and can(table, "INSERT")
                assert not any(can(table, p) for p in ("UPDATE", "DELETE", "TRUNCATE"))
            assert can("audit_pii", "DELETE") and not can("audit_pii", "UPDATE") and not can("audit_pii", "TRUNCATE")
            # Findings of a rollback are added and acknowledged, never deleted.
            assert all(can("audit_rollbacks", p) for p in ("SELECT", "INSERT", "UPDATE"))
            assert not can("audit_rollbacks", "DELETE") and not can("audit_rollbacks", "TRUNCATE")
    finally:
        fresh.dispose()
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
