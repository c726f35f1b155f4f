"""Trusted time for the audit log: each signed checkpoint is sent to the RFC 3161 time-stamping
authority of ``BHXH_TSA_URL`` and the TSA's answer is stored with it (audit.timestamp_store).

A time-stamp never holds up an append: the audit service only wakes this thread after a
checkpoint commit. Each round asks for the newest checkpoints without a time-stamp (at most
``per_round``), newest first, so a TSA that was down is caught up with the next checkpoint; a
checkpoint is never lost nor held back for want of a time-stamp. A TSA that fails is logged and
the round ends there (asked again at the next checkpoint, or after ``retry_seconds``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx
from sqlalchemy import Engine

from audit import timestamp_store
from audit.errors import TimestampInvalid
from audit.store import StoredCheckpoint
from audit.timestamps import MAX_RESPONSE_BYTES, QUERY_TYPE, Timestamp, accept_response, request_for
from integrity.checkpoint_worker import CheckpointWorker
from integrity.clock import Clock
from integrity.errors import ConfigurationError
from integrity.logs import get_logger

# Checkpoints stamped in one round at most: after a long TSA outage the newest ones are stamped
# first; a later time-stamp also dates every entry of the earlier trees it contains.
MAX_PER_ROUND = 16


@dataclass(frozen=True)
class StampRound:
    """One round: the checkpoints stamped (their ids) and, when the TSA failed, why."""

    stamped: tuple[int, ...]
    error: str | None = None


class CheckpointTimestamping:
    def __init__(
        self,
        engine: Engine,
        url: str,
        *,
        clock: Clock,
        timeout: float = 10.0,
        retry_seconds: float = 60.0,
        per_round: int = MAX_PER_ROUND,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"BHXH_TSA_URL must be an http(s):// URL, not {url!r}")
        self.engine = engine
        self.url = url
        self.clock = clock
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.per_round = per_round
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._round_lock = threading.Lock()
        self._log = get_logger()
        self._worker = CheckpointWorker(
            "audit-timestamping",
            self.stamp_pending,
            retry_seconds=retry_seconds,
            failure_event="checkpoint_timestamp_failed",
            join_seconds=timeout + 5,
        )

    # ------------------------------------------------------------- background

    def checkpoint_signed(self) -> None:
        """Called after a checkpoint commit: wake the time-stamping thread and return at once."""
        self._worker.wake()

    def close(self) -> None:
        self._worker.close()
        self._client.close()

    # ----------------------------------------------------------------- rounds

    def stamp_pending(self) -> StampRound:
        """Time-stamp the newest checkpoints that have none yet. Synchronous: the export uses it
        so that its own checkpoint leaves with a time-stamp when the TSA answers."""
        with self._round_lock:
            with self.engine.connect() as conn:
                pending = timestamp_store.untimestamped(conn, self.per_round)
            stamped: list[int] = []
            for checkpoint in pending:
                try:
                    stamp = self._stamp(checkpoint)
                except (httpx.HTTPError, TimestampInvalid) as exc:
                    detail = f"{type(exc).__name__}: {exc}"
                    self._log.warning(
                        "checkpoint_timestamp_failed", tsa=self.url, tree_size=checkpoint.tree_size, detail=detail
                    )
                    return StampRound(tuple(stamped), detail)
                with self.engine.begin() as conn:
                    timestamp_store.add_timestamp(
                        conn, checkpoint.id, stamp.der, stamp.gen_time, stamp.tsa, self.clock()
                    )
                stamped.append(checkpoint.id)
            return StampRound(tuple(stamped))

    def _stamp(self, checkpoint: StoredCheckpoint) -> Timestamp:
        request = request_for(checkpoint.note)
        response = self._client.post(self.url, content=request.der, headers={"Content-Type": QUERY_TYPE})
        if response.status_code != 200:
            raise TimestampInvalid(f"the TSA answered {response.status_code}")
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise TimestampInvalid("the TSA's answer is too large")
        return accept_response(request, response.content)
