"""The reference verifier: entries in log order, checkpoints, trusted keys and optionally a
checkpoint the auditor kept, in constant memory. Written to be read by an auditor: every entry
is parsed, put back in RFC 8785 form and hashed; nothing is taken on trust from its layout.
(``audit.verify_fast`` is the one faster path; it must reach the same report, by property test.)

Each entry is checked as it arrives: its hash (JCS + SHA-256), its place (``seq``), its link
(``prev``) and its personal data; the RFC 9162 root is kept as a compact range (≤ log2 n
hashes) and compared with every checkpoint when the stream reaches the checkpoint's size.
When the chain breaks, the verifier looks at most ``WINDOW`` entries ahead to name the fault
(a changed, inserted, deleted or reordered entry) and the first bad ``seq``; chain and tree
checks stop there, because every later root depends on the broken part.

Finally the anchoring rule: entries not inside a trusted, matching signed checkpoint are
reported as ``unanchored`` (see ``audit.verify_report``).

Reading order for an auditor: ``_add`` is the whole path of one entry: ``_observe`` (personal
data and the chart, whatever the chain), then ``_continues`` and ``_accept`` (place, link, the
hash into the tree, the roots of the checkpoints of that size), or else ``_route`` to the break
classification (``_classify_break``), which names a fault found, never decides whether there is
one. ``_add_checkpoint`` checks a checkpoint's signature (or trust policy) and origin as it
arrives; ``_compare`` judges its root. ``finish`` adds the cut tail, orders the faults and
applies the anchoring rule.

A verification can be resumed: ``resume_state`` captures, between two entries of a log found
intact so far, exactly what the checks above carry from one entry to the next (the compact range,
the recent hashes, the roots at the checkpoint sizes reached and the report's counts), and
``ChainVerifier(resume=…)`` goes on from there. Fed the same checkpoints and the remaining
entries, it reaches the report one pass over the whole log gives.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit import pii as pii_commitments
from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.entry import GENESIS_PREV, LEAF_PREFIX, Entry, canonical
from audit.erasure import ERASED_ACTION
from audit.errors import CheckpointSignatureInvalid, MalformedCheckpoint, PiiMismatch
from audit.merkle import EMPTY_ROOT, CompactRange
from audit.policy import Policy
from audit.verify_report import CheckpointCheck, Fault, FaultReport, ResumeState, Verdict, VerificationReport

__all__ = [
    "CHECKPOINT_KEY",
    "ERASED_ACTION",
    "ChainVerifier",
    "CheckpointCheck",
    "Fault",
    "FaultReport",
    "ResumeState",
    "StoredRow",
    "Verdict",
    "VerificationReport",
]

# How far the verifier looks ahead of (and back from) a break to classify it; a reordering
# farther than this is reported as a deletion at the first missing seq.
WINDOW = 32
MAX_FAULTS = 100
CHECKPOINT_KEY = "checkpoint"

# An entry as stored: seq, ts, actor, action, subject, data (JCS text), pii, prev, hash.
StoredRow = tuple[int, str, str, str, str, str, "str | None", str, str]
Personal = tuple[bytes, Any]


@dataclass
class _Item:
    """One entry as read, with its recomputed hash; ``seq``/``prev`` are None when mistyped."""

    body: dict[str, Any]
    claimed: str
    computed: str | None
    personal: Personal | None
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
    """hex(SHA-256(0x00 ‖ JCS(body))), or None when the body has no JCS form."""
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
    # With a trust policy: whether the quorum of witnesses cosigned it (only then does it
    # anchor entries), and the signature lines by keys the policy does not list.
    witnessed: bool | None = None
    ignored: tuple[str, ...] = ()


class ChainVerifier:
    """Feed checkpoints (any time before their size is reached), then entries in order, then
    call ``finish``. Memory: the compact range, a window of ``WINDOW`` recent hashes, the
    checkpoints (and the root at each of their sizes) and the per-day chart counts — independent
    of the number of entries. With ``resume``, the entries fed start at ``resume.size``, and
    checkpoints of a size already passed are judged against the root kept for that size."""

    def __init__(
        self,
        trusted_keys: Sequence[VerifierKey],
        *,
        origin: str | None = None,
        trusted_checkpoint: SignedCheckpoint | None = None,
        erased: Iterable[int] = (),
        pii_expected: bool = False,
        policy: Policy | None = None,
        resume: ResumeState | None = None,
    ) -> None:
        self._keys = list(trusted_keys)
        # C2SP tlog-policy: a checkpoint anchors only when a log key of the policy signed it AND
        # its witness quorum cosigned it; its log keys are the trusted keys then.
        self._policy = policy
        if policy is not None:
            self._keys = list(policy.logs)
        self._origin = origin
        # Only seqs named by an erasure marker the verifier honours (audit.erasure.honoured_seq:
        # written by the service, naming the approving admin and the reason).
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
        self._pii_checked = self._pii_erased = self._pii_unavailable = 0
        # The root at every size where a checkpoint waited: a checkpoint of a size already
        # passed (after a resume) is judged against it.
        self._roots: dict[int, bytes] = {}
        if resume is not None:
            self._resume(resume)
        if trusted_checkpoint is not None:
            self._add_checkpoint(trusted_checkpoint, "trusted")

    # ------------------------------------------------------------------ resume

    def _resume(self, state: ResumeState) -> None:
        """Stand where ``state`` was taken: the next entry fed is entry ``state.size``."""
        self._tree = CompactRange(state.size, state.frontier)  # refuses a frontier of the wrong shape
        self._recent = deque(state.recent, maxlen=WINDOW + 1)
        self._position = self._read = state.size
        self._first_seq, self._last_seq = state.first_seq, state.last_seq
        self._chart = Counter({(day, action): n for day, action, n in state.actions_per_day})
        self._pii_checked, self._pii_erased = state.pii_checked, state.pii_erased
        self._pii_unavailable = state.pii_unavailable
        self._roots = dict(state.roots)

    def resume_state(self) -> ResumeState | None:
        """Where this verification stands now, to be resumed with the next entry; None unless
        every entry so far continued the chain and no fault was found: a state never carries a
        fault (or a break still being classified) forward."""
        if self._faults or self._suspect is not None or self._chain_broken or self._read != self._position:
            return None
        return ResumeState(
            size=self._position,
            frontier=self._tree.frontier,
            recent=tuple(self._recent),
            roots=tuple(sorted(self._roots.items())),
            first_seq=self._first_seq,
            last_seq=self._last_seq,
            actions_per_day=tuple(sorted((day, action, n) for (day, action), n in self._chart.items())),
            pii_checked=self._pii_checked,
            pii_erased=self._pii_erased,
            pii_unavailable=self._pii_unavailable,
        )

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
        witnessed: bool | None = None
        ignored: tuple[str, ...] = ()
        try:
            if self._policy is None:
                signers = tuple(k.name for k in signed.verify(self._keys))
            else:
                check = self._policy.check(signed)
                if not check.log_keys:
                    raise CheckpointSignatureInvalid("no signature by a log key of the policy")
                signers, witnessed, ignored = check.log_keys + check.witnesses, check.satisfied, check.unknown
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
        pending = _PendingCheckpoint(signed, source, signers, witnessed=witnessed, ignored=ignored)
        self._checkpoints.append(pending)
        if size == 0:
            self._compare(pending, EMPTY_ROOT)
        elif size <= self._position and not self._chain_broken:
            # Arrived after the stream passed its size: judged against the root kept there (a
            # resumed verification), else left undecided: the root there is no longer known.
            known = self._roots.get(size)
            if known is not None:
                self._compare(pending, known)
        else:
            self._by_size.setdefault(size, []).append(pending)

    def _compare(self, pending: _PendingCheckpoint, root: bytes) -> None:
        size = pending.signed.size
        pending.matches = pending.signed.root_hash == root
        if pending.matches:
            self._last_matched_size = max(self._last_matched_size, size)
            if pending.witnessed is not False:
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

    def add_entry(self, entry: Entry, personal: Personal | None = None) -> None:
        """One entry (in seq order), with its stored (salt, personal data)."""
        body = entry.body()
        self._add(_Item(body, entry.hash, _hash_body(body), personal))

    def add_stored(self, row: StoredRow, personal: Personal | None = None) -> None:
        """One entry as stored (columns, ``data`` as its stored JCS text), in seq order. ``data``
        is parsed and put back in JCS form, so a semantically equal but re-serialised ``data`` is
        judged by its content, never its form."""
        seq, ts, actor, action, subject, data_text, commitment, prev, claimed = row
        try:
            data: Any = json.loads(data_text)
        except (ValueError, TypeError, RecursionError):
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
        self._add(_Item(body, claimed if isinstance(claimed, str) else "", _hash_body(body), personal))

    def add_line(self, line: bytes) -> None:
        """One export line: an entry (checked here) or a checkpoint (skipped: checkpoints are
        added beforehand with ``add_checkpoint_text``). Any JSON layout is accepted."""
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            self.add_unreadable()
            return
        if type(obj) is not dict:
            self.add_unreadable()
            return
        if CHECKPOINT_KEY in obj and "seq" not in obj:
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

    def _add(self, item: _Item) -> None:
        self._read += 1
        body = item.body
        self._observe(body.get("ts"), body.get("action"), item.seq, body.get("pii"), item.personal)
        if item.intact and self._continues(item.seq, item.prev):
            self._accept(item.claimed)
        else:
            self._route(item)

    def _add_hashed(
        self,
        seq: int,
        prev: str,
        digest: str,
        ts: str,
        action: str,
        commitment: str | None,
        personal: Personal | None,
        body: Callable[[], dict[str, Any]],
    ) -> None:
        """For ``audit.verify_fast``: an entry whose exact hashed bytes are known to give
        ``digest``, with the fields read from those bytes. ``body`` builds the whole entry, only
        needed when it does not simply continue the chain."""
        self._read += 1
        self._observe(ts, action, seq, commitment, personal)
        if self._continues(seq, prev):
            self._accept(digest)
        else:
            self._route(_Item(body(), digest, digest, personal))

    def _continues(self, seq: int | None, prev: str | None) -> bool:
        """The entry sits at the next position and links to the last accepted one."""
        return (
            self._suspect is None
            and not self._chain_broken
            and seq == self._position
            and seq is not None
            and prev == self._recent[0]
        )

    def _route(self, item: _Item) -> None:
        """An entry that does not simply continue the chain: suspect it, or feed the look-ahead."""
        if self._suspect is not None:
            self._lookahead.append(item)
            if len(self._lookahead) >= WINDOW:
                self._classify()
        elif not self._chain_broken:
            self._suspect = item

    def _observe(self, ts: Any, action: Any, seq: int | None, commitment: Any, personal: Personal | None) -> None:
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
                self._fault(
                    Fault.PII_MISMATCH,
                    seq,
                    f"personal data missing without an honoured {ERASED_ACTION} entry "
                    "(written by the service, naming the approving admin and the reason)",
                )
            else:
                self._pii_unavailable += 1

    def _accept(self, digest: str) -> None:
        self._recent.appendleft(digest)
        self._tree.push(bytes.fromhex(digest))
        self._position += 1
        waiting = self._by_size.pop(self._position, None)
        if waiting:
            root = self._tree.root()
            self._roots[self._position] = root
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
        # The root cause first (lowest seq; checkpoint faults without a seq after), and the
        # unanchored range last: it is what remains unproven, not an explanation.
        faults = sorted(self._faults, key=lambda f: (f.seq is None, f.seq if f.seq is not None else 0))
        anchored = self._verified_size
        if self._read > anchored:
            faults.append(
                FaultReport(
                    Fault.UNANCHORED,
                    anchored,
                    f"entries {anchored}–{self._read - 1} ({self._read - anchored}) are not covered by any "
                    "trusted checkpoint",
                )
            )
        anchors = [p for p in self._checkpoints if p.matches and p.witnessed is not False and p.signed.size == anchored]
        checks = [
            CheckpointCheck(
                p.source, p.signed.size, p.signed.root_hash.hex(), p.signers, True, p.matches, p.witnessed, p.ignored
            )
            for p in self._checkpoints
        ]
        chart = tuple(sorted((day, action, n) for (day, action), n in self._chart.items()))
        return VerificationReport(
            faults=tuple(faults),
            entries_checked=self._read,
            first_seq=self._first_seq,
            last_seq=self._last_seq,
            root_hash=self._tree.root().hex(),
            checkpoints=tuple(checks + self._invalid_checkpoints),
            verified_tree_size=anchored,
            pii_checked=self._pii_checked,
            pii_erased=self._pii_erased,
            pii_unavailable=self._pii_unavailable,
            actions_per_day=chart,
            faults_truncated=self._faults_truncated,
            anchored_by=tuple(dict.fromkeys(name for p in anchors for name in p.signers)),
            anchor_note=anchors[0].signed.to_text() if anchors else None,
        )
