"""The NDJSON export (DESIGN.md "Audit log format") and its offline verification.

One line per entry, the entry object in RFC 8785 form (with ``pii_salt`` (hex) and
``pii_data`` only when asked and allowed), and one line ``{"checkpoint": "<note text>"}`` per
checkpoint, written right after the entry that completes its tree size so that a reader can
check each checkpoint as it streams. The offline verifier needs only the file and the log's
public key; it reads the file twice (checkpoints first, then entries) in constant memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from audit.checkpoint import SignedCheckpoint, SignedNote, VerifierKey
from audit.entry import Entry, canonical
from audit.errors import MalformedCheckpoint, MalformedExport, MalformedVerifierKey
from audit.verify import ERASED_ACTION, ChainVerifier, VerificationReport

CHECKPOINT_KEY = "checkpoint"
_CHECKPOINT_MARK = b'"checkpoint"'
_ERASED_MARK = ERASED_ACTION.encode()


class _PiiRow(Protocol):
    salt: bytes

    def personal(self) -> Any: ...


def entry_line(entry: Entry, personal: _PiiRow | None = None, *, include_pii: bool = False) -> bytes:
    obj = entry.to_dict()
    if include_pii and personal is not None:
        obj["pii_salt"] = personal.salt.hex()
        obj["pii_data"] = personal.personal()
    return canonical(obj) + b"\n"


def checkpoint_line(note: str) -> bytes:
    return canonical({CHECKPOINT_KEY: note}) + b"\n"


def export_lines(
    entries: Iterable[tuple[Entry, _PiiRow | None]], checkpoint_notes: Iterable[str], *, include_pii: bool = False
) -> Iterator[bytes]:
    """Entries in seq order with each checkpoint after the entry completing its tree size."""
    notes = []
    for note in checkpoint_notes:
        try:
            size = SignedCheckpoint.from_text(note).size
        except MalformedCheckpoint:
            size = -1  # exported as kept; the verifier reports it
        notes.append((size, note))
    notes.sort(key=lambda pair: pair[0])
    pending = iter(notes)
    nxt = next(pending, None)
    while nxt is not None and nxt[0] <= 0:
        yield checkpoint_line(nxt[1])
        nxt = next(pending, None)
    for entry, personal in entries:
        yield entry_line(entry, personal, include_pii=include_pii)
        while nxt is not None and nxt[0] <= entry.seq + 1:
            yield checkpoint_line(nxt[1])
            nxt = next(pending, None)
    while nxt is not None:
        yield checkpoint_line(nxt[1])
        nxt = next(pending, None)


def load_verifier_keys(text: str, names: Iterable[str] = ()) -> list[VerifierKey]:
    """Trusted keys from a file's text: signed-note verifier keys (one per line, ``#`` comments)
    or a PEM Ed25519 public key. A PEM key carries no name, so it is bound to each signer name
    in ``names`` (the key id still has to match for a signature to count)."""
    if "-----BEGIN" in text:
        try:
            public = load_pem_public_key(text.encode())
        except ValueError:
            raise MalformedVerifierKey("the public key file is not a PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise MalformedVerifierKey("the public key must be Ed25519")
        keys = []
        for name in dict.fromkeys(names):
            try:
                keys.append(VerifierKey.from_public_key(name, public))
            except MalformedVerifierKey:
                continue
        return keys
    keys = []
    for number, line in enumerate((line.strip() for line in text.splitlines()), 1):
        if line and not line.startswith("#"):
            try:
                keys.append(VerifierKey.from_text(line))
            except MalformedVerifierKey as exc:
                raise MalformedVerifierKey(f"line {number}: not a verifier key ({exc})") from None
    if not keys:
        raise MalformedVerifierKey("the public key file holds no verifier key")
    return keys


def _checkpoint_note(obj: Any) -> str | None:
    if isinstance(obj, dict) and CHECKPOINT_KEY in obj and "seq" not in obj:
        note = obj[CHECKPOINT_KEY]
        return note if isinstance(note, str) else ""
    return None


def scan_export(path: Path) -> tuple[list[str], set[int]]:
    """First pass: the checkpoint notes and the seqs whose personal data was erased."""
    notes: list[str] = []
    erased: set[int] = set()
    for line in _lines(path):
        if _CHECKPOINT_MARK in line:
            obj = _loads(line)
            note = _checkpoint_note(obj)
            if note is not None:
                notes.append(note)
                continue
        if _ERASED_MARK in line:
            obj = _loads(line)
            if isinstance(obj, dict) and obj.get("action") == ERASED_ACTION and isinstance(obj.get("data"), dict):
                seq = obj["data"].get("seq")
                if type(seq) is int:
                    erased.add(seq)
    return notes, erased


def verify_export(
    path: Path,
    public_key_text: str,
    *,
    origin: str | None = None,
    trusted_checkpoint: SignedCheckpoint | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerificationReport:
    """Verify an export file with no database: only the file and the log's public key(s)."""
    notes, erased = scan_export(path)
    names = [sig.name for note in notes for sig in _signatures(note)]
    if trusted_checkpoint is not None:
        names += [sig.name for sig in trusted_checkpoint.note.signatures]
    keys = load_verifier_keys(public_key_text, names)
    verifier = ChainVerifier(keys, origin=origin, trusted_checkpoint=trusted_checkpoint, erased=erased)
    for note in notes:
        verifier.add_checkpoint_text(note)
    add = verifier.add_line
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise MalformedExport(f"cannot read export {path}: {exc.strerror}") from None
    with handle:
        if progress is None:
            for line in handle:
                if line != b"\n":
                    add(line)
        else:
            for count, line in enumerate(handle, 1):
                if line != b"\n":
                    add(line)
                progress(count)
    return verifier.finish()


def _signatures(note: str) -> Sequence[Any]:
    try:
        return SignedNote.from_text(note).signatures
    except MalformedCheckpoint:
        return ()


def _loads(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _lines(path: Path) -> Iterator[bytes]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise MalformedExport(f"cannot read export {path}: {exc.strerror}") from None
    with handle:
        for line in handle:
            if line.strip():
                yield line
