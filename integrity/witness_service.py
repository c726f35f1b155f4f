"""A witness's directory: its keys, and the latest checkpoint it cosigned for each log it follows
(C2SP tlog-witness). The decisions are ``audit.witness``'s; this module adds the files, the
durability and the locking the protocol requires.

tlog-witness requires that the check of the old size and the storing of the new checkpoint be
one atomic step, and that the new checkpoint be persisted before the witness answers: a lost or
rolled-back record would let the log obtain cosignatures on two diverging histories. So each
log's record is one file, replaced atomically (temporary file, fsync, rename, fsync of the
directory) under a per-log lock, before the answer leaves; a SIGKILL at any point leaves either
the old record or the new one. One process serves a directory: it holds an exclusive lock on it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from audit.checkpoint import VerifierKey
from audit.cosignature import CosignatureType, Cosigner, CosignerKey, CosignerPrivateKey
from audit.errors import MalformedVerifierKey
from audit.export import load_verifier_keys
from audit.witness import AddCheckpoint, Cosigned, LogRecord, Witness, WitnessedLog, origin_hash
from integrity.errors import ConfigurationError

NAME_FILE = "witness-name.txt"
VKEY_FILE = "witness.vkey"
KEY_FILES = {
    CosignatureType.ED25519: "witness-ed25519.key.pem",
    CosignatureType.MLDSA44: "witness-mldsa44.key.pem",
}
LOGS_DIR = "logs"
LOCK_FILE = "witness.lock"
# ML-DSA-44 is the kind tlog-cosignature recommends; the Ed25519 cosignature follows it for
# clients that only know cosignature/v1. Answers list them in this order.
KINDS = (CosignatureType.MLDSA44, CosignatureType.ED25519)

UnixClock = Callable[[], int]


def unix_now() -> int:
    return int(time.time())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never replacing a file) with ``mode``, durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def init_witness(directory: Path, name: str) -> tuple[CosignerKey, ...]:
    """Create the witness's ML-DSA-44 and Ed25519 keys in ``directory`` (private keys 0600) and
    its public ``witness.vkey``; returns the verifier keys. Refuses to replace existing keys."""
    try:
        cosigners = [
            Cosigner(name, MLDSA44PrivateKey.generate()),
            Cosigner(name, Ed25519PrivateKey.generate()),
        ]
    except MalformedVerifierKey as exc:
        raise ConfigurationError(f"invalid witness name: {exc}") from None
    taken = [f for f in (NAME_FILE, VKEY_FILE, *KEY_FILES.values()) if (directory / f).exists()]
    if taken:
        raise ConfigurationError(f"{directory} already holds a witness ({', '.join(taken)}); nothing was written")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for cosigner in cosigners:
            pem = cosigner.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            _write_new(directory / KEY_FILES[cosigner.key.kind], pem, 0o600)
        keys = tuple(c.key for c in cosigners)
        _write_new(directory / VKEY_FILE, "".join(k.to_text() + "\n" for k in keys).encode(), 0o644)
        # The name last: its presence marks a complete witness directory.
        _write_new(directory / NAME_FILE, (name + "\n").encode(), 0o644)
        _fsync_dir(directory)
    except OSError as exc:
        raise ConfigurationError(f"cannot write the witness keys to {directory}: {exc.strerror}") from exc
    return keys


def load_cosigners(directory: Path) -> tuple[Cosigner, ...]:
    """The witness's cosigners from its directory; a private key readable by others is refused."""
    try:
        name = (directory / NAME_FILE).read_text().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"{directory} is not a witness directory (run `bhxh-integrity witness init`): {exc.strerror}"
        ) from exc
    cosigners = []
    for kind in KINDS:
        path = directory / KEY_FILES[kind]
        try:
            if path.stat().st_mode & 0o077:
                raise ConfigurationError(f"{path} is readable by others: make it 0600 (chmod 600 {path})")
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        except OSError as exc:
            raise ConfigurationError(f"cannot read witness key {path}: {exc.strerror}") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"cannot load witness key {path}: not an unencrypted PKCS#8 PEM") from exc
        wanted = Ed25519PrivateKey if kind is CosignatureType.ED25519 else MLDSA44PrivateKey
        if not isinstance(key, wanted):
            raise ConfigurationError(f"{path} does not hold a {kind.name} key")
        private: CosignerPrivateKey = key
        try:
            cosigners.append(Cosigner(name, private))
        except MalformedVerifierKey as exc:
            raise ConfigurationError(f"{directory / NAME_FILE}: {exc}") from None
    return tuple(cosigners)


def load_logs(vkey_files: Sequence[Path], origin: str | None = None) -> tuple[WitnessedLog, ...]:
    """The logs to follow from their verifier key files. A log's origin is its key's name (the
    audit log names its checkpoint key after its origin, ``bhxh-integrity/audit/<log id>``);
    ``origin`` overrides that for a single file whose key is named otherwise."""
    if origin is not None and len(vkey_files) != 1:
        raise ConfigurationError("--origin applies to exactly one --log file")
    grouped: dict[str, list[VerifierKey]] = {}
    for path in vkey_files:
        try:
            keys = load_verifier_keys(path.read_text())
        except OSError as exc:
            raise ConfigurationError(f"cannot read log key {path}: {exc.strerror}") from exc
        except (MalformedVerifierKey, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{path}: not a signed-note verifier key file ({exc})") from None
        for key in keys:
            grouped.setdefault(origin or key.name, []).append(key)
    if not grouped:
        raise ConfigurationError("a witness needs at least one --log verifier key")
    return tuple(WitnessedLog(o, tuple(dict.fromkeys(keys))) for o, keys in grouped.items())


class RecordStore:
    """Each log's latest cosigned checkpoint, as the signed note itself, in
    ``logs/<sha256(origin) hex>``: the file a monitor is served unchanged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / LOGS_DIR
        self.directory.mkdir(mode=0o700, exist_ok=True)

    def path(self, origin: str) -> Path:
        return self.directory / origin_hash(origin)

    def load(self, origin: str) -> LogRecord | None:
        try:
            text = self.path(origin).read_text()
        except FileNotFoundError:
            return None
        return LogRecord.from_text(text)

    def load_by_hash(self, hex_hash: str) -> LogRecord | None:
        if len(hex_hash) != 64 or any(ch not in "0123456789abcdef" for ch in hex_hash):
            return None
        try:
            return LogRecord.from_text((self.directory / hex_hash).read_text())
        except FileNotFoundError:
            return None

    def save(self, record: LogRecord) -> None:
        """Replace the log's record atomically and durably: rename is atomic on POSIX, and the
        fsync of the data then of the directory makes both the content and the new name
        survive a crash before the witness answers."""
        target = self.path(record.origin)
        temporary = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, record.to_text().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
        _fsync_dir(self.directory)


@dataclass
class WitnessService:
    """``add-checkpoint`` end to end: parse, decide under the log's lock, persist, answer."""

    witness: Witness
    store: RecordStore
    clock: UnixClock = unix_now

    def __post_init__(self) -> None:
        self._locks = {log.origin: threading.Lock() for log in self.witness.logs}

    def add_checkpoint(self, body: bytes) -> Cosigned:
        """Raises CheckpointRefused (the reason says which HTTP answer) or OSError (storage)."""
        request = AddCheckpoint.from_body(body)
        origin = self.witness.log_for(request.signed.checkpoint.origin).origin
        # Held from reading the old size to the durable write of the new record, so two
        # requests can never both advance from the same size (tlog-witness's rollback race).
        with self._locks[origin]:
            result = self.witness.add_checkpoint(request, self.store.load(origin), self.clock())
            self.store.save(result.record)
        return result

    def latest(self, hex_origin_hash: str) -> LogRecord | None:
        """The latest cosigned checkpoint of the log whose origin hashes to ``hex_origin_hash``."""
        return self.store.load_by_hash(hex_origin_hash)


class DirectoryLock:
    """An exclusive lock on a witness directory for the life of the serving process, so that
    two processes can never interleave their records (the per-log locks are in-process)."""

    def __init__(self, directory: Path) -> None:
        path = directory / LOCK_FILE
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ConfigurationError(f"another witness process is serving {directory}") from None

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def open_witness(
    directory: Path, vkey_files: Sequence[Path], origin: str | None = None, clock: UnixClock = unix_now
) -> tuple[WitnessService, DirectoryLock]:
    """The witness of ``directory`` following the logs of ``vkey_files``, with the directory's
    lock held (release it when the server stops)."""
    cosigners = load_cosigners(directory)
    logs = load_logs(vkey_files, origin)
    lock = DirectoryLock(directory)
    try:
        store = RecordStore(directory)
        for log in logs:
            store.load(log.origin)  # a record that does not parse stops the start, not a request
    except BaseException:
        lock.release()
        raise
    return WitnessService(Witness(cosigners, logs), store, clock), lock
