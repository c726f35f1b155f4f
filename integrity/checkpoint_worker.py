"""One background thread per process that follows the audit log's checkpoints.

Witnessing and time-stamping both talk to outside services after a checkpoint is committed;
neither may hold up an append, so each runs its rounds on a thread of its own, woken by every
checkpoint commit and otherwise every ``retry_seconds`` (a round that failed is tried again
then). The thread is per process: after a fork (several workers) the child starts its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from audit.errors import AuditError
from integrity.logs import get_logger

__all__ = ["CheckpointWorker"]


class CheckpointWorker:
    """Runs ``round`` on a daemon thread after each :meth:`wake` and every ``retry_seconds``."""

    def __init__(
        self,
        name: str,
        round: Callable[[], object],
        *,
        retry_seconds: float,
        failure_event: str,
        join_seconds: float,
    ) -> None:
        self.name = name
        self.retry_seconds = retry_seconds
        self._round = round
        self._failure_event = failure_event
        self._join_seconds = join_seconds
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._start_lock = threading.Lock()
        self._log = get_logger()

    @property
    def closed(self) -> bool:
        return self._closed

    def wake(self) -> None:
        """Called after a checkpoint commit: wake the thread and return at once."""
        if self._closed:
            return
        self._ensure_thread()
        self._wake.set()

    def _running_here(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and self._thread_pid == os.getpid()

    def _ensure_thread(self) -> None:
        if self._running_here():
            return
        with self._start_lock:
            if self._running_here():
                return
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread_pid = os.getpid()
            self._thread.start()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.retry_seconds)
            self._wake.clear()
            if self._closed:
                return
            try:
                self._round()
            except (SQLAlchemyError, AuditError, OSError) as exc:
                # The database or the host failed, not the outside service: tried again with
                # the next checkpoint, or after retry_seconds.
                self._log.warning(self._failure_event, error=type(exc).__name__, detail=str(exc))

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._running_here() and self._thread is not None:
            self._thread.join(timeout=self._join_seconds)
