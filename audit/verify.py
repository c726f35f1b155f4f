"""The streaming verifier: entries in log order, checkpoints, trusted keys and optionally a
checkpoint the auditor kept, in constant memory.

Each entry is checked as it arrives: its hash (JCS + SHA-256), its place (``seq``), its link
(``prev``) and its personal data; the RFC 9162 root is kept as a compact range (≤ log2 n
hashes) and compared with every checkpoint when the stream reaches the checkpoint's size.
When the chain breaks, the verifier looks at most ``WINDOW`` entries ahead to name the fault
(a changed, inserted, deleted or reordered entry) and the first bad ``seq``; chain and tree
checks stop there, because every later root depends on the broken part.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from audit import pii as pii_commitments
from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.entry import GENESIS_PREV, HASH_HEX_LEN, LEAF_PREFIX, Entry, canonical, hash_fields
from audit.errors import CheckpointSignatureInvalid, InvalidEntry, MalformedCheckpoint, PiiMismatch
from audit.merkle import EMPTY_ROOT, CompactRange

# How far the verifier looks ahead of (and back from) a break to classify it; a reordering
# farther than this is reported as a deletion at the first missing seq.
WINDOW = 32
MAX_FAULTS = 100
ERASED_ACTION = "audit.pii.erased"
CHECKPOINT_KEY = "checkpoint"
_HASH_MEMBER = b',"hash":"'
_HASH_KEY_LEN = len(_HASH_MEMBER)
# An entry line exactly as the exporter writes it (RFC 8785 member order, our field formats):
# the head up to the action, and the tail from the hash member to the end.
# Tail groups: 1 hash, 2 pii, 3 prev, 4 seq, 5 ts.
_CANONICAL_HEAD = re.compile(rb'\{"action":"([a-z0-9_.]{1,100})",')
_CANONICAL_TAIL = re.compile(
    rb',"hash":"([0-9a-f]{64})","pii":(null|"[0-9a-f]{64}"),"prev":"([0-9a-f]{64})",'
    rb'"seq":(0|[1-9][0-9]{0,15}),"subject":"(?:[^"\\]|\\.)*",'
    rb'"ts":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)"\}'
)
_HASH_MEMBER_LEN = len(_HASH_MEMBER) + HASH_HEX_LEN + 1
_sha256 = hashlib.sha256
_decode = json.JSONDecoder().decode
# The C scanner behind json.loads, called directly: one export line is one JSON object.
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]


# An entry as stored: seq, ts, actor, action, subject, data (JCS text), pii, prev, hash.
StoredRow = tuple[int, str, str, str, str, str, "str | None", str, str]


class Fault(StrEnum):
    CHANGED = "changed"
    INSERTED = "inserted"
    DELETED = "deleted"
    REORDERED = "reordered"
    CUT_TAIL = "cut_tail"
    FORGED_CHECKPOINT = "forged_checkpoint"
    INCONSISTENT_HISTORY = "inconsistent_history"
    PII_MISMATCH = "pii_mismatch"


@dataclass(frozen=True)
class FaultReport:
    """One fault. ``seq`` is the first bad entry; None when no entry is to blame (a checkpoint
    that is malformed or not signed by a trusted key). ``tree_size`` names the checkpoint."""

    kind: Fault
    seq: int | None
    detail: str
    tree_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "seq": self.seq, "detail": self.detail, "tree_size": self.tree_size}


@dataclass(frozen=True)
class CheckpointCheck:
    """A checkpoint as the verifier saw it. ``matches`` is None when the stream never reached
    its size (or the chain broke before it)."""

    source: str  # "log" (stored or exported) or "trusted" (kept by the auditor)
    tree_size: int | None
    root_hash: str | None
    signers: tuple[str, ...]
    signature_valid: bool
    matches: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "signers": list(self.signers),
            "signature_valid": self.signature_valid,
            "matches": self.matches,
        }


@dataclass(frozen=True)
class VerificationReport:
    """The verdict: machine form via ``to_dict``, human forms (CLI, HTML) rendered from it."""

    faults: tuple[FaultReport, ...]
    entries_checked: int
    first_seq: int | None
    last_seq: int | None
    root_hash: str  # RFC 9162 root over all entries read, hex
    checkpoints: tuple[CheckpointCheck, ...]
    verified_tree_size: int  # the largest size covered by a matching, validly signed checkpoint
    pii_checked: int
    pii_erased: int
    pii_unavailable: int
    actions_per_day: tuple[tuple[str, str, int], ...]  # (YYYY-MM-DD, action, count)
    faults_truncated: bool = False

    @property
    def ok(self) -> bool:
        return not self.faults

    @property
    def fault(self) -> Fault | None:
        return self.faults[0].kind if self.faults else None

    @property
    def first_bad_seq(self) -> int | None:
        return self.faults[0].seq if self.faults else None

    @property
    def uncovered_entries(self) -> int:
        """Entries after the last matching signed checkpoint: not yet anchored by a signature."""
        return max(0, self.entries_checked - self.verified_tree_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "fault": self.fault.value if self.fault else None,
            "first_bad_seq": self.first_bad_seq,
            "faults": [f.to_dict() for f in self.faults],
            "faults_truncated": self.faults_truncated,
            "entries_checked": self.entries_checked,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "tree_size": self.entries_checked,
            "root_hash": self.root_hash,
            "verified_tree_size": self.verified_tree_size,
            "uncovered_entries": self.uncovered_entries,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "pii": {"checked": self.pii_checked, "erased": self.pii_erased, "unavailable": self.pii_unavailable},
            "actions_per_day": [{"day": d, "action": a, "count": n} for d, a, n in self.actions_per_day],
        }


@dataclass
class _Item:
    """One entry as read, with its recomputed hash; ``seq``/``prev`` are None when mistyped."""

    body: dict[str, Any]
    claimed: str
    computed: str | None
    personal: tuple[bytes, Any] | None
    seq: int | None = field(init=False)
    prev: str | None = field(init=False)

    def __post_init__(self) -> None:
        seq, prev = self.body.get("seq"), self.body.get("prev")
        self.seq = seq if type(seq) is int else None
        self.prev = prev if isinstance(prev, str) else None

    @property
    def intact(self) -> bool:
        return self.computed is not None and self.computed == self.claimed


def _hash_body(body: Mapping[str, Any]) -> str | None:
    try:
        return hashlib.sha256(LEAF_PREFIX + canonical(body)).hexdigest()
    except (ValueError, TypeError, RecursionError):
        return None


@dataclass
class _PendingCheckpoint:
    signed: SignedCheckpoint
    source: str
    signers: tuple[str, ...]
    matches: bool | None = None


class ChainVerifier:
    """Feed checkpoints (any time before their size is reached), then entries in order, then
    call ``finish``. Memory: the compact range, a window of ``WINDOW`` recent hashes, the
    checkpoints and the per-day chart counts — independent of the number of entries."""

    def __init__(
        self,
        trusted_keys: Sequence[VerifierKey],
        *,
        origin: str | None = None,
        trusted_checkpoint: SignedCheckpoint | None = None,
        erased: Iterable[int] = (),
        pii_expected: bool = False,
    ) -> None:
        self._keys = list(trusted_keys)
        self._origin = origin
        self._erased = set(erased)
        self._pii_expected = pii_expected
        self._faults: list[FaultReport] = []
        self._faults_truncated = False
        self._checkpoints: list[_PendingCheckpoint] = []
        self._by_size: dict[int, list[_PendingCheckpoint]] = {}
        self._invalid_checkpoints: list[CheckpointCheck] = []
        self._tree = CompactRange()
        self._recent: deque[str] = deque([GENESIS_PREV], maxlen=WINDOW + 1)  # hashes at positions p-1-k
        self._position = 0
        self._read = 0
        self._chain_broken = False
        self._suspect: _Item | None = None
        self._lookahead: list[_Item] = []
        self._history_fault = False
        self._deferred: deque[tuple[int, _PendingCheckpoint, bytes]] = deque()
        self._verified_size = 0
        self._last_matched_size = 0
        self._first_seq: int | None = None
        self._last_seq: int | None = None
        self._chart: Counter[tuple[str, str]] = Counter()
        self._raw_chart: Counter[tuple[bytes, bytes]] = Counter()  # the fast path's, decoded at the end
        self._pii_checked = self._pii_erased = self._pii_unavailable = 0
        if trusted_checkpoint is not None:
            self._add_checkpoint(trusted_checkpoint, "trusted")

    # ------------------------------------------------------------- checkpoints

    def add_checkpoint_text(self, note: str, *, source: str = "log") -> None:
        try:
            signed = SignedCheckpoint.from_text(note)
        except MalformedCheckpoint as exc:
            self._fault(Fault.FORGED_CHECKPOINT, None, f"malformed checkpoint: {exc}")
            self._invalid_checkpoints.append(CheckpointCheck(source, None, None, (), False, None))
            return
        self._add_checkpoint(signed, source)

    def _add_checkpoint(self, signed: SignedCheckpoint, source: str) -> None:
        size = signed.size
        try:
            signers = tuple(k.name for k in signed.verify(self._keys))
        except CheckpointSignatureInvalid as exc:
            self._fault(Fault.FORGED_CHECKPOINT, None, f"{source} checkpoint at size {size}: {exc}", size)
            self._invalid_checkpoints.append(CheckpointCheck(source, size, signed.root_hash.hex(), (), False, None))
            return
        if self._origin is not None and signed.checkpoint.origin != self._origin:
            self._fault(Fault.FORGED_CHECKPOINT, None, f"{source} checkpoint at size {size} is for another log", size)
            self._invalid_checkpoints.append(
                CheckpointCheck(source, size, signed.root_hash.hex(), signers, True, False)
            )
            return
        pending = _PendingCheckpoint(signed, source, signers)
        self._checkpoints.append(pending)
        if size == 0:
            self._compare(pending, EMPTY_ROOT)
        elif size <= self._position and not self._chain_broken:
            # Arrived after the stream passed its size: the root there is no longer known.
            pending.matches = None
        else:
            self._by_size.setdefault(size, []).append(pending)

    def _compare(self, pending: _PendingCheckpoint, root: bytes) -> None:
        size = pending.signed.size
        pending.matches = pending.signed.root_hash == root
        if pending.matches:
            self._last_matched_size = max(self._last_matched_size, size)
            self._verified_size = max(self._verified_size, size)
            return
        if not self._history_fault:
            self._history_fault = True
            who = "the auditor's trusted checkpoint" if pending.source == "trusted" else "a signed checkpoint"
            self._fault(
                Fault.INCONSISTENT_HISTORY,
                self._last_matched_size,
                f"the entries' Merkle root at size {size} differs from {who}: entries in "
                f"[{self._last_matched_size}, {size}) were rewritten",
                size,
            )

    # ----------------------------------------------------------------- entries

    def add_entry(self, entry: Entry, personal: tuple[bytes, Any] | None = None) -> None:
        """One entry (in seq order), with its stored (salt, personal data)."""
        body = entry.body()
        self._add(_Item(body, entry.hash, _hash_body(body), personal))

    def add_stored(self, row: StoredRow, personal: tuple[bytes, Any] | None = None) -> None:
        """One entry as stored (columns, ``data`` as its stored JCS text), in seq order.

        The hash is first computed over the stored text as it is; only when that does not give
        the recorded hash is ``data`` parsed and canonicalised again (the reference path), so a
        semantically equal but re-serialised ``data`` is judged by its content, never its form.
        """
        seq, ts, actor, action, subject, data_text, commitment, prev, claimed = row
        try:
            fast = hash_fields(seq, ts, actor, action, subject, data_text.encode(), commitment, prev) == claimed
        except (InvalidEntry, TypeError, AttributeError):  # a mistyped column, as an insider could write
            fast = False
        if fast:
            self._read += 1
            self._observe_fields(ts, action, seq, commitment, personal)
            if self._suspect is None and not self._chain_broken and seq == self._position and prev == self._recent[0]:
                self._accept(claimed)
                return
        try:
            data: Any = json.loads(data_text)
        except ValueError:
            data = data_text  # not JSON: the entry cannot hash to its recorded value
        body = {
            "seq": seq,
            "ts": ts,
            "actor": actor,
            "action": action,
            "subject": subject,
            "data": data,
            "pii": commitment,
            "prev": prev,
        }
        if fast:
            self._route(_Item(body, claimed, claimed, personal))
        else:
            self._add(_Item(body, claimed, _hash_body(body), personal))

    def add_line(self, line: bytes) -> None:
        """One export line: an entry (checked here) or a checkpoint (skipped: checkpoints are
        added beforehand with ``add_checkpoint_text``)."""
        line = line.rstrip(b"\r\n")
        # Fastest path, no JSON parsing at all. The exporter writes each line as JCS(entry);
        # JCS orders the members action, actor, data, hash, pii, prev, seq, subject, ts, so the
        # body's JCS bytes are the line without its hash member. The last raw `,"hash":"` is
        # that member (a JSON string cannot hold a raw quote, and the members after it are hex,
        # digits and one string). If the line minus that member hashes to the claimed value, it
        # IS the byte string the log hashed at append time (SHA-256 collision resistance), and
        # the fields read from its prefix (action) and suffix (the strict tail pattern, which
        # must reach the final '}') are the logged ones. Anything else, tampered or merely laid
        # out differently, goes to the paths below, which decide.
        at = line.rfind(_HASH_MEMBER)
        if at > 0:
            tail = _CANONICAL_TAIL.fullmatch(line, at)
            head = _CANONICAL_HEAD.match(line) if tail is not None else None
            if head is not None and tail is not None and head.end() <= at:
                claimed = tail.group(1).decode()
                if _sha256(LEAF_PREFIX + line[:at] + line[tail.end(1) + 1 :]).hexdigest() == claimed:
                    self._add_matched(head.group(1), tail, claimed)
                    return
        try:
            text = line.decode()
            try:
                obj, end = _scan(text, 0)
            except StopIteration:
                end = -1
            if end != len(text):
                obj = _decode(text)  # leading/trailing blanks or garbage: the full decoder decides
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            self.add_unreadable()
            return
        if type(obj) is not dict:
            self.add_unreadable()
            return
        if CHECKPOINT_KEY in obj and "seq" not in obj:
            return
        claimed = obj.get("hash")
        if (
            type(claimed) is str
            and len(claimed) == HASH_HEX_LEN
            and claimed.isascii()
            and "pii_data" not in obj
            and "pii_salt" not in obj
        ):
            # Fast path, no re-encoding. The exporter writes each line as JCS(entry), so the
            # entry body's JCS bytes are the line without its `,"hash":"…"` member. If those
            # bytes hash to the claimed value, they ARE the bytes the log hashed at append time
            # (SHA-256 collision resistance), and the removed member was the top-level "hash"
            # (the authentic body has no top-level "hash", and the parsed line has one); so the
            # parsed fields are exactly the logged ones. Any other case — a line in another
            # JSON layout, a tampered line — takes the reference path below, which decides.
            at = line.find(_HASH_MEMBER + claimed.encode() + b'"')
            if at > 0 and _sha256(LEAF_PREFIX + line[:at] + line[at + _HASH_MEMBER_LEN :]).hexdigest() == claimed:
                del obj["hash"]
                self._add_intact(obj, claimed)
                return
        self.add_object(obj)

    def add_object(self, obj: dict[str, Any]) -> None:
        """One entry object from an export line (consumed: its keys are popped)."""
        claimed = obj.pop("hash", None)
        salt_hex = obj.pop("pii_salt", None)
        has_data = "pii_data" in obj
        data = obj.pop("pii_data", None)
        personal = None
        if salt_hex is not None or has_data:
            try:
                personal = (bytes.fromhex(salt_hex), data) if isinstance(salt_hex, str) else (b"", data)
            except ValueError:
                personal = (b"", data)
        self._add(_Item(obj, claimed if isinstance(claimed, str) else "", _hash_body(obj), personal))

    def add_unreadable(self) -> None:
        """An export line that is not JSON where an entry should be."""
        self._add(_Item({}, "", None, None))

    def _add_matched(self, action: bytes, tail: re.Match[bytes], digest: str) -> None:
        """An authentic canonical line, fields taken from the patterns (see ``add_line``)."""
        self._read += 1
        seq = int(tail.group(4))
        self._raw_chart[(tail.group(5)[:10], action)] += 1
        if self._first_seq is None:
            self._first_seq = seq
        self._last_seq = seq
        if tail.group(2) != b"null":
            if seq in self._erased:
                self._pii_erased += 1
            elif self._pii_expected:
                self._fault(Fault.PII_MISMATCH, seq, "personal data missing without an audit.pii.erased entry")
            else:
                self._pii_unavailable += 1
        if self._suspect is None and not self._chain_broken and seq == self._position:
            if tail.group(3).decode() == self._recent[0]:
                self._accept(digest)
                return
        body = _decode(tail.string.decode())
        body.pop("hash", None)
        self._route(_Item(body, digest, digest, None))

    def _add_intact(self, body: dict[str, Any], digest: str) -> None:
        """An entry whose hash is known to be right: the common case, kept lean."""
        self._read += 1
        seq = body.get("seq")
        self._observe(body, seq if type(seq) is int else None, None)
        if self._suspect is None and not self._chain_broken:
            if seq == self._position and type(seq) is int and body.get("prev") == self._recent[0]:
                self._accept(digest)
                return
        self._route(_Item(body, digest, digest, None))

    def _add(self, item: _Item) -> None:
        self._read += 1
        self._observe(item.body, item.seq, item.personal)
        if self._suspect is None and not self._chain_broken:
            if item.intact and item.seq == self._position and item.prev == self._recent[0]:
                self._accept(item.claimed)
                return
        self._route(item)

    def _route(self, item: _Item) -> None:
        """An entry that does not simply continue the chain: suspect it, or feed the look-ahead."""
        if self._suspect is not None:
            self._lookahead.append(item)
            if len(self._lookahead) >= WINDOW:
                self._classify()
        elif not self._chain_broken:
            self._suspect = item

    def _observe(self, body: dict[str, Any], seq: int | None, personal: tuple[bytes, Any] | None) -> None:
        self._observe_fields(body.get("ts"), body.get("action"), seq, body.get("pii"), personal)

    def _observe_fields(
        self, ts: Any, action: Any, seq: int | None, commitment: Any, personal: tuple[bytes, Any] | None
    ) -> None:
        """Checks that do not depend on the chain: personal data, and the chart."""
        if type(ts) is str and type(action) is str:
            self._chart[(ts[:10], action)] += 1
        if seq is not None:
            if self._first_seq is None:
                self._first_seq = seq
            self._last_seq = seq
        if personal is not None:
            salt, data = personal
            if not isinstance(commitment, str):
                self._fault(Fault.PII_MISMATCH, seq, "personal data stored for an entry without a commitment")
                return
            try:
                pii_commitments.check(commitment, salt, data)
            except PiiMismatch as exc:
                self._fault(Fault.PII_MISMATCH, seq, str(exc))
                return
            self._pii_checked += 1
        elif commitment is not None:
            if seq in self._erased:
                self._pii_erased += 1
            elif self._pii_expected:
                self._fault(Fault.PII_MISMATCH, seq, "personal data missing without an audit.pii.erased entry")
            else:
                self._pii_unavailable += 1

    def _accept(self, digest: str) -> None:
        self._recent.appendleft(digest)
        self._tree.push(bytes.fromhex(digest))
        self._position += 1
        waiting = self._by_size.pop(self._position, None)
        if waiting:
            root = self._tree.root()
            self._deferred.extend((self._position, pending, root) for pending in waiting)
        # A root is judged only WINDOW entries later: if the chain breaks before then, the
        # break (an inserted or rehashed entry) is the precise explanation of a mismatch.
        deferred = self._deferred
        while deferred and deferred[0][0] + WINDOW <= self._position:
            _, pending, root = deferred.popleft()
            self._compare(pending, root)

    # ---------------------------------------------------------- classification

    def _true_seq(self, item: _Item, candidates: Iterable[int]) -> int | None:
        """The seq under which ``item``'s content hashes to its claimed hash (a moved entry)."""
        if item.intact:
            return item.seq
        if item.computed is None and not item.body:
            return None
        trial = dict(item.body)
        for seq in candidates:
            if seq < 0 or seq == item.seq:
                continue
            trial["seq"] = seq
            if _hash_body(trial) == item.claimed:
                return seq
        return None

    def _recent_position(self, digest: str) -> int | None:
        """Position of an accepted entry among the last WINDOW (−1 stands for the genesis)."""
        for back, known in enumerate(self._recent):
            if known == digest:
                return self._position - 1 - back
        return None

    def _classify(self) -> None:
        before = len(self._faults)
        self._classify_break()
        chain_fault = self._faults[before] if len(self._faults) > before else None
        bad_from = chain_fault.seq if chain_fault is not None and chain_fault.seq is not None else self._position
        # Checkpoints still waiting to be judged: a mismatch at a size past the first bad entry
        # is explained by the break; one at or before it is a separate rewrite and is reported.
        while self._deferred:
            _, pending, root = self._deferred.popleft()
            if pending.signed.size <= bad_from or pending.signed.root_hash == root:
                self._compare(pending, root)
            else:
                pending.matches = False

    def _classify_break(self) -> None:
        item, ahead = self._suspect, self._lookahead
        if item is None:
            return
        self._suspect, self._lookahead = None, []
        self._chain_broken = True
        p = self._position
        last = self._recent[0]
        near = range(p - WINDOW, p + WINDOW + 1)
        true_seq = self._true_seq(item, sorted(near, key=lambda s: abs(s - p)))
        if true_seq is None:
            self._fault(Fault.CHANGED, p, f"entry {p} does not hash to its recorded hash")
        elif true_seq == p:
            if item.prev == last:
                self._fault(Fault.CHANGED, p, f"entry {p} has an altered seq field")
            else:
                self._classify_link(item, p)
        elif item.prev == last:
            self._fault(Fault.CHANGED, p, f"entry {p} carries seq {true_seq} but links to entry {p - 1}")
        elif true_seq > p:
            missing = range(p, true_seq)
            if any(self._true_seq(other, missing) in missing for other in ahead):
                self._fault(Fault.REORDERED, p, f"entry {p} appears after entry {true_seq}")
            else:
                self._fault(Fault.DELETED, p, f"entries {p}..{true_seq - 1} are missing")
        else:
            if self._recent_position(item.claimed) is not None:
                self._fault(Fault.INSERTED, p, f"entry {true_seq} appears again at position {p}")
                return
            before = self._recent_position(item.prev) if item.prev is not None else None
            if before is not None and before < p - 1:
                self._fault(Fault.INSERTED, before + 1, f"entries {before + 1}..{p - 1} were inserted")
            else:
                self._fault(Fault.REORDERED, p, f"entry {true_seq} appears at position {p}")

    def _classify_link(self, item: _Item, p: int) -> None:
        """``item`` is intact and in its place but does not link to the entry before it."""
        before = self._recent_position(item.prev) if item.prev is not None else None
        if before is not None and before < p - 1:
            self._fault(Fault.INSERTED, before + 1, f"entries {before + 1}..{p - 1} were inserted")
        else:
            bad = max(p - 1, 0)
            self._fault(Fault.CHANGED, bad, f"entry {bad} is not the entry that entry {p} was chained to")

    # ------------------------------------------------------------------ finish

    def _fault(self, kind: Fault, seq: int | None, detail: str, tree_size: int | None = None) -> None:
        if len(self._faults) >= MAX_FAULTS:
            self._faults_truncated = True
            return
        self._faults.append(FaultReport(kind, seq, detail, tree_size))

    def finish(self) -> VerificationReport:
        if self._suspect is not None:
            self._classify()
        count = self._position if not self._chain_broken else None
        while self._deferred:
            _, pending, root = self._deferred.popleft()
            self._compare(pending, root)
        if count is not None:
            beyond = [p for size, ps in self._by_size.items() if size > count for p in ps]
            if beyond:
                largest = max(p.signed.size for p in beyond)
                self._fault(
                    Fault.CUT_TAIL,
                    count,
                    f"the log ends at {count} entries but a signed checkpoint covers {largest}",
                    largest,
                )
        faults = sorted(self._faults, key=lambda f: (f.seq is None, f.seq if f.seq is not None else 0))
        checks = [
            CheckpointCheck(p.source, p.signed.size, p.signed.root_hash.hex(), p.signers, True, p.matches)
            for p in self._checkpoints
        ]
        for (day, action), n in self._raw_chart.items():
            self._chart[(day.decode(), action.decode())] += n
        self._raw_chart.clear()
        chart = tuple(sorted((day, action, n) for (day, action), n in self._chart.items()))
        return VerificationReport(
            faults=tuple(faults),
            entries_checked=self._read,
            first_seq=self._first_seq,
            last_seq=self._last_seq,
            root_hash=self._tree.root().hex(),
            checkpoints=tuple(checks + self._invalid_checkpoints),
            verified_tree_size=self._verified_size,
            pii_checked=self._pii_checked,
            pii_erased=self._pii_erased,
            pii_unavailable=self._pii_unavailable,
            actions_per_day=chart,
            faults_truncated=self._faults_truncated,
        )
