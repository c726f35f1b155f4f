"""The audit log as the rest of the service sees it: one object, ``AuditService``, whose work is
done by three parts with one job each:

- ``integrity.audit_writer``: appends (``record`` and its kin, the group committer);
- ``integrity.audit_checkpoints``: signing, publishing and announcing checkpoints;
- ``integrity.audit_reads``: size, entries, proofs, export and verification.

Erasure of personal data is in ``integrity.pii_erasure``; the rolled-back state (a log put back
behind its witnesses takes no append until acknowledged) in ``integrity.audit_rollback``. This
module only builds the parts and passes each call to the part that does it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine

from audit import store
from audit.checkpoint import NoteSigner, SignedCheckpoint, VerifierKey
from audit.entry import Entry
from audit.erasure import SERVICE_ACTOR
from audit.policy import Policy
from audit.rollback_store import Rollback
from audit.store import StoredCheckpoint
from audit.verify import VerificationReport
from integrity import audit_rollback, pii_erasure
from integrity.audit_checkpoints import AuditCheckpoints
from integrity.audit_reads import MAX_ENTRIES_PER_READ, AuditReads, ConsistencyProof, InclusionProof
from integrity.audit_writer import MAX_BATCH, AuditWriter, Claim, Event, Guard
from integrity.checkpoint_timestamps import CheckpointTimestamping
from integrity.clock import Clock
from integrity.errors import ConfigurationError
from integrity.reports import ReportContext
from integrity.witnessing import Round, Witnessing

__all__ = [
    "MAX_ENTRIES_PER_READ",
    "AuditService",
    "Claim",
    "ConsistencyProof",
    "Guard",
    "InclusionProof",
]


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
        self.checkpointer = AuditCheckpoints(
            engine,
            clock=clock,
            log_id=log_id,
            checkpoint_key=checkpoint_key,
            checkpoint_key_name=checkpoint_key_name,
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            publish_dir=publish_dir,
            cosigners=cosigners,
            retired_keys=retired_keys,
        )
        self.writer = AuditWriter(
            engine,
            clock=clock,
            tick_seconds=float(checkpoint_seconds),
            after_commit=self.checkpointer.checkpoint_if_due,
            gate=audit_rollback.refuse_if_rolled_back,
            max_batch=max_batch,
        )
        self.reads = AuditReads(engine, clock=clock, checkpoints=self.checkpointer)

    # ------------------------------------------------------------ configuration

    @property
    def log_id(self) -> str:
        return self.checkpointer.log_id

    @property
    def origin(self) -> str:
        return self.checkpointer.origin

    @property
    def signer(self) -> NoteSigner:
        return self.checkpointer.signer

    @property
    def cosigners(self) -> tuple[NoteSigner, ...]:
        return self.checkpointer.cosigners

    @property
    def retired_keys(self) -> tuple[VerifierKey, ...]:
        return self.checkpointer.retired_keys

    @property
    def checkpoint_every(self) -> int:
        return self.checkpointer.checkpoint_every

    @property
    def checkpoint_seconds(self) -> int:
        return self.checkpointer.checkpoint_seconds

    @property
    def publish_dir(self) -> Path | None:
        return self.checkpointer.publish_dir

    @property
    def max_batch(self) -> int:
        return self.writer.max_batch

    @property
    def witnessing(self) -> Witnessing | None:
        """Set by the wiring when BHXH_WITNESSES is configured (told of each checkpoint)."""
        return self.checkpointer.witnessing

    @witnessing.setter
    def witnessing(self, value: Witnessing | None) -> None:
        self.checkpointer.witnessing = value

    @property
    def timestamping(self) -> CheckpointTimestamping | None:
        """Set by the wiring when BHXH_TSA_URL is configured (told of each checkpoint)."""
        return self.checkpointer.timestamping

    @timestamping.setter
    def timestamping(self, value: CheckpointTimestamping | None) -> None:
        self.checkpointer.timestamping = value

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
        return self.writer.record(actor, action, subject, data, pii, conn=conn)

    async def record_async(
        self, actor: str, action: str, subject: str, data: dict | None = None, pii: dict | None = None
    ) -> int:
        return await self.writer.record_async(actor, action, subject, data, pii)

    def record_many(self, events: Sequence[Event], *, conn: Connection | None = None) -> list[int]:
        return self.writer.record_many(events, conn=conn)

    async def record_many_async(self, events: Sequence[Event]) -> list[int]:
        return await self.writer.record_many_async(events)

    def record_if(
        self, guard: Guard, actor: str, action: str, subject: str, data: dict | None = None, pii: dict | None = None
    ) -> int | None:
        return self.writer.record_if(guard, actor, action, subject, data, pii)

    async def record_if_async(
        self, guard: Guard, actor: str, action: str, subject: str, data: dict | None = None, pii: dict | None = None
    ) -> int | None:
        return await self.writer.record_if_async(guard, actor, action, subject, data, pii)

    def erase_pii(self, seq: int, reason: str, *, approved_by: str, actor: str = SERVICE_ACTOR) -> int:
        return pii_erasure.erase_pii(self.writer, seq, reason, approved_by=approved_by, actor=actor)

    def close(self) -> None:
        """Finish queued appends and stop the writer thread (idempotent)."""
        self.writer.close()

    # ---------------------------------------------------------------- rollback

    def rolled_back(self) -> list[Rollback]:
        """What witnesses showed the log lost, not acknowledged yet (empty: appends work)."""
        return audit_rollback.rolled_back(self.engine)

    def acknowledge_rollback(self, reason: str, *, actor: str) -> audit_rollback.Acknowledgement:
        """Log ``audit.rollback.acknowledged`` naming the loss and let appends resume; then sign
        a checkpoint over it, so that the witnesses are asked again."""
        done = audit_rollback.acknowledge(self.engine, self.clock, self.origin, reason, actor=actor)
        self.checkpoint_now()
        return done

    # ------------------------------------------------------------- checkpoints

    def ensure_genesis(self, *, actor: str = SERVICE_ACTOR) -> str | None:
        """``init`` step: create the log (an ``audit.log.created`` entry naming the log and its
        key, written by ``actor``) and sign its first checkpoint, unless both exist. Other
        start-up work (a key import) may already have appended entries: the log is still
        created, after them."""
        with self.engine.connect() as conn:
            created = store.has_action(conn, "audit.log.created")
            checkpointed = store.latest_checkpoint(conn) is not None
        if created and checkpointed:
            return None
        if not created:
            self.record(
                actor,
                "audit.log.created",
                self.origin,
                {"log_id": self.log_id, "key": self.signer.verifier.to_text()},
            )
        self.checkpoint_now()
        return (
            f"created the audit log {self.origin}" if not created else f"signed the first checkpoint of {self.origin}"
        )

    def checkpoint_now(self) -> StoredCheckpoint:
        return self.checkpointer.checkpoint_now()

    def maybe_checkpoint(self) -> list[StoredCheckpoint]:
        return self.checkpointer.maybe_checkpoint()

    def witness_now(self) -> Round | None:
        return self.checkpointer.witness_now()

    def published_notes(self) -> list[str]:
        return self.checkpointer.published_notes()

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        return self.checkpointer.latest_checkpoint()

    def current_checkpoint(self) -> StoredCheckpoint:
        return self.checkpointer.current_checkpoint()

    def checkpoints(self) -> list[StoredCheckpoint]:
        return self.checkpointer.checkpoints()

    def verifier_keys(self) -> list[str]:
        return self.checkpointer.verifier_keys()

    def signing_history(self) -> list[str]:
        return self.checkpointer.signing_history()

    # ------------------------------------------------------------------- reads

    def size(self) -> int:
        return self.reads.size()

    def entry(self, seq: int) -> Entry:
        return self.reads.entry(seq)

    def entries(self, start: int = 0, end: int | None = None) -> list[Entry]:
        return self.reads.entries(start, end)

    def inclusion_proof(self, seq: int, size: int | None = None) -> InclusionProof:
        return self.reads.inclusion_proof(seq, size)

    def consistency_proof(self, first: int, second: int | None = None) -> ConsistencyProof:
        return self.reads.consistency_proof(first, second)

    def export_lines(self, *, include_pii: bool = False) -> Iterator[bytes]:
        return self.reads.export_lines(include_pii=include_pii)

    def export(self, out: BinaryIO, *, include_pii: bool = False) -> int:
        return self.reads.export(out, include_pii=include_pii)

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
        return self.reads.verify(
            trusted_keys=trusted_keys,
            trusted_checkpoint=trusted_checkpoint,
            published=published,
            use_publish_dir=use_publish_dir,
            progress=progress,
            policy=policy,
        )

    def report_context(
        self, source: str = "live database", trusted_checkpoint: SignedCheckpoint | None = None
    ) -> ReportContext:
        return self.reads.report_context(source, trusted_checkpoint)
