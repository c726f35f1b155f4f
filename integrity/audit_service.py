"""The audit log as the rest of the service sees it: one ``record`` function, checkpoints,
reads, proofs, export, verification and erasure of personal data.

Appends without a caller's connection go through a group committer: one writer thread drains
a queue of waiting callers into ONE transaction and ONE fsync, and each caller returns only
after that commit (an acknowledged entry survives kill -9). Appends with ``conn`` ride in the
caller's transaction, so "do X, then log" commits or rolls back as one unit. Either way the
order of the chain is decided in the database under its lock (audit.store), never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import export as audit_export
from audit import merkle, pii, store, timestamp_store
from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint, VerifierKey, origin_for
from audit.entry import Entry, validate_event
from audit.erasure import ERASED_ACTION, SERVICE_ACTOR, marker_data, valid_approver, valid_reason
from audit.errors import AuditError, AuditUnavailable, EntryNotFound, InvalidEntry, InvalidTreeSize, NoCheckpoint
from audit.policy import Policy
from audit.store import PendingEvent, StoredCheckpoint
from audit.verify import VerificationReport
from audit.verify_fast import FastChainVerifier
from audit.witness_store import cosigned_notes
from integrity.checkpoint_timestamps import CheckpointTimestamping
from integrity.clock import Clock
from integrity.db import READ_ONLY
from integrity.errors import ConfigurationError
from integrity.reports import ReportContext
from integrity.witnessing import Witnessing

MAX_BATCH = 1_000
# How often the writer wakes, with nothing to write, to sign a time-due checkpoint.
TICK_SECONDS = 1.0
# Longest a batch waits for callers that are about to enqueue (bounded added latency).
GATHER_SECONDS = 0.002
MAX_ENTRIES_PER_READ = 1_000
# How often a waiting caller checks that the writer thread is still alive.
WATCH_SECONDS = 1.0
_STOP = object()


@dataclass(frozen=True)
class Claim:
    """A guard that claims a unique ``key`` (a replay-guard nonce): the entry is appended only
    if the key was new. The writer hands all claims of one ``claim_many`` in a batch to ONE
    call, which inserts them in one statement and returns the keys that were new: a statement
    per caller was most of the writer's time under exchange load (bench/bench_exchange.py).
    Within a batch the first caller of a key gets it and later ones are refused, as if each
    had run alone, one after the other."""

    claim_many: Callable[[Connection, Sequence[Claim]], Collection[Hashable]]
    key: Hashable
    data: Any = None


# Runs inside the group-commit transaction before a request's entries are appended; False
# (or a claim on a key already taken) means "append nothing for this request", e.g. a
# replayed nonce. No commit inside.
Guard = Callable[[Connection], bool] | Claim


class _Request:
    """One waiting caller: its events (all appended, or none) and how it is woken. A thread
    waits on ``done``, a plain lock held until the writer releases it (cheaper than an Event
    when 16 callers wait on each commit); a coroutine awaits ``future`` on its ``loop``."""

    __slots__ = ("done", "error", "events", "future", "guard", "loop", "refused", "seqs")

    def __init__(
        self,
        events: Sequence[PendingEvent],
        guard: Guard | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.events = events
        self.guard = guard
        self.loop = loop
        self.future: asyncio.Future[None] | None = None
        self.done: threading.Lock | None = None
        if loop is None:
            self.done = threading.Lock()
            self.done.acquire()
        else:
            self.future = loop.create_future()
        self.seqs: list[int] = []
        self.refused = False
        self.error: BaseException | None = None

    def result(self) -> list[int] | None:
        if self.error is not None:
            raise self.error
        return None if self.refused else self.seqs


def _settle(requests: Sequence[_Request]) -> None:
    """On the event loop: wake the coroutines of one committed batch."""
    for request in requests:
        if request.future is not None and not request.future.done():
            request.future.set_result(None)


@dataclass(frozen=True)
class InclusionProof:
    seq: int
    tree_size: int
    leaf_hash: bytes
    root_hash: bytes
    path: tuple[bytes, ...]


@dataclass(frozen=True)
class ConsistencyProof:
    first: int
    second: int
    first_root: bytes
    second_root: bytes
    path: tuple[bytes, ...]


class AuditService:
    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        log_id: str,
        checkpoint_key: Ed25519PrivateKey,
        checkpoint_key_name: str,
        checkpoint_every: int,
        checkpoint_seconds: int,
        publish_dir: Path | None = None,
        cosigners: Sequence[NoteSigner] = (),
        retired_keys: Sequence[VerifierKey] = (),
        max_batch: int = MAX_BATCH,
    ) -> None:
        if checkpoint_every < 1 or checkpoint_seconds < 1 or max_batch < 1:
            raise ConfigurationError("checkpoint_every, checkpoint_seconds and max_batch must be at least 1")
        self.engine = engine
        self.clock = clock
        self.log_id = log_id
        self.origin = origin_for(log_id)
        self.signer = NoteSigner(checkpoint_key_name, checkpoint_key)
        self.cosigners = tuple(cosigners)
        # Keys that signed earlier checkpoints (before a rotation): they verify, never sign.
        self.retired_keys = tuple(retired_keys)
        # Set by the wiring when BHXH_WITNESSES is configured: told of each checkpoint after its
        # commit (it returns at once; the witnesses are asked on its own thread).
        self.witnessing: Witnessing | None = None
        # Set by the wiring when BHXH_TSA_URL is configured: told of each checkpoint after its
        # commit, it asks the TSA for an RFC 3161 time-stamp on its own thread.
        self.timestamping: CheckpointTimestamping | None = None
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.publish_dir = publish_dir
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._start_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._closed = False
        # Hints only (another process may have signed since): the database decides.
        self._hint_checkpoint_size = -1
        self._hint_checkpoint_at: datetime | None = None
        self._frontier = store.FrontierCache()
        self._waiters = 0  # callers waiting on a commit: the writer gathers up to this many per batch
        self._waiters_lock = threading.Lock()

    # ------------------------------------------------------------------ append

    def record(
        self,
        actor: str,
        action: str,
        subject: str,
        data: dict | None = None,
        pii: dict | None = None,
        *,
        conn: Connection | None = None,
    ) -> int:
        """Append one entry; returns its ``seq``. Raises InvalidEntry (nothing written) on a bad
        actor, action, subject, data or personal data.

        Inside an open transaction always pass it as ``conn``: on SQLite that transaction holds
        the write lock, so an append in another transaction would wait for it.
        """
        event = self._prepare(actor, action, subject, data, pii)
        if conn is not None:
            self._ensure_writer()
            return store.append(conn, [event], self.clock)[0].seq
        seqs = self._wait(_Request([event]))
        assert seqs is not None  # only a guarded request is ever refused
        return seqs[0]

    async def record_async(
        self, actor: str, action: str, subject: str, data: dict | None = None, pii: dict | None = None
    ) -> int:
        """``record`` for a coroutine: it awaits the group commit instead of blocking a thread,
        so a request handler can log without a worker-thread hop."""
        event = self._prepare(actor, action, subject, data, pii)
        seqs = await self._wait_async(_Request([event], loop=asyncio.get_running_loop()))
        assert seqs is not None
        return seqs[0]

    def record_many(
        self,
        events: Sequence[tuple[str, str, str, dict | None, dict | None]],
        *,
        conn: Connection | None = None,
    ) -> list[int]:
        """Append ``(actor, action, subject, data, pii)`` events in order and contiguously,
        all or none (batch signing); returns their seqs. Every event is validated first, so a
        bad one writes nothing. Without ``conn`` they share the next group commit."""
        prepared = [self._prepare(*event) for event in events]
        if conn is not None:
            self._ensure_writer()
            return [entry.seq for entry in store.append(conn, prepared, self.clock)]
        seqs = self._wait(_Request(prepared))
        assert seqs is not None
        return seqs

    async def record_many_async(self, events: Sequence[tuple[str, str, str, dict | None, dict | None]]) -> list[int]:
        prepared = [self._prepare(*event) for event in events]
        seqs = await self._wait_async(_Request(prepared, loop=asyncio.get_running_loop()))
        assert seqs is not None
        return seqs

    def record_if(
        self, guard: Guard, actor: str, action: str, subject: str, data: dict | None = None, pii: dict | None = None
    ) -> int | None:
        """Run ``guard`` and append the entry in ONE transaction shared with concurrent callers:
        the entry is appended only if the guard returns True (its seq is returned), else None.
        Both are durable together, so "remember X, then log it" costs one shared fsync."""
        event = self._prepare(actor, action, subject, data, pii)
        seqs = self._wait(_Request([event], guard))
        return None if seqs is None else seqs[0]

    async def record_if_async(
        self, guard: Guard, actor: str, action: str, subject: str, data: dict | None = None, pii: dict | None = None
    ) -> int | None:
        event = self._prepare(actor, action, subject, data, pii)
        seqs = await self._wait_async(_Request([event], guard, loop=asyncio.get_running_loop()))
        return None if seqs is None else seqs[0]

    def _prepare(
        self, actor: str, action: str, subject: str, data: Mapping[str, Any] | None, personal: Mapping[str, Any] | None
    ) -> PendingEvent:
        plain, encoded = validate_event(actor, action, subject, data)
        sealed = pii.seal(personal) if personal is not None else None
        return PendingEvent(actor, action, subject, plain, encoded, sealed)

    def _wait(self, request: _Request) -> list[int] | None:
        assert request.done is not None
        self._enqueue(request)
        try:
            while not request.done.acquire(timeout=WATCH_SECONDS):
                self._watch_writer()
        finally:
            with self._waiters_lock:
                self._waiters -= 1
        return request.result()

    async def _wait_async(self, request: _Request) -> list[int] | None:
        assert request.future is not None
        self._enqueue(request)
        try:
            while True:
                # asyncio.wait never cancels the future: a timeout only means "look at the writer".
                done, _ = await asyncio.wait({request.future}, timeout=WATCH_SECONDS)
                if done:
                    break
                self._watch_writer()
        finally:
            with self._waiters_lock:
                self._waiters -= 1
        return request.result()

    def _enqueue(self, request: _Request) -> None:
        self._ensure_writer()
        with self._waiters_lock:
            self._waiters += 1
        self._queue.put(request)

    def _watch_writer(self) -> None:
        """Still waiting: make sure a writer is there to serve the queue (restart one that
        died; a closed service that has stopped its writer never will)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            if self._closed:
                raise AuditUnavailable("the audit service was closed before the entry was written")
            self._ensure_writer()

    def _ensure_writer(self) -> None:
        if self._closed:
            raise AuditUnavailable("the audit service is closed")
        thread = self._thread
        if thread is not None and thread.is_alive() and self._thread_pid == os.getpid():
            return
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive() and self._thread_pid == os.getpid():
                return
            if self._thread_pid != os.getpid():
                self._queue = queue.SimpleQueue()  # a forked child must not share the parent's queue
            self._thread = threading.Thread(target=self._writer_loop, name="audit-group-commit", daemon=True)
            self._thread_pid = os.getpid()
            self._thread.start()

    def _writer_loop(self) -> None:
        tick = min(TICK_SECONDS, float(self.checkpoint_seconds))
        while True:
            try:
                first = self._queue.get(timeout=tick)
            except queue.Empty:
                self._checkpoint_if_due()
                continue
            if first is _STOP:
                return
            batch = [first]
            stop = False
            deadline = time.monotonic() + GATHER_SECONDS
            events = len(first.events)
            while events < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    # Callers just released by the last commit are still waking up: wait for
                    # them (briefly) so that they share this fsync instead of the next one.
                    remaining = deadline - time.monotonic()
                    if len(batch) >= self._waiters or remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                events += len(item.events)
            size = self._commit_batch(batch)
            if size:
                self._checkpoint_if_due(size)
            if stop:
                return

    def _commit_batch(self, batch: list[_Request]) -> int:
        """Append and commit one batch; returns the tree size after it (0 when nothing was
        appended or the commit failed)."""
        try:
            with self.engine.begin() as conn:
                self._claim(batch, conn)
                accepted = [r for r in batch if r.guard is None or self._passes(r, conn)]
                events = [event for r in accepted for event in r.events]
                entries = store.append(conn, events, self.clock, cache=self._frontier) if events else []
            self._frontier.committed()
            at = 0
            for request in accepted:
                request.seqs = [entry.seq for entry in entries[at : at + len(request.events)]]
                at += len(request.events)
            return entries[-1].seq + 1 if entries else 0
        except (SQLAlchemyError, AuditError, OSError) as exc:
            self._frontier.discard()
            for request in batch:
                request.error = exc
            return 0
        finally:
            # Never leave a caller waiting, whatever happened above.
            waiting: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
            for request in batch:
                if not request.seqs and not request.refused and request.error is None:
                    request.error = AuditUnavailable("the audit writer failed")
                if request.loop is None:
                    assert request.done is not None
                    request.done.release()
                else:
                    waiting.setdefault(request.loop, []).append(request)
            for loop, requests in waiting.items():
                # A closed loop raises RuntimeError: nobody is waiting there any more.
                with contextlib.suppress(RuntimeError):
                    # One wake-up of each loop per batch, not one per caller.
                    loop.call_soon_threadsafe(_settle, requests)

    @staticmethod
    def _claim(batch: Sequence[_Request], conn: Connection) -> None:
        """Settle every claim of the batch (see ``Claim``): one call per kind of claim."""
        kinds: dict[Callable[..., Collection[Hashable]], dict[Hashable, _Request]] = {}
        for request in batch:
            claim = request.guard
            if isinstance(claim, Claim):
                first = kinds.setdefault(claim.claim_many, {})
                if claim.key in first:
                    request.refused = True  # the same key twice in one batch: the later one is a replay
                else:
                    first[claim.key] = request
        for claim_many, first in kinds.items():
            try:
                new = set(claim_many(conn, [cast(Claim, r.guard) for r in first.values()]))
            except SQLAlchemyError:
                raise  # the transaction may be unusable: the whole batch fails, and says so
            except Exception as exc:
                for request in first.values():
                    request.error = exc
                continue
            for key, request in first.items():
                request.refused = key not in new

    @staticmethod
    def _passes(request: _Request, conn: Connection) -> bool:
        if isinstance(request.guard, Claim):
            return not request.refused and request.error is None  # settled by _claim
        assert request.guard is not None
        try:
            passed = bool(request.guard(conn))
        except SQLAlchemyError:
            raise  # the transaction may be unusable: the whole batch fails, and says so
        except Exception as exc:
            request.error = exc
            return False
        request.refused = not passed
        return passed

    def close(self) -> None:
        """Finish queued appends and stop the writer thread (idempotent)."""
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive() and self._thread_pid == os.getpid():
            self._queue.put(_STOP)
            thread.join()
        self._thread = None

    # ------------------------------------------------------------- checkpoints

    def ensure_genesis(self) -> str | None:
        """``init`` step: create the log (an ``audit.log.created`` entry naming the log and its
        key) and sign its first checkpoint, unless both exist. Other start-up work (a key import)
        may already have appended entries: the log is still created, after them."""
        with self.engine.connect() as conn:
            created = store.has_action(conn, "audit.log.created")
            checkpointed = store.latest_checkpoint(conn) is not None
        if created and checkpointed:
            return None
        if not created:
            self.record(
                "system",
                "audit.log.created",
                self.origin,
                {"log_id": self.log_id, "key": self.signer.verifier.to_text()},
            )
        self.checkpoint_now()
        return (
            f"created the audit log {self.origin}" if not created else f"signed the first checkpoint of {self.origin}"
        )

    def checkpoint_now(self) -> StoredCheckpoint:
        """Sign a checkpoint over every committed entry now (``audit checkpoint``); returns the
        latest one unchanged when it already covers the whole log with the current key."""
        with self._checkpoint_lock, self.engine.begin() as conn:
            store.lock_appends(conn)
            size = store.tree_size(conn)
            latest = store.latest_checkpoint(conn)
            if latest is not None and latest.tree_size == size and self._signed_by_current_key(latest):
                return latest
            signed = self._sign(conn, size)
        self._publish([signed])
        self._announce()
        return signed

    def maybe_checkpoint(self) -> list[StoredCheckpoint]:
        """Sign what is due: one checkpoint at every multiple of ``checkpoint_every`` entries
        past the last one, and one at the current size when ``checkpoint_seconds`` have passed
        since the last. Only committed entries are covered (this runs in its own transaction)."""
        with self._checkpoint_lock, self.engine.begin() as conn:
            store.lock_appends(conn)
            size = store.tree_size(conn)
            latest = store.latest_checkpoint(conn)
            last_size = latest.tree_size if latest else 0
            now = self.clock()
            targets = list(range(last_size + self.checkpoint_every, size + 1, self.checkpoint_every))
            # A log without checkpoints counts its age from its first entry.
            since = latest.signed_at if latest else store.first_entry_time(conn)
            overdue = since is not None and now - since >= timedelta(seconds=self.checkpoint_seconds)
            if size > last_size and overdue and size not in targets:
                targets.append(size)
            signed = [self._sign(conn, target) for target in targets]
            final = signed[-1] if signed else latest
            self._hint_checkpoint_size = final.tree_size if final else 0
            self._hint_checkpoint_at = final.signed_at if final else since
        self._publish(signed)
        if signed:
            self._announce()
        return signed

    def _announce(self) -> None:
        if self.witnessing is not None:
            self.witnessing.checkpoint_signed()
        if self.timestamping is not None:
            self.timestamping.checkpoint_signed()

    def _checkpoint_if_due(self, size: int | None = None) -> None:
        """The writer's cheap pre-check, so an idle tick or a batch rarely opens a transaction."""
        try:
            if self._hint_checkpoint_size >= 0:
                if size is None:
                    with self.engine.connect() as conn:
                        size = store.tree_size(conn)
                grown = size - self._hint_checkpoint_size
                at = self._hint_checkpoint_at
                elapsed = at is None or self.clock() - at >= timedelta(seconds=self.checkpoint_seconds)
                if grown <= 0 or (grown < self.checkpoint_every and not elapsed):
                    return
            self.maybe_checkpoint()
        except (SQLAlchemyError, AuditError, OSError):
            # A checkpoint that cannot be signed now is signed at the next tick; appends go on.
            return

    def _signed_by_current_key(self, stored: StoredCheckpoint) -> bool:
        kid = self.signer.verifier.key_id
        return any(sig.key_id == kid and sig.name == self.signer.name for sig in stored.parsed().note.signatures)

    def _sign(self, conn: Connection, size: int) -> StoredCheckpoint:
        now = self.clock()
        for signer in (self.signer, *self.cosigners):
            store.register_key(conn, signer.verifier.to_text(), now)
        body = Checkpoint(self.origin, size, store.root_at(conn, size))
        signed = SignedCheckpoint.sign(body, [self.signer, *self.cosigners])
        return store.insert_checkpoint(conn, signed, now)

    def _publish(self, checkpoints: Sequence[StoredCheckpoint]) -> None:
        """Write each checkpoint outside the database: the anchor against a rewritten log."""
        if self.publish_dir is None or not checkpoints:
            return
        self.publish_dir.mkdir(parents=True, exist_ok=True)
        for cp in checkpoints:
            _atomic_write(self.publish_dir / f"checkpoint-{cp.tree_size:012d}-{cp.id}.txt", cp.note)
        _atomic_write(self.publish_dir / "checkpoint", checkpoints[-1].note)

    def published_notes(self) -> list[str]:
        """The checkpoints written to the publish directory (empty when none is configured)."""
        if self.publish_dir is None or not self.publish_dir.is_dir():
            return []
        notes = []
        for path in sorted(self.publish_dir.glob("checkpoint-*.txt")):
            try:
                notes.append(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                notes.append("")  # unreadable: the verifier reports it as a forged checkpoint
        return notes

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self.engine.connect() as conn:
            return store.latest_checkpoint(conn)

    def current_checkpoint(self) -> StoredCheckpoint:
        """The latest signed checkpoint; NoCheckpoint when none was signed yet."""
        latest = self.latest_checkpoint()
        if latest is None:
            raise NoCheckpoint("the log has no signed checkpoint yet")
        with self.engine.connect() as conn:
            # Served with the witnesses' cosignatures as extra signature lines.
            return replace(latest, note=cosigned_notes(conn, [(latest.id, latest.note)])[0])

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self.engine.connect() as conn:
            return list(store.iter_checkpoints(conn))

    def verifier_keys(self) -> list[str]:
        """The keys an auditor should trust: the signing key, cosigners, then retired keys.
        Only configuration decides this list, never the database an insider could write to."""
        keys = [s.verifier.to_text() for s in (self.signer, *self.cosigners)]
        return keys + [k.to_text() for k in self.retired_keys if k.to_text() not in keys]

    def signing_history(self) -> list[str]:
        """Every key recorded as having signed a checkpoint (informational)."""
        with self.engine.connect() as conn:
            return store.known_keys(conn)

    # ------------------------------------------------------------------- reads

    def size(self) -> int:
        with self.engine.connect() as conn:
            return store.tree_size(conn)

    def entry(self, seq: int) -> Entry:
        with self.engine.connect() as conn:
            return store.get_entry(conn, seq)

    def entries(self, start: int = 0, end: int | None = None) -> list[Entry]:
        if start < 0 or (end is not None and end < start):
            raise EntryNotFound("entry range must satisfy 0 <= start <= end")
        stop = start + MAX_ENTRIES_PER_READ if end is None else min(end, start + MAX_ENTRIES_PER_READ)
        with self.engine.connect() as conn:
            return [entry for entry, _ in store.iter_entries(conn, start, stop)]

    def inclusion_proof(self, seq: int, size: int | None = None) -> InclusionProof:
        with self.engine.connect() as conn:
            current = store.tree_size(conn)
            tree_size = current if size is None else size
            if not 0 <= seq < tree_size or tree_size > current:
                raise InvalidTreeSize(f"entry {seq} is not in a tree of size {tree_size} of this log")
            resolve = store.resolver(conn)
            ranges = [(seq, seq + 1), (0, tree_size), *merkle.inclusion_ranges(seq, tree_size)]
            leaf, root, *path = merkle.materialise(ranges, resolve)
        return InclusionProof(seq, tree_size, leaf, root, tuple(path))

    def consistency_proof(self, first: int, second: int | None = None) -> ConsistencyProof:
        with self.engine.connect() as conn:
            current = store.tree_size(conn)
            second = current if second is None else second
            if not 0 <= first <= second <= current:
                raise InvalidTreeSize(f"no consistency proof from {first} to {second} (log size {current})")
            resolve = store.resolver(conn)
            path = merkle.consistency_proof(first, second, resolve)
            roots = merkle.materialise([r for r in ((0, first), (0, second)) if r[1] > 0], resolve)
        first_root = roots[0] if first else merkle.EMPTY_ROOT
        second_root = roots[-1] if second else merkle.EMPTY_ROOT
        return ConsistencyProof(first, second, first_root, second_root, tuple(path))

    # ----------------------------------------------------------- export/verify

    def export_lines(self, *, include_pii: bool = False) -> Iterator[bytes]:
        """NDJSON lines of the whole log, streamed from one snapshot, ending with a checkpoint
        signed now over exactly the exported entries: an export is anchored to its last entry.

        The checkpoint is signed (and stored, and published) first, at the size the log has
        then; the snapshot opened after it holds at least those entries, and since the log only
        grows, its first ``size`` entries are the ones signed. Entries appended meanwhile and
        checkpoints beyond ``size`` are left out, so the export covers exactly that tree."""
        size = self.checkpoint_now().tree_size
        if self.witnessing is not None:
            # The export's own checkpoint is submitted now (bounded by the witness timeout), so
            # that it leaves with cosignatures; a witness that is down only lowers their number.
            self.witnessing.witness_latest()
        if self.timestamping is not None:
            # Likewise time-stamped now (bounded by the TSA timeout); a TSA that is down only
            # leaves it without trusted time.
            self.timestamping.stamp_pending()
        with self._snapshot() as conn:
            kept = [(c.id, c.note) for c in store.iter_checkpoints(conn) if c.tree_size <= size]
            tokens = timestamp_store.timestamps_of(conn, (cid for cid, _ in kept))
            notes = [(note, tokens.get(cid)) for (cid, _), note in zip(kept, cosigned_notes(conn, kept), strict=True)]
            entries = store.iter_entries(conn, 0, size, with_pii=include_pii)
            yield from audit_export.export_lines(entries, notes, include_pii=include_pii)

    def export(self, out: BinaryIO, *, include_pii: bool = False) -> int:
        """Write the export to ``out``; returns the number of lines."""
        count = 0
        for line in self.export_lines(include_pii=include_pii):
            out.write(line)
            count += 1
        return count

    def verify(
        self,
        *,
        trusted_keys: Sequence[VerifierKey] | None = None,
        trusted_checkpoint: SignedCheckpoint | None = None,
        published: Sequence[SignedCheckpoint] = (),
        use_publish_dir: bool = True,
        progress: Any = None,
        policy: Policy | None = None,
    ) -> VerificationReport:
        """Verify the live log: chain, tree, checkpoints (stored, ``published`` and, by default,
        those written to the publish directory outside the database), personal data. With a
        trust ``policy`` its log keys replace the configured ones and the stored witness
        cosignatures must meet its quorum for a checkpoint to anchor entries."""
        keys = (
            list(trusted_keys) if trusted_keys is not None else [VerifierKey.from_text(k) for k in self.verifier_keys()]
        )
        with self._snapshot() as conn:
            verifier = FastChainVerifier(
                keys,
                origin=self.origin,
                trusted_checkpoint=trusted_checkpoint,
                erased=store.erased_seqs(conn),
                pii_expected=True,
                policy=policy,
            )
            stored = [(cp.id, cp.note) for cp in store.iter_checkpoints(conn)]
            for note in cosigned_notes(conn, stored):
                verifier.add_checkpoint_text(note)
            for signed in published:
                verifier.add_checkpoint_text(signed.to_text())
            if use_publish_dir:
                for note in self.published_notes():
                    verifier.add_checkpoint_text(note, source="published")
            for row, stored_pii in store.iter_rows(conn, with_pii=True):
                personal = (stored_pii.salt, stored_pii.personal()) if stored_pii else None
                verifier.add_stored(row, personal)  # type: ignore[arg-type]
                if progress is not None:
                    progress(row[0] + 1)
            return verifier.finish()

    def report_context(
        self, source: str = "live database", trusted_checkpoint: SignedCheckpoint | None = None
    ) -> ReportContext:
        return ReportContext(
            origin=self.origin,
            source=source,
            generated_at=self.clock(),
            trusted_keys=tuple(self.verifier_keys()),
            trusted_checkpoint_size=trusted_checkpoint.size if trusted_checkpoint else None,
        )

    def _snapshot(self) -> Any:
        conn = self.engine.connect()
        if conn.dialect.name == "postgresql":
            return conn.execution_options(isolation_level="REPEATABLE READ", **READ_ONLY)
        return conn.execution_options(**READ_ONLY)

    # ----------------------------------------------------------------- erasure

    def erase_pii(self, seq: int, reason: str, *, approved_by: str) -> int:
        """Delete the salt and personal data of entry ``seq`` and log ``audit.pii.erased`` in
        the same transaction; returns the erasure entry's seq. The chain stays verifiable.

        The marker is the service's own entry naming ``approved_by`` (the approving admin as an
        actor, ``user:<name>`` or ``client:<id>``) and the reason: a verifier honours no other
        (``audit.erasure``)."""
        reason = reason.strip()
        if not valid_reason(reason):
            raise InvalidEntry("an erasure needs a reason (at most 500 characters)")
        if not valid_approver(approved_by):
            raise InvalidEntry("an erasure needs the approving admin as 'user:<name>' or 'client:<id>'")
        data = marker_data(seq, approved_by=approved_by, reason=reason)
        with self.engine.begin() as conn:
            store.lock_appends(conn)
            store.delete_pii(conn, seq)
            return self.record(SERVICE_ACTOR, ERASED_ACTION, f"audit:{seq}", data, conn=conn)


def _atomic_write(path: Path, content: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
