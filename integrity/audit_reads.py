"""Reading the audit log: its size and entries, RFC 9162 inclusion and consistency proofs, the
NDJSON export, and verification of the live log."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import Engine

from audit import export as audit_export
from audit import merkle, store, timestamp_store
from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.entry import Entry
from audit.errors import EntryNotFound, InvalidTreeSize
from audit.policy import Policy
from audit.verify import VerificationReport
from audit.verify_fast import FastChainVerifier
from audit.witness_store import cosigned_notes
from integrity.audit_checkpoints import AuditCheckpoints
from integrity.clock import Clock
from integrity.db import READ_ONLY
from integrity.reports import ReportContext

MAX_ENTRIES_PER_READ = 1_000


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


class AuditReads:
    def __init__(self, engine: Engine, *, clock: Clock, checkpoints: AuditCheckpoints) -> None:
        self.engine = engine
        self.clock = clock
        self.checkpoints = checkpoints

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

    # ------------------------------------------------------------------ proofs

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
        size = self.checkpoints.checkpoint_now().tree_size
        if self.checkpoints.witnessing is not None:
            # The export's own checkpoint is submitted now (bounded by the witness timeout), so
            # that it leaves with cosignatures; a witness that is down only lowers their number.
            self.checkpoints.witnessing.witness_latest()
        if self.checkpoints.timestamping is not None:
            # Likewise time-stamped now (bounded by the TSA timeout); a TSA that is down only
            # leaves it without trusted time.
            self.checkpoints.timestamping.stamp_pending()
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
            list(trusted_keys)
            if trusted_keys is not None
            else [VerifierKey.from_text(k) for k in self.checkpoints.verifier_keys()]
        )
        with self._snapshot() as conn:
            verifier = FastChainVerifier(
                keys,
                origin=self.checkpoints.origin,
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
                for note in self.checkpoints.published_notes():
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
            origin=self.checkpoints.origin,
            source=source,
            generated_at=self.clock(),
            trusted_keys=tuple(self.checkpoints.verifier_keys()),
            trusted_checkpoint_size=trusted_checkpoint.size if trusted_checkpoint else None,
        )

    def _snapshot(self) -> Any:
        conn = self.engine.connect()
        if conn.dialect.name == "postgresql":
            return conn.execution_options(isolation_level="REPEATABLE READ", **READ_ONLY)
        return conn.execution_options(**READ_ONLY)
