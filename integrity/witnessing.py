"""The log's side of C2SP tlog-witness: submit each signed checkpoint to the configured witnesses,
verify the cosignatures they return and store them with the checkpoint.

Witnessing never holds up an append: the audit service only wakes a background thread after a
checkpoint is committed, and that thread submits the latest checkpoint to every witness at once.
A witness that is down, slow or refuses is logged and tried again with the next checkpoint (or
after ``retry_seconds``); a checkpoint with fewer cosignatures than the quorum is still the
log's checkpoint, and the lag shows in the metrics. The size each witness last cosigned is kept
in the database, so every instance submits from where the witness stands; a witness that
answers 409 names its real size and is sent a proof from that size instead.

A witness that holds more of the log than the log holds, or another root at a size the log
holds, shows that the log was put back to an older state: the round records it and appends stop
until an administrator acknowledges the loss (integrity.audit_rollback).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from enum import StrEnum

import httpx
from prometheus_client import Gauge, Histogram
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit import merkle, rollback_store, store
from audit import witness_store as wstore
from audit.cosignature import CosignerKey, with_cosignatures
from audit.errors import AuditError, CosignatureInvalid, MalformedCheckpoint
from audit.rollback_store import RollbackEvidence
from audit.store import StoredCheckpoint
from audit.witness import AddCheckpoint
from integrity.audit_rollback import acknowledged_loss, describe, found
from integrity.checkpoint_worker import CheckpointWorker
from integrity.clock import Clock
from integrity.logs import get_logger
from integrity.settings import WitnessSetting

TLOG_SIZE_TYPE = "text/x.tlog.size"
# A 409 names the witness's size; one more attempt from there, and a second 409 waits a round.
MAX_ATTEMPTS = 3

WITNESS_LAG = Gauge(
    "bhxh_audit_witness_lag_entries",
    "entries of the latest checkpoint a witness has not cosigned yet (as last seen by this instance)",
    ["witness"],
)
COSIGNED_WITNESSES = Gauge(
    "bhxh_audit_checkpoint_witnesses",
    "witnesses whose cosignatures are stored on the latest checkpoint (compare with the quorum)",
)
ROLLED_BACK = Gauge(
    "bhxh_audit_rolled_back",
    "1 while the log is rolled back behind what a witness cosigned and refuses appends (until acknowledged)",
)
WITNESS_DIVERGED = Gauge(
    "bhxh_audit_witness_diverged",
    "1 while a witness holds history this log lost (acknowledged): it cosigns nothing until its operator resets it",
    ["witness"],
)
QUORUM_SECONDS = Histogram(
    "bhxh_audit_witness_quorum_seconds",
    "time from the start of a witnessing round to the quorum of cosignatures stored",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class Outcome(StrEnum):
    COSIGNED = "cosigned"  # new cosignatures stored
    CURRENT = "current"  # already cosigned this checkpoint
    AHEAD = "ahead"  # the witness holds a larger tree (another instance got there first)
    ROLLED_BACK = "rolled-back"  # it holds more than the log, or another root: appends stop
    DIVERGED = "diverged"  # it holds the history the log lost (acknowledged): reset needed there
    REFUSED = "refused"  # 4xx other than a resolved 409: a fork or a configuration error
    INVALID = "invalid"  # answered 200 with cosignatures that do not verify with its keys
    UNREACHABLE = "unreachable"  # timeout, connection refused, 5xx


@dataclass(frozen=True)
class Witness:
    """A configured witness: its name, submission prefix and the keys that must all cosign."""

    name: str
    url: str
    keys: tuple[CosignerKey, ...]


@dataclass(frozen=True)
class WitnessResult:
    witness: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class Round:
    """One checkpoint submitted to every witness."""

    checkpoint_id: int
    tree_size: int
    results: tuple[WitnessResult, ...]
    witnessed: int  # witnesses with cosignatures stored on the checkpoint after the round
    quorum_seconds: float | None  # from the round's start; None when the quorum was not reached


class Witnessing:
    def __init__(
        self,
        engine: Engine,
        witnesses: Sequence[Witness],
        *,
        quorum: int,
        timeout: float,
        clock: Clock,
        retry_seconds: float = 60.0,
    ) -> None:
        if not witnesses or not 1 <= quorum <= len(witnesses):
            raise ValueError("witnessing needs witnesses and a quorum of 1 … their number")
        self.engine = engine
        self.witnesses = tuple(witnesses)
        self.quorum = quorum
        self.timeout = timeout
        self.clock = clock
        self.retry_seconds = retry_seconds
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._pool = ThreadPoolExecutor(max_workers=len(self.witnesses), thread_name_prefix="audit-witness")
        self._round_lock = threading.Lock()
        self._log = get_logger()
        self._worker = CheckpointWorker(
            "audit-witnessing",
            self.witness_latest,
            retry_seconds=retry_seconds,
            failure_event="witnessing_failed",
            join_seconds=timeout * MAX_ATTEMPTS + 5,
        )

    # ------------------------------------------------------------- background

    def checkpoint_signed(self) -> None:
        """Called after a checkpoint commit: wake the witnessing thread and return at once."""
        self._worker.wake()

    def close(self) -> None:
        self._worker.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # ----------------------------------------------------------------- rounds

    def witness_latest(self, *, fresh: bool = False) -> Round | None:
        """Submit the latest checkpoint to every witness concurrently; returns what each did
        (None when the log has no checkpoint). Synchronous: the export uses it to have its own
        checkpoint witnessed before it is read.

        ``fresh``: trust nothing the database says of the witnesses (it may be a restored copy)
        and ask each one, those that cosigned the checkpoint too, from an old size of 0, which
        tlog-witness allows a log that does not know where a witness stands: the 409 answer
        names the size it holds."""
        with self._round_lock:
            started = time.monotonic()
            with self.engine.connect() as conn:
                latest = store.latest_checkpoint(conn)
                done = wstore.cosigned_witnesses(conn, latest.id) if latest is not None else set()
            if latest is None:
                return None
            results: list[WitnessResult] = []
            witnessed = done & {w.name for w in self.witnesses}
            reached: float | None = 0.0 if len(witnessed) >= self.quorum else None
            pending = [w for w in self.witnesses if fresh or w.name not in done]
            futures = [self._pool.submit(self._submit, w, latest, fresh) for w in pending]
            results.extend(WitnessResult(w.name, Outcome.CURRENT) for w in self.witnesses if w not in pending)
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                if result.outcome is Outcome.COSIGNED:
                    witnessed.add(result.witness)
                    if reached is None and len(witnessed) >= self.quorum:
                        reached = time.monotonic() - started
                        QUORUM_SECONDS.observe(reached)
            self._update_metrics(latest, len(witnessed), results)
            order = {w.name: i for i, w in enumerate(self.witnesses)}
            results.sort(key=lambda r: order[r.witness])
            return Round(latest.id, latest.tree_size, tuple(results), len(witnessed), reached)

    def _submit(self, witness: Witness, checkpoint: StoredCheckpoint, fresh: bool = False) -> WitnessResult:
        try:
            result = self._submit_unguarded(witness, checkpoint, fresh)
        except (SQLAlchemyError, AuditError, OSError) as exc:
            result = WitnessResult(witness.name, Outcome.UNREACHABLE, f"{type(exc).__name__}: {exc}")
        if result.outcome in (Outcome.REFUSED, Outcome.INVALID):
            # A refusal of a checkpoint the log signed may be a witness seeing a fork: loud.
            self._log.error("witness_refused", witness=witness.name, outcome=result.outcome.value, detail=result.detail)
        elif result.outcome is Outcome.UNREACHABLE:
            self._log.warning("witness_unreachable", witness=witness.name, detail=result.detail)
        elif result.outcome is Outcome.DIVERGED:
            # Asked once a round, no more: it answers again when its operator has reset it.
            self._log.warning("witness_diverged", witness=witness.name, detail=result.detail)
        return result

    def _submit_unguarded(self, witness: Witness, checkpoint: StoredCheckpoint, fresh: bool) -> WitnessResult:
        signed = checkpoint.parsed()
        with self.engine.connect() as conn:
            old = wstore.witness_size(conn, witness.name)
            lost = acknowledged_loss(conn, witness.name)
        if fresh or lost is not None:
            # Ask where it stands with an old size of 0 (tlog-witness allows it): the database's
            # record may be a restored copy, or the witness holds the history this log lost.
            old = 0
        for _attempt in range(MAX_ATTEMPTS):
            if old > checkpoint.tree_size:
                return self._ahead(witness, old)
            with self.engine.connect() as conn:
                proof = merkle.consistency_proof(old, checkpoint.tree_size, store.resolver(conn))
            body = AddCheckpoint(old, tuple(proof), signed).to_body()
            try:
                response = self._client.post(witness.url + "/add-checkpoint", content=body)
            except httpx.HTTPError as exc:
                return WitnessResult(witness.name, Outcome.UNREACHABLE, f"{type(exc).__name__}: {exc}")
            if response.status_code == 409:
                reported = _reported_size(response)
                if reported is not None and reported == lost:
                    return WitnessResult(
                        witness.name,
                        Outcome.DIVERGED,
                        f"it still holds the lost tree of size {lost}: its operator must reset its record of this log",
                    )
                if reported is not None and 0 < reported == old == checkpoint.tree_size:
                    # tlog-witness: another root at the size it holds is a 409 naming that size.
                    return self._rolled_back(witness, reported, RollbackEvidence.OTHER_ROOT)
                if reported is None or reported == old:
                    return WitnessResult(witness.name, Outcome.REFUSED, f"409 without a usable size: {response.text!r}")
                old = reported
                with self.engine.begin() as conn:
                    wstore.set_witness_size(conn, witness.name, old, self.clock())
                continue
            if response.status_code == 422 and old > 0:
                # The proof starts at the size it holds (else it answers 409) and fails: its tree
                # of that size is not this log's.
                return self._rolled_back(witness, old, RollbackEvidence.OTHER_ROOT)
            if response.status_code != 200:
                outcome = Outcome.UNREACHABLE if response.status_code >= 500 else Outcome.REFUSED
                return WitnessResult(witness.name, outcome, f"{response.status_code}: {response.text.strip()[:200]}")
            return self._store(witness, checkpoint, response.text)
        return WitnessResult(witness.name, Outcome.REFUSED, "the witness's size kept changing")

    def _ahead(self, witness: Witness, size: int) -> WitnessResult:
        """It holds a larger tree than the checkpoint: another instance's later checkpoint, or,
        past every entry the log holds, entries the log lost."""
        with self.engine.connect() as conn:
            held = store.tree_size(conn)
        if size <= held:
            return WitnessResult(witness.name, Outcome.AHEAD, f"the witness holds size {size}")
        return self._rolled_back(witness, size, RollbackEvidence.AHEAD)

    def _rolled_back(self, witness: Witness, size: int, evidence: RollbackEvidence) -> WitnessResult:
        with self.engine.begin() as conn:
            finding = found(conn, witness.name, size, evidence, self.clock())
        if finding is None:
            return WitnessResult(witness.name, Outcome.DIVERGED, f"it still holds the lost tree of size {size}")
        rollback, new = finding
        ROLLED_BACK.set(1)
        self._log.error(
            "audit_log_rolled_back",
            witness=witness.name,
            witness_size=size,
            log_size=rollback.log_size,
            evidence=evidence.value,
            new=new,
            action="appends are refused until `bhxh-integrity audit acknowledge-rollback`",
        )
        return WitnessResult(witness.name, Outcome.ROLLED_BACK, describe(rollback))

    def _store(self, witness: Witness, checkpoint: StoredCheckpoint, answer: str) -> WitnessResult:
        """Verify each cosignature with the configured keys, then store them and the size."""
        try:
            cosigned = with_cosignatures(checkpoint.parsed(), answer)
        except MalformedCheckpoint as exc:
            return WitnessResult(witness.name, Outcome.INVALID, f"the answer does not parse: {exc}")
        wanted = {(key.name, key.key_id) for key in witness.keys}
        try:
            for key in witness.keys:
                key.verify(cosigned)
        except CosignatureInvalid as exc:
            return WitnessResult(witness.name, Outcome.INVALID, str(exc))
        mine = [sig for sig in cosigned.note.signatures if (sig.name, sig.key_id) in wanted]
        now = self.clock()
        with self.engine.begin() as conn:
            wstore.add_cosignatures(conn, checkpoint.id, witness.name, mine, now)
            wstore.set_witness_size(conn, witness.name, checkpoint.tree_size, now)
        return WitnessResult(witness.name, Outcome.COSIGNED)

    def _update_metrics(self, latest: StoredCheckpoint, witnessed: int, results: Sequence[WitnessResult]) -> None:
        with self.engine.connect() as conn:
            sizes = wstore.witness_sizes(conn)
            rolled_back = rollback_store.first_open(conn) is not None
        names = [w.name for w in self.witnesses]
        for name, lag in wstore.sizes_lag(latest.tree_size, sizes, names).items():
            WITNESS_LAG.labels(witness=name).set(lag)
        COSIGNED_WITNESSES.set(witnessed)
        ROLLED_BACK.set(1 if rolled_back else 0)
        for result in results:
            if result.outcome is not Outcome.UNREACHABLE:
                WITNESS_DIVERGED.labels(witness=result.witness).set(1 if result.outcome is Outcome.DIVERGED else 0)


def _reported_size(response: httpx.Response) -> int | None:
    """The size a 409 answer carries (tlog-witness: text/x.tlog.size, one decimal line)."""
    if response.headers.get("content-type", "").split(";")[0].strip() != TLOG_SIZE_TYPE:
        return None
    text = response.text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def witnesses_from_settings(entries: Sequence[WitnessSetting]) -> tuple[Witness, ...]:
    """The configured witnesses (BHXH_WITNESSES entries, already validated by the settings)."""
    return tuple(Witness(entry.name, entry.url, entry.keys()) for entry in entries)
