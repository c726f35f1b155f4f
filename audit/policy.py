"""Trust policies of C2SP tlog-policy (https://c2sp.org/tlog-policy): which log keys may sign a
checkpoint and which witnesses must have cosigned it for the checkpoint to be trusted.

A policy file is lines of ``log <vkey> [<url>]``, ``witness <name> <vkey> [<url>]``,
``group <name> all|any|<k> <member>…`` and exactly one ``quorum <name>|none``; a group or the
quorum names only witnesses and groups defined on earlier lines. Hand-written: the format is a
few lines, and no maintained Python package reads it. The cosignature checks are
``audit.cosignature``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.cosignature import CosignerKey
from audit.errors import CheckpointSignatureInvalid, CosignatureInvalid, MalformedVerifierKey, PolicyInvalid

NONE = "none"
# tlog-policy recommends supporting at least 32 of each; well past that is a mistake, not a policy.
MAX_ITEMS = 256
MAX_POLICY_BYTES = 1 << 20


@dataclass(frozen=True)
class Group:
    """``k`` of ``members`` (witness or group names) must have witnessed."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class PolicyCheck:
    """How one checkpoint fares against a policy."""

    log_keys: tuple[str, ...]  # names of the log keys whose signatures verified
    witnesses: tuple[str, ...]  # policy names of the witnesses whose cosignatures verified
    unknown: tuple[str, ...]  # "<key name>+<hex key id>" of signature lines by keys the policy does not list
    satisfied: bool  # signed by a log key and cosigned by the quorum


@dataclass(frozen=True)
class Policy:
    logs: tuple[VerifierKey, ...]
    witnesses: Mapping[str, CosignerKey] = field(hash=False)
    groups: Mapping[str, Group] = field(hash=False)
    quorum: str  # a witness or group name, or "none"

    @classmethod
    def from_bytes(cls, data: bytes) -> Policy:
        """Parse a policy file; raises PolicyInvalid naming the line at fault."""
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyInvalid("the policy file is too large")
        if any((b < 0x20 and b not in (0x09, 0x0A)) or b == 0x7F for b in data):
            raise PolicyInvalid("the policy file holds control characters (only tab and newline are allowed)")
        parser = _Parser()
        for number, raw in enumerate(data.split(b"\n"), start=1):
            # Octets with the high bit set are opaque in names, URLs and comments.
            line = raw.decode("utf-8", "surrogateescape")
            words = line.replace("\t", " ").split(" ")
            words = [w for w in words if w]
            if not words or words[0].startswith("#"):
                continue
            try:
                parser.line(words)
            except PolicyInvalid as exc:
                raise PolicyInvalid(f"line {number}: {exc}") from None
        return parser.policy()

    @classmethod
    def log_only(cls, keys: tuple[VerifierKey, ...]) -> Policy:
        """``--public-key``: these log keys, no witness required (``quorum none``)."""
        return cls(keys, {}, {}, NONE)

    @property
    def requires_witnesses(self) -> bool:
        return self.quorum != NONE

    def check(self, signed: SignedCheckpoint) -> PolicyCheck:
        """Which log keys and witnesses vouch for ``signed``. Raises CheckpointSignatureInvalid
        when a signature by a listed log key or witness key fails (signed-note: a known key's bad
        signature rejects the whole note). Lines by unlisted keys are reported, never counted."""
        signers: tuple[VerifierKey, ...] = ()
        try:
            signers = signed.verify(self.logs)
        except CheckpointSignatureInvalid:
            if any(sig.name == k.name and sig.key_id == k.key_id for sig in signed.note.signatures for k in self.logs):
                raise  # a listed log key whose signature fails
        witnessed: list[str] = []
        for name, key in self.witnesses.items():
            if not any(s.name == key.name and s.key_id == key.key_id for s in signed.note.signatures):
                continue
            try:
                key.verify(signed)
            except CosignatureInvalid as exc:
                raise CheckpointSignatureInvalid(f"cosignature of witness {name}: {exc}") from None
            witnessed.append(name)
        known = {(k.name, k.key_id) for k in self.logs} | {(k.name, k.key_id) for k in self.witnesses.values()}
        unknown = tuple(
            dict.fromkeys(
                f"{s.name}+{s.key_id.hex()}" for s in signed.note.signatures if (s.name, s.key_id) not in known
            )
        )
        satisfied = bool(signers) and self.witnessed(set(witnessed))
        return PolicyCheck(tuple(k.name for k in signers), tuple(witnessed), unknown, satisfied)

    def witnessed(self, cosigned: set[str]) -> bool:
        """Whether the quorum holds when exactly the witnesses ``cosigned`` have cosigned."""
        return self._holds(self.quorum, cosigned)

    def _holds(self, name: str, cosigned: set[str]) -> bool:
        if name == NONE:
            return True
        group = self.groups.get(name)
        if group is None:
            return name in cosigned
        return sum(self._holds(member, cosigned) for member in group.members) >= group.threshold


class _Parser:
    def __init__(self) -> None:
        self.logs: list[VerifierKey] = []
        self.witnesses: dict[str, CosignerKey] = {}
        self.groups: dict[str, Group] = {}
        self.quorum: str | None = None
        self.public_keys: set[bytes] = set()

    def line(self, words: list[str]) -> None:
        keyword, args = words[0], words[1:]
        if keyword == "log":
            self._log(args)
        elif keyword == "witness":
            self._witness(args)
        elif keyword == "group":
            self._group(args)
        elif keyword == "quorum":
            self._quorum(args)
        else:
            raise PolicyInvalid(f"unknown keyword {keyword!r} (log, witness, group or quorum)")

    def _new_key(self, raw: bytes) -> None:
        # tlog-policy: two vkeys wrapping the same public key are duplicates, whatever their names.
        if raw in self.public_keys:
            raise PolicyInvalid("this public key is already listed")
        self.public_keys.add(raw)

    def _log(self, args: list[str]) -> None:
        if len(args) not in (1, 2):
            raise PolicyInvalid("a log line is 'log <vkey> [<url>]'")
        try:
            key = VerifierKey.from_text(args[0])
        except MalformedVerifierKey as exc:
            raise PolicyInvalid(f"not a log verifier key: {exc}") from None
        self._new_key(key.public_bytes())
        self.logs.append(key)
        self._limit(len(self.logs), "logs")

    def _witness(self, args: list[str]) -> None:
        if len(args) not in (2, 3):
            raise PolicyInvalid("a witness line is 'witness <name> <vkey> [<url>]'")
        name = self._new_name(args[0])
        try:
            key = CosignerKey.from_text(args[1])
        except MalformedVerifierKey as exc:
            raise PolicyInvalid(f"not a witness verifier key: {exc}") from None
        self._new_key(key.public_key.public_bytes_raw())
        self.witnesses[name] = key
        self._limit(len(self.witnesses), "witnesses")

    def _group(self, args: list[str]) -> None:
        if len(args) < 3:
            raise PolicyInvalid("a group line is 'group <name> all|any|<k> <member>...'")
        name = self._new_name(args[0])
        members = tuple(args[2:])
        for member in members:
            if member == NONE:
                raise PolicyInvalid("'none' cannot be a group member")
            if member not in self.witnesses and member not in self.groups:
                raise PolicyInvalid(f"{member!r} is not a witness or group defined above")
        if len(set(members)) != len(members):
            raise PolicyInvalid("a group lists each member once")
        threshold = _threshold(args[1], len(members))
        self.groups[name] = Group(name, threshold, members)
        self._limit(len(self.groups), "groups")

    def _quorum(self, args: list[str]) -> None:
        if len(args) != 1:
            raise PolicyInvalid("a quorum line is 'quorum <name>' or 'quorum none'")
        if self.quorum is not None:
            raise PolicyInvalid("a policy has exactly one quorum line")
        name = args[0]
        if name != NONE and name not in self.witnesses and name not in self.groups:
            raise PolicyInvalid(f"the quorum {name!r} is not a witness or group defined above")
        self.quorum = name

    def _new_name(self, name: str) -> str:
        if name == NONE:
            raise PolicyInvalid("'none' is reserved")
        if name in self.witnesses or name in self.groups:
            raise PolicyInvalid(f"the name {name!r} is already defined")
        return name

    @staticmethod
    def _limit(count: int, what: str) -> None:
        if count > MAX_ITEMS:
            raise PolicyInvalid(f"more than {MAX_ITEMS} {what}")

    def policy(self) -> Policy:
        if self.quorum is None:
            raise PolicyInvalid("the policy has no quorum line ('quorum none' requires no witness)")
        if not self.logs:
            raise PolicyInvalid("the policy lists no log key: nothing could be verified")
        return Policy(tuple(self.logs), dict(self.witnesses), dict(self.groups), self.quorum)


def _threshold(text: str, members: int) -> int:
    if text == "all":
        return members
    if text == "any":
        return 1
    if not text.isascii() or not text.isdigit() or (text != "0" and text[0] == "0"):
        raise PolicyInvalid(f"the threshold {text!r} is not all, any or a decimal number")
    k = int(text)
    if not 1 <= k <= members:
        raise PolicyInvalid(f"the threshold {k} is not between 1 and the {members} members")
    return k
