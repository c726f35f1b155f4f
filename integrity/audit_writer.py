"""Appends to the audit log: ``record`` and its kin, and the group committer behind them.

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
import threading
import time
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import pii, store
from audit.entry import validate_event
from audit.errors import AuditError, AuditUnavailable
from audit.store import PendingEvent
from integrity.clock import Clock

MAX_BATCH = 1_000
# How often the writer wakes, with nothing to write, to sign a time-due checkpoint.
TICK_SECONDS = 1.0
# Longest a batch waits for callers that are about to enqueue (bounded added latency).
GATHER_SECONDS = 0.002
# How often a waiting caller checks that the writer thread is still alive.
WATCH_SECONDS = 1.0
_STOP = object()

Event = tuple[str, str, str, dict | None, dict | None]  # (actor, action, subject, data, pii)


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

# Runs first in every appending transaction; raises (an AuditError) to refuse the appends.
Gate = Callable[[Connection], None]


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
class WriterHealth:
    alive: bool  # False: the writer thread died, or the log was closed
    waiting: int  # callers waiting on a commit
    stalled_seconds: float  # how long they have waited on a writer that finished no pass (0: none wait)


class AuditWriter:
    """Appends entries: in the caller's transaction, or through the group committer.

    ``after_commit`` is called on the writer thread with the tree size after each batch that
    appended entries, and with None on an idle tick (the checkpoint signer's cue); ``gate``
    runs first in every appending transaction and may refuse all of its appends."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        tick_seconds: float,
        after_commit: Callable[[int | None], None],
        gate: Gate | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.max_batch = max_batch
        self._tick = min(TICK_SECONDS, tick_seconds)
        self._after_commit = after_commit
        self._gate = gate
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._start_lock = threading.Lock()
        self._closed = False
        self._frontier = store.FrontierCache()
        self._waiters = 0  # callers waiting on a commit: the writer gathers up to this many per batch
        self._waiters_lock = threading.Lock()
        self._pass_at = time.monotonic()  # when the writer last began a pass (writer_health)

    @property
    def waiters(self) -> int:
        """Callers waiting on a commit now."""
        return self._waiters

    def writer_health(self) -> WriterHealth:
        """For readiness: is the writer thread there, and how long have callers waited on it
        without it finishing a pass (a commit, or an idle tick)."""
        thread, waiting = self._thread, self._waiters
        dead = thread is not None and self._thread_pid == os.getpid() and not thread.is_alive()
        stalled = time.monotonic() - self._pass_at if waiting else 0.0
        return WriterHealth(alive=not dead and not self._closed, waiting=waiting, stalled_seconds=stalled)

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
            return self._append_in(conn, [event])[0]
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

    def record_many(self, events: Sequence[Event], *, conn: Connection | None = None) -> list[int]:
        """Append ``(actor, action, subject, data, pii)`` events in order and contiguously,
        all or none (batch signing); returns their seqs. Every event is validated first, so a
        bad one writes nothing. Without ``conn`` they share the next group commit."""
        prepared = [self._prepare(*event) for event in events]
        if conn is not None:
            return self._append_in(conn, prepared)
        seqs = self._wait(_Request(prepared))
        assert seqs is not None
        return seqs

    async def record_many_async(self, events: Sequence[Event]) -> list[int]:
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

    def _append_in(self, conn: Connection, events: Sequence[PendingEvent]) -> list[int]:
        # The writer thread also signs time-due checkpoints: it must run once anything is logged.
        self._ensure_writer()
        if self._gate is not None:
            self._gate(conn)
        return [entry.seq for entry in store.append(conn, events, self.clock)]

    def _prepare(
        self, actor: str, action: str, subject: str, data: Mapping[str, Any] | None, personal: Mapping[str, Any] | None
    ) -> PendingEvent:
        plain, encoded = validate_event(actor, action, subject, data)
        sealed = pii.seal(personal) if personal is not None else None
        return PendingEvent(actor, action, subject, plain, encoded, sealed)

    # ------------------------------------------------------------ group commit

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
        while True:
            self._pass_at = time.monotonic()
            try:
                first = self._queue.get(timeout=self._tick)
            except queue.Empty:
                self._after_commit(None)
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
                self._after_commit(size)
            if stop:
                return

    def _commit_batch(self, batch: list[_Request]) -> int:
        """Append and commit one batch; returns the tree size after it (0 when nothing was
        appended or the commit failed)."""
        try:
            with self.engine.begin() as conn:
                if self._gate is not None:
                    self._gate(conn)
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
