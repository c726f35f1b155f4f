"""Checkpoints of the audit log: signing them (when due, or now), publishing each outside the
database, announcing each to the witnessing and time-stamping threads, and reading them back
with the keys an auditor should trust."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import store
from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint, VerifierKey, origin_for
from audit.errors import AuditError, NoCheckpoint
from audit.store import StoredCheckpoint
from audit.witness_store import cosigned_notes
from integrity.checkpoint_timestamps import CheckpointTimestamping
from integrity.clock import Clock
from integrity.witnessing import Round, Witnessing


class AuditCheckpoints:
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
    ) -> None:
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
        self._checkpoint_lock = threading.Lock()
        # Hints only (another process may have signed since): the database decides.
        self._hint_checkpoint_size = -1
        self._hint_checkpoint_at: datetime | None = None

    # ----------------------------------------------------------------- signing

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

    def witness_now(self) -> Round | None:
        """Sign a checkpoint over every committed entry and ask every witness where it stands,
        waiting for the answers (bounded by the witness timeout); None without witnesses.
        ``serve`` does this before it takes requests, so that a log restored to an older state
        (its record of the witnesses restored with it) is found rolled back before its first
        append."""
        if self.witnessing is None:
            return None
        self.checkpoint_now()
        return self.witnessing.witness_latest(fresh=True)

    def checkpoint_if_due(self, size: int | None = None) -> None:
        """The writer's cheap pre-check after a batch (``size``: the tree size it left) or on
        an idle tick, so that either rarely opens a transaction."""
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

    def _announce(self) -> None:
        if self.witnessing is not None:
            self.witnessing.checkpoint_signed()
        if self.timestamping is not None:
            self.timestamping.checkpoint_signed()

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

    # -------------------------------------------------------------- publishing

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

    # ------------------------------------------------------------------- reads

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
