"""The NDJSON export of the audit log and its offline verification.

One line per entry, the entry object in RFC 8785 form (with ``pii_salt`` (hex) and
``pii_data`` only when asked and allowed), and one line ``{"checkpoint": "<note text>"}`` per
checkpoint, written right after the entry that completes its tree size so that a reader can
check each checkpoint as it streams. A checkpoint with an RFC 3161 time-stamp carries it in the
same line as ``"timestamp": "<base64 DER>"`` (audit.timestamps); older exports have none. The service ends every export with a checkpoint signed
over exactly the exported entries, so a genuine export is anchored from its first entry to its
last. The offline verifier needs only the file and the log's public key (and, to prove that
nothing was cut or rewritten since an earlier run, the checkpoint the auditor kept then); it
reads the file twice (checkpoints first, then entries) in constant memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from audit.checkpoint import SignedCheckpoint, SignedNote, VerifierKey
from audit.entry import Entry, canonical
from audit.erasure import ERASED_ACTION, honoured_seq
from audit.errors import MalformedCheckpoint, MalformedExport, MalformedVerifierKey
from audit.policy import Policy
from audit.timestamps import TIMESTAMP_KEY, check_timestamps
from audit.timestamps import encode as encode_timestamp
from audit.verify import ChainVerifier, VerificationReport
from audit.verify_fast import FastChainVerifier
from audit.verify_report import Fault, FaultReport, TimestampCheck

CHECKPOINT_KEY = "checkpoint"
_CHECKPOINT_MARK = b'"checkpoint"'
_ERASED_MARK = ERASED_ACTION.encode()
_PII_MARK = b'"pii_salt"'


class _PiiRow(Protocol):
    # A read-only member, so frozen dataclasses (audit.store.StoredPii) satisfy it.
    @property
    def salt(self) -> bytes: ...

    def personal(self) -> Any: ...


def entry_line(entry: Entry, personal: _PiiRow | None = None, *, include_pii: bool = False) -> bytes:
    obj = entry.to_dict()
    if include_pii and personal is not None:
        obj["pii_salt"] = personal.salt.hex()
        obj["pii_data"] = personal.personal()
    return canonical(obj) + b"\n"


def checkpoint_line(note: str, timestamp: bytes | None = None) -> bytes:
    """A checkpoint line; ``timestamp`` is its RFC 3161 TimeStampResp DER, when it has one."""
    obj = {CHECKPOINT_KEY: note}
    if timestamp is not None:
        obj[TIMESTAMP_KEY] = encode_timestamp(timestamp)
    return canonical(obj) + b"\n"


def export_lines(
    entries: Iterable[tuple[Entry, _PiiRow | None]],
    checkpoint_notes: Iterable[str | tuple[str, bytes | None]],
    *,
    include_pii: bool = False,
) -> Iterator[bytes]:
    """Entries in seq order with each checkpoint after the entry completing its tree size. A
    checkpoint is its note, or ``(note, time-stamp DER or None)``."""
    notes = []
    for item in checkpoint_notes:
        note, stamp = (item, None) if isinstance(item, str) else item
        try:
            size = SignedCheckpoint.from_text(note).size
        except MalformedCheckpoint:
            size = -1  # exported as kept; the verifier reports it
        notes.append((size, note, stamp))
    notes.sort(key=lambda kept: kept[0])
    pending = iter(notes)
    nxt = next(pending, None)
    while nxt is not None and nxt[0] <= 0:
        yield checkpoint_line(nxt[1], nxt[2])
        nxt = next(pending, None)
    for entry, personal in entries:
        yield entry_line(entry, personal, include_pii=include_pii)
        while nxt is not None and nxt[0] <= entry.seq + 1:
            yield checkpoint_line(nxt[1], nxt[2])
            nxt = next(pending, None)
    while nxt is not None:
        yield checkpoint_line(nxt[1], nxt[2])
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


@dataclass(frozen=True)
class ExportScan:
    """What the first pass over an export learns: its checkpoint notes, the seqs whose personal
    data was erased (by a marker the verifier honours, ``audit.erasure``), and whether it carries
    personal data (an export made with ``include_pii``). ``timestamps`` holds, for each note in
    order, the raw value of its line's ``timestamp`` member (None when the line has none)."""

    notes: list[str]
    erased: set[int]
    with_pii: bool
    timestamps: list[object] = field(default_factory=list)


def scan_export(path: Path) -> tuple[list[str], set[int]]:
    """First pass: the checkpoint notes and the seqs whose personal data was erased."""
    scan = scan_export_fully(path)
    return scan.notes, scan.erased


def scan_export_fully(path: Path) -> ExportScan:
    notes: list[str] = []
    stamps: list[object] = []
    erased: set[int] = set()
    with_pii = False
    for line in _lines(path):
        if _CHECKPOINT_MARK in line:
            obj = _loads(line)
            note = _checkpoint_note(obj)
            if note is not None:
                notes.append(note)
                stamps.append(obj.get(TIMESTAMP_KEY))
                continue
        if _ERASED_MARK in line or (not with_pii and _PII_MARK in line):
            obj = _loads(line)
            if isinstance(obj, dict):
                with_pii = with_pii or "pii_salt" in obj
                # Only a marker the service or an operator wrote, naming its approver and reason, counts.
                seq = honoured_seq(obj.get("seq"), obj.get("actor"), obj.get("action"), obj.get("data"))
                if seq is not None:
                    erased.add(seq)
    return ExportScan(notes, erased, with_pii, stamps)


def verify_export(
    path: Path,
    public_key_text: str,
    *,
    origin: str | None = None,
    trusted_checkpoint: SignedCheckpoint | None = None,
    progress: Callable[[int], None] | None = None,
    reference: bool = False,
    tsa_roots: Sequence[x509.Certificate] | None = None,
    require_timestamps: bool = False,
    policy: Policy | None = None,
) -> VerificationReport:
    """Verify an export file with no database: only the file and the log's public key(s).

    With ``policy`` (C2SP tlog-policy) ``public_key_text`` is not read: the policy's log keys
    sign, and a checkpoint anchors entries only when its witness quorum cosigned it.

    ``trusted_checkpoint`` is a checkpoint the auditor kept from an earlier run: the export
    must hold its tree (same root at its size), else ``inconsistent_history`` or ``cut_tail``.
    ``reference`` runs the reference verifier alone (slower, every line parsed).
    ``tsa_roots`` are the roots the checkpoints' RFC 3161 time-stamps must chain to (without
    them a time-stamp is reported, not checked); ``require_timestamps`` makes a checkpoint
    without one a fault."""
    scan = scan_export_fully(path)
    notes = scan.notes
    names = [sig.name for note in notes for sig in _signatures(note)]
    if trusted_checkpoint is not None:
        names += [sig.name for sig in trusted_checkpoint.note.signatures]
    keys = list(policy.logs) if policy is not None else load_verifier_keys(public_key_text, names)
    kind = ChainVerifier if reference else FastChainVerifier
    # An export carrying personal data must carry all of it that was not erased: there a
    # commitment without its data is a fault, unless an honoured erasure marker names it.
    verifier = kind(
        keys,
        origin=origin,
        trusted_checkpoint=trusted_checkpoint,
        erased=scan.erased,
        pii_expected=scan.with_pii,
        policy=policy,
    )
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
    report = verifier.finish()
    checks, faults = check_timestamps(
        list(zip(notes, scan.timestamps, strict=True)), tsa_roots, require=require_timestamps
    )
    return with_timestamps(report, checks, faults)


def with_timestamps(
    report: VerificationReport, checks: Sequence[TimestampCheck], faults: Sequence[FaultReport]
) -> VerificationReport:
    """The report with the time-stamp checks, their faults before the unanchored range (which
    stays last: it is what remains unproven, not an explanation)."""
    if not checks and not faults:
        return report
    kept = [f for f in report.faults if f.kind is not Fault.UNANCHORED]
    unanchored = [f for f in report.faults if f.kind is Fault.UNANCHORED]
    return replace(report, faults=(*kept, *faults, *unanchored), timestamps=tuple(checks))


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
