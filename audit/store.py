"""Storage of the log on a SQLAlchemy Core connection the caller opened (SQLite or PostgreSQL).

Appends are serialised in the database, never in process memory, so any number of processes
or instances share one chain: SQLite's write lock is taken by the engine's ``BEGIN IMMEDIATE``;
on PostgreSQL ``pg_advisory_xact_lock`` is taken in the same transaction and released by its
commit or rollback. ``PRIMARY KEY(seq)`` and ``UNIQUE(prev)`` are the last line: a fork cannot
commit even if the lock were bypassed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, text

from audit.checkpoint import SignedCheckpoint
from audit.entry import GENESIS_PREV, TS_FORMAT, Entry, build_entry, format_ts, validate_event
from audit.erasure import ERASED_ACTION, honoured_seq
from audit.errors import EntryNotFound, InvalidTreeSize, PiiAlreadyErased, PiiNotFound
from audit.merkle import CompactRange, Resolver, Subtree, range_subtrees
from audit.merkle import root as merkle_root
from audit.pii import PersonalData
from audit.tables import audit_checkpoints, audit_entries, audit_keys, audit_pii

# pg_advisory_xact_lock key: ASCII "bhxhaudt" as a signed 64-bit integer.
APPEND_LOCK_KEY = int.from_bytes(b"bhxhaudt", "big", signed=True)
READ_BATCH = 5_000


@dataclass(frozen=True)
class PendingEvent:
    """A validated event waiting for its place in the chain."""

    actor: str
    action: str
    subject: str
    data: Mapping[str, Any]
    data_jcs: bytes
    personal: PersonalData | None = None

    @classmethod
    def of(cls, actor: str, action: str, subject: str, data: Mapping[str, Any] | None = None) -> PendingEvent:
        """Validate an event without personal data (raises InvalidEntry)."""
        plain, encoded = validate_event(actor, action, subject, data)
        return cls(actor, action, subject, plain, encoded)


@dataclass(frozen=True)
class Head:
    size: int
    last_hash: str


@dataclass(frozen=True)
class StoredCheckpoint:
    id: int
    tree_size: int
    root_hash: str
    note: str
    signed_at: datetime

    def parsed(self) -> SignedCheckpoint:
        return SignedCheckpoint.from_text(self.note)


@dataclass(frozen=True)
class StoredPii:
    seq: int
    salt: bytes
    data: str  # JCS text

    def personal(self) -> Any:
        return json.loads(self.data)


def lock_appends(conn: Connection) -> None:
    """Serialise appends for the rest of ``conn``'s transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})


def read_head(conn: Connection) -> Head:
    row = conn.execute(
        select(audit_entries.c.seq, audit_entries.c.hash).order_by(audit_entries.c.seq.desc()).limit(1)
    ).first()
    if row is None:
        return Head(0, GENESIS_PREV)
    return Head(row.seq + 1, row.hash)


def resolver(conn: Connection) -> Resolver:
    """Reads stored perfect subtrees: level 0 from the entries, higher levels from the nodes,
    in one indexed query each (O(log n) primary-key lookups, never a scan of the log)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"

    def _resolve(subtrees: Sequence[Subtree]) -> Mapping[Subtree, bytes]:
        found: dict[Subtree, bytes] = {}
        leaves = [s.index for s in subtrees if s.level == 0]
        nodes = [s for s in subtrees if s.level > 0]
        if leaves:
            sql = f"SELECT seq, hash FROM audit_entries WHERE seq IN ({', '.join([mark] * len(leaves))})"
            for seq, digest in conn.exec_driver_sql(sql, tuple(leaves)):
                found[Subtree(0, seq)] = bytes.fromhex(digest)
        if nodes:
            # An OR of primary-key equalities: both back ends answer it with index lookups,
            # which a row-value IN list does not guarantee (SQLite scanned the table).
            where = " OR ".join([f"(level = {mark} AND idx = {mark})"] * len(nodes))
            params = tuple(v for s in nodes for v in (s.level, s.index))
            for level, idx, digest in conn.exec_driver_sql(
                f"SELECT level, idx, hash FROM audit_tree_nodes WHERE {where}", params
            ):
                found[Subtree(level, idx)] = bytes(digest)
        return found

    return _resolve


class FrontierCache:
    """A writer's copy of the tree's right edge, reused while the head it was built on is still
    the head (another process appending changes the head, and the edge is read again)."""

    def __init__(self) -> None:
        self._current: tuple[Head, CompactRange] | None = None
        self._staged: tuple[Head, CompactRange] | None = None

    def lookup(self, head: Head) -> CompactRange | None:
        if self._current is not None and self._current[0] == head:
            return self._current[1].copy()
        return None

    def stage(self, head: Head, tree: CompactRange) -> None:
        self._staged = (head, tree)

    def committed(self) -> None:
        self._current, self._staged = self._staged, None

    def discard(self) -> None:
        self._current = self._staged = None


# The append path is the hot path (every audited action runs it): it sends plain SQL with
# positional parameters to the driver, measured 2-3x faster than Core's per-row parameter
# processing; every other read and write here uses SQLAlchemy Core.
_HEAD_SQL = "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1"
_INSERT_ENTRY = "INSERT INTO audit_entries (seq, ts, actor, action, subject, data, pii, prev, hash) VALUES ({})"
_INSERT_NODE = "INSERT INTO audit_tree_nodes (level, idx, hash) VALUES ({})"
_INSERT_PII = "INSERT INTO audit_pii (seq, salt, data) VALUES ({})"


_MAX_ROWS_PER_STATEMENT = 1_000


def _insert_rows(conn: Connection, template: str, columns: int, rows: list[tuple[Any, ...]]) -> None:
    if conn.dialect.paramstyle == "qmark":
        # SQLite is in-process: executemany is one prepared statement stepped per row.
        conn.exec_driver_sql(template.format(", ".join(["?"] * columns)), rows)
        return
    # PostgreSQL: one multi-row VALUES statement per chunk, one round trip instead of one per row.
    group = "(" + ", ".join(["%s"] * columns) + ")"
    for start in range(0, len(rows), _MAX_ROWS_PER_STATEMENT):
        chunk = rows[start : start + _MAX_ROWS_PER_STATEMENT]
        sql = template.replace("({})", ", ".join([group] * len(chunk)))
        conn.exec_driver_sql(sql, tuple(value for row in chunk for value in row))


def append(
    conn: Connection,
    events: Sequence[PendingEvent],
    clock: Callable[[], datetime],
    *,
    cache: FrontierCache | None = None,
) -> list[Entry]:
    """Append ``events`` in order inside ``conn``'s transaction; returns the new entries.

    The caller commits; until then nothing is visible and a rollback leaves no trace. With a
    ``cache`` the caller must call ``cache.committed()`` after the commit, ``discard()`` on failure.
    """
    lock_appends(conn)
    row = conn.exec_driver_sql(_HEAD_SQL).first()
    head = Head(0, GENESIS_PREV) if row is None else Head(row[0] + 1, row[1])
    tree = cache.lookup(head) if cache is not None else None
    if tree is None:
        tree = _compact_range(conn, head.size)
    prev = head.last_hash
    entries: list[Entry] = []
    entry_rows: list[tuple[Any, ...]] = []
    node_rows: list[tuple[Any, ...]] = []
    pii_rows: list[tuple[Any, ...]] = []
    for offset, event in enumerate(events):
        seq = head.size + offset
        entry = build_entry(
            seq=seq,
            ts=format_ts(clock()),
            actor=event.actor,
            action=event.action,
            subject=event.subject,
            data=event.data,
            pii=event.personal.commitment if event.personal else None,
            prev=prev,
            data_jcs=event.data_jcs,
        )
        prev = entry.hash
        entries.append(entry)
        entry_rows.append(
            (
                seq,
                entry.ts,
                entry.actor,
                entry.action,
                entry.subject,
                event.data_jcs.decode(),
                entry.pii,
                entry.prev,
                entry.hash,
            )
        )
        for sub, digest in tree.append(bytes.fromhex(entry.hash)):
            node_rows.append((sub.level, sub.index, digest))
        if event.personal is not None:
            pii_rows.append((seq, event.personal.salt, event.personal.canonical.decode()))
    if entry_rows:
        _insert_rows(conn, _INSERT_ENTRY, 9, entry_rows)
    if node_rows:
        _insert_rows(conn, _INSERT_NODE, 3, node_rows)
    if pii_rows:
        _insert_rows(conn, _INSERT_PII, 3, pii_rows)
    if cache is not None and entries:
        cache.stage(Head(tree.size, prev), tree)
    return entries


def _compact_range(conn: Connection, size: int) -> CompactRange:
    if size == 0:
        return CompactRange()
    subtrees = range_subtrees(0, size)
    found = resolver(conn)(subtrees)
    try:
        return CompactRange(size, [found[s] for s in subtrees])
    except KeyError as exc:
        raise InvalidTreeSize(f"stored tree lacks subtree {exc} of size {size}") from None


def first_entry_time(conn: Connection) -> datetime | None:
    ts = conn.execute(select(audit_entries.c.ts).where(audit_entries.c.seq == 0)).scalar()
    if ts is None:
        return None
    try:
        return datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def tree_size(conn: Connection) -> int:
    return read_head(conn).size


def root_at(conn: Connection, size: int) -> bytes:
    return merkle_root(size, resolver(conn))


def _entry(row: Any) -> Entry:
    return Entry(row.seq, row.ts, row.actor, row.action, row.subject, json.loads(row.data), row.pii, row.prev, row.hash)


def get_entry(conn: Connection, seq: int) -> Entry:
    row = conn.execute(select(audit_entries).where(audit_entries.c.seq == seq)).first()
    if row is None:
        raise EntryNotFound(f"no audit entry {seq}")
    return _entry(row)


def iter_entries(
    conn: Connection, start: int = 0, end: int | None = None, *, with_pii: bool = False, batch: int = READ_BATCH
) -> Iterator[tuple[Entry, StoredPii | None]]:
    """Entries with seq in [start, end) in seq order, read in pages (constant memory)."""
    cursor = start
    e, p = audit_entries.c, audit_pii.c
    columns: list[Any] = [audit_entries]
    source: Any = audit_entries
    if with_pii:
        columns += [p.salt.label("pii_salt"), p.data.label("pii_data")]
        source = audit_entries.outerjoin(audit_pii, p.seq == e.seq)
    while True:
        query = select(*columns).select_from(source).where(e.seq >= cursor).order_by(e.seq).limit(batch)
        if end is not None:
            query = query.where(e.seq < end)
        rows = conn.execute(query).all()
        for row in rows:
            pii = None
            if with_pii and row.pii_salt is not None:
                pii = StoredPii(row.seq, bytes(row.pii_salt), row.pii_data)
            yield _entry(row), pii
        if len(rows) < batch:
            return
        cursor = rows[-1].seq + 1


def iter_rows(
    conn: Connection, *, with_pii: bool = False, batch: int = READ_BATCH, start: int = 0
) -> Iterator[tuple[tuple[Any, ...], StoredPii | None]]:
    """Every entry from seq ``start`` on as its raw columns (``data`` as stored text), in seq
    order, in pages: the verifier's input, without building Entry objects or parsing ``data``."""
    columns = "e.seq, e.ts, e.actor, e.action, e.subject, e.data, e.pii, e.prev, e.hash"
    source = "audit_entries e"
    if with_pii:
        columns += ", p.salt, p.data"
        source += " LEFT OUTER JOIN audit_pii p ON p.seq = e.seq"
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"SELECT {columns} FROM {source} WHERE e.seq >= {mark} ORDER BY e.seq LIMIT {int(batch)}"
    cursor = start
    while True:
        rows = conn.exec_driver_sql(sql, (cursor,)).all()
        for row in rows:
            personal = StoredPii(row[0], bytes(row[9]), row[10]) if with_pii and row[9] is not None else None
            yield tuple(row[:9]), personal
        if len(rows) < batch:
            return
        cursor = rows[-1][0] + 1


def erased_seqs(conn: Connection) -> set[int]:
    """Sequence numbers whose personal data was erased: those named by an erasure marker the
    verifier honours (``audit.erasure``); any other ``audit.pii.erased`` entry counts for nothing."""
    t = audit_entries.c
    rows = conn.execute(select(t.seq, t.actor, t.action, t.data).where(t.action == ERASED_ACTION))
    out = set()
    for row in rows:
        try:
            data = json.loads(row.data)
        except ValueError:
            continue  # unreadable data: the verifier reports the entry itself
        seq = honoured_seq(row.seq, row.actor, row.action, data)
        if seq is not None:
            out.add(seq)
    return out


def get_pii(conn: Connection, seq: int) -> StoredPii:
    row = conn.execute(select(audit_pii).where(audit_pii.c.seq == seq)).first()
    if row is None:
        raise PiiNotFound(f"entry {seq} has no personal data stored")
    return StoredPii(row.seq, bytes(row.salt), row.data)


def delete_pii(conn: Connection, seq: int) -> None:
    """Erase the salt and personal data of entry ``seq`` (the caller logs the erasure)."""
    entry = get_entry(conn, seq)
    if entry.pii is None:
        raise PiiNotFound(f"entry {seq} carries no personal data")
    deleted = conn.execute(audit_pii.delete().where(audit_pii.c.seq == seq)).rowcount
    if deleted != 1:
        raise PiiAlreadyErased(f"the personal data of entry {seq} was already erased")


def insert_checkpoint(conn: Connection, signed: SignedCheckpoint, signed_at: datetime) -> StoredCheckpoint:
    row = conn.execute(
        insert(audit_checkpoints)
        .values(
            tree_size=signed.size,
            root_hash=signed.root_hash.hex(),
            note=signed.to_text(),
            signed_at=signed_at.astimezone(UTC),
        )
        .returning(audit_checkpoints.c.id)
    ).one()
    return StoredCheckpoint(row.id, signed.size, signed.root_hash.hex(), signed.to_text(), _aware(signed_at))


def _aware(moment: datetime) -> datetime:
    # SQLite keeps no offset: every timestamp is written in UTC, so naive means UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(row.id, row.tree_size, row.root_hash, row.note, _aware(row.signed_at))


def has_action(conn: Connection, action: str) -> bool:
    """Whether any entry records ``action`` (a scan: for rare set-up checks, not hot paths)."""
    return (
        conn.execute(select(audit_entries.c.seq).where(audit_entries.c.action == action).limit(1)).first() is not None
    )


def latest_checkpoint(conn: Connection) -> StoredCheckpoint | None:
    c = audit_checkpoints.c
    row = conn.execute(select(audit_checkpoints).order_by(c.tree_size.desc(), c.id.desc()).limit(1)).first()
    return _checkpoint(row) if row else None


def iter_checkpoints(conn: Connection) -> Iterator[StoredCheckpoint]:
    c = audit_checkpoints.c
    for row in conn.execute(select(audit_checkpoints).order_by(c.tree_size, c.id)):
        yield _checkpoint(row)


def count_checkpoints(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(audit_checkpoints)).scalar_one()


def register_key(conn: Connection, vkey: str, at: datetime) -> bool:
    """Remember a verifier key that signs checkpoints; returns True when it is new."""
    if conn.execute(select(audit_keys.c.vkey).where(audit_keys.c.vkey == vkey)).first():
        return False
    conn.execute(insert(audit_keys).values(vkey=vkey, first_used_at=at.astimezone(UTC)))
    return True


def known_keys(conn: Connection) -> list[str]:
    return list(conn.execute(select(audit_keys.c.vkey).order_by(audit_keys.c.first_used_at)).scalars())
