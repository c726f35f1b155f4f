"""Test helper: a small in-memory log (leaves, signed checkpoints, consistency proofs), the
``add-checkpoint`` request bodies a log sends to its witnesses, and real ``bhxh-integrity witness
serve`` processes on 127.0.0.1 that trust the demo audit-log key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint, origin_for
from audit.cosignature import CosignerKey
from audit.merkle import consistency_proof, leaf_hash, leaves_resolver, root
from audit.witness import AddCheckpoint
from tests.loopback import free_port

REPO = Path(__file__).resolve().parents[2]
DEMO_KEYS = REPO / "keys.example"
DEMO_ORIGIN = origin_for("bhxh-vss-main")
LOG_VKEY = DEMO_KEYS / "audit-log.vkey"


def demo_log_signer() -> NoteSigner:
    """The demonstration audit-log key of keys.example/, named as the service names it."""
    passphrase = (DEMO_KEYS / "passphrase.txt").read_bytes().strip()
    key = serialization.load_pem_private_key((DEMO_KEYS / "audit-log.key.pem").read_bytes(), passphrase)
    assert isinstance(key, Ed25519PrivateKey)
    return NoteSigner(DEMO_ORIGIN, key)


@dataclass
class MemoryLog:
    """A log of ``size`` leaves whose checkpoints are signed by ``signer`` for ``origin``."""

    signer: NoteSigner
    origin: str
    size: int = 40
    salt: str = "entry"

    def __post_init__(self) -> None:
        self.leaves = [leaf_hash(f"{self.salt} {i}".encode()) for i in range(self.size)]

    def root(self, size: int) -> bytes:
        return root(size, leaves_resolver(self.leaves))

    def checkpoint(self, size: int, extensions: tuple[str, ...] = ()) -> SignedCheckpoint:
        return SignedCheckpoint.sign(Checkpoint(self.origin, size, self.root(size), extensions), [self.signer])

    def proof(self, old: int, new: int) -> tuple[bytes, ...]:
        return tuple(consistency_proof(old, new, leaves_resolver(self.leaves)))

    def request(self, old: int, new: int) -> AddCheckpoint:
        return AddCheckpoint(old, self.proof(old, new), self.checkpoint(new))

    def body(self, old: int, new: int) -> bytes:
        return self.request(old, new).to_body()


def new_log(origin: str = "example.test/log", size: int = 40, salt: str = "entry") -> MemoryLog:
    return MemoryLog(NoteSigner(origin, Ed25519PrivateKey.generate()), origin, size, salt)


@dataclass
class WitnessProcess:
    """One ``witness serve`` process over ``directory`` (made by ``init_witness``), logging to ``log_file``."""

    directory: Path
    keys: list[CosignerKey]
    log_file: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start on a fresh free port, trying again if another process took it meanwhile."""
        for _attempt in range(3):
            self.port = free_port()
            if self.spawn():
                return
            self.stop()
        pytest.fail(f"witness did not start: {self.log_file.read_text()}")

    def spawn(self) -> bool:
        """Start the process on ``self.port``; whether it answered its health check."""
        serve = ["witness", "serve", "--dir", str(self.directory), "--log", str(LOG_VKEY), "--port", str(self.port)]
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from api.cli import main; main()", *serve],
                cwd=self.directory.parent,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return True
            except httpx.TransportError:
                time.sleep(0.1)
        return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def add(self, body: bytes) -> httpx.Response:
        return httpx.post(self.url + "/add-checkpoint", content=body, timeout=30)
