"""RFC 9162 §2.1 Merkle Tree Hash, inclusion and consistency proofs: produce and verify.

Pure functions over 32-byte hashes. Leaves are the entries' hashes, which already carry the
0x00 leaf prefix (see ``audit.entry``); interior nodes are SHA-256(0x01 ‖ left ‖ right).

Every subtree that a proof names is, by the RFC's recursion, either a *perfect* subtree (2^L
leaves starting at a multiple of 2^L) or a right-ragged range that splits into perfect ones.
Perfect subtrees never change once complete, so the store keeps them and a proof at any size
reads only O(log n) stored hashes: ``inclusion_ranges``/``consistency_ranges`` name the ranges,
``range_subtrees`` splits each into perfect subtrees and ``fold`` recombines their hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from audit.errors import InvalidProof, InvalidTreeSize

# RFC 9162 §2.1.1 domain separation.
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


@dataclass(frozen=True, order=True)
class Subtree:
    """The perfect subtree of 2**level leaves starting at leaf index << level."""

    level: int
    index: int

    @property
    def start(self) -> int:
        return self.index << self.level

    @property
    def end(self) -> int:
        return (self.index + 1) << self.level


Resolver = Callable[[Sequence[Subtree]], Mapping[Subtree, bytes]]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n > 1), RFC 9162 §2.1.1's k."""
    return 1 << ((n - 1).bit_length() - 1)


def range_subtrees(start: int, end: int) -> tuple[Subtree, ...]:
    """The perfect subtrees whose fold is MTH(D[start:end]), left to right.

    Only ranges produced by the RFC recursion are accepted: ``start`` must be aligned to the
    largest power of two not above the range size, which holds for every range a proof names.
    """
    if not 0 <= start < end:
        raise InvalidTreeSize(f"empty or negative range [{start}, {end})")
    pieces = []
    lo = start
    while lo < end:
        level = (end - lo).bit_length() - 1
        if lo & ((1 << level) - 1):
            raise InvalidTreeSize(f"range [{start}, {end}) is not a Merkle subtree")
        pieces.append(Subtree(level, lo >> level))
        lo += 1 << level
    return tuple(pieces)


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its perfect subtrees' hashes (left to right): a right fold."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = node_hash(left, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges of the RFC 9162 §2.1.3.1 PATH(index, D[size]), in proof order."""
    if not 0 <= index < size:
        raise InvalidTreeSize(f"leaf index {index} is outside a tree of size {size}")
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """Leaf ranges of the RFC 9162 §2.1.4.1 PROOF(first, D[second]), in proof order."""
    if not 0 <= first <= second:
        raise InvalidTreeSize(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    ranges = []
    lo, hi, m = 0, second, first
    whole = True  # SUBPROOF's flag b: still on the left edge, where the old root is known
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def needed_subtrees(ranges: Iterable[tuple[int, int]]) -> list[Subtree]:
    """Every stored subtree that the given ranges need, without duplicates."""
    seen: dict[Subtree, None] = {}
    for start, end in ranges:
        for sub in range_subtrees(start, end):
            seen[sub] = None
    return list(seen)


def materialise(ranges: Sequence[tuple[int, int]], resolve: Resolver) -> list[bytes]:
    """The hashes of the given ranges, reading all needed subtrees in one ``resolve`` call."""
    hashes = resolve(needed_subtrees(ranges))
    out = []
    for start, end in ranges:
        try:
            out.append(fold([hashes[sub] for sub in range_subtrees(start, end)]))
        except KeyError as exc:
            raise InvalidTreeSize(f"subtree {exc} is not stored") from None
    return out


def root(size: int, resolve: Resolver) -> bytes:
    """MTH(D[size])."""
    if size == 0:
        return EMPTY_ROOT
    return materialise([(0, size)], resolve)[0]


def inclusion_proof(index: int, size: int, resolve: Resolver) -> list[bytes]:
    return materialise(inclusion_ranges(index, size), resolve)


def consistency_proof(first: int, second: int, resolve: Resolver) -> list[bytes]:
    return materialise(consistency_ranges(first, second), resolve)


def leaves_resolver(leaves: Sequence[bytes]) -> Resolver:
    """A resolver computing subtrees from a list of leaf hashes (tests, small in-memory logs)."""

    def _resolve(subtrees: Sequence[Subtree]) -> Mapping[Subtree, bytes]:
        out = {}
        for sub in subtrees:
            if sub.end > len(leaves):
                raise InvalidTreeSize(f"subtree {sub} reaches beyond {len(leaves)} leaves")
            out[sub] = _perfect(leaves, sub.start, sub.end)
        return out

    return _resolve


def _perfect(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    if end - start == 1:
        return leaves[start]
    mid = (start + end) // 2
    return node_hash(_perfect(leaves, start, mid), _perfect(leaves, mid, end))


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> None:
    """RFC 9162 §2.1.3.2. Returns nothing; raises InvalidProof when the proof does not verify."""
    if not 0 <= index < size:
        raise InvalidProof(f"leaf index {index} is outside a tree of size {size}")
    _check_hashes([leaf, root_hash, *proof])
    fn, sn, acc = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise InvalidProof("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            acc = node_hash(sibling, acc)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            acc = node_hash(acc, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("inclusion proof is shorter than the tree is deep")
    if acc != root_hash:
        raise InvalidProof("inclusion proof does not lead to the root hash")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2. Returns nothing; raises InvalidProof when the proof does not verify."""
    if not 0 <= first <= second:
        raise InvalidProof(f"no consistency between sizes {first} and {second}")
    _check_hashes([first_root, second_root, *proof])
    if first == second:
        if proof:
            raise InvalidProof("a proof between equal sizes must be empty")
        if first_root != second_root:
            raise InvalidProof("equal tree sizes with different roots")
        return
    if first == 0:
        # Every tree extends the empty tree (RFC 9162 leaves size 0 out; the CT clients accept it).
        if proof:
            raise InvalidProof("a proof from the empty tree must be empty")
        return
    if not proof:
        raise InvalidProof("consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)  # the old tree is a perfect subtree: its root starts the path
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            raise InvalidProof("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("consistency proof is shorter than needed")
    if fr != first_root:
        raise InvalidProof("consistency proof does not lead to the first root")
    if sr != second_root:
        raise InvalidProof("consistency proof does not lead to the second root")


def _check_hashes(hashes: Iterable[bytes]) -> None:
    for value in hashes:
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise InvalidProof("every hash in a proof is 32 bytes")


class CompactRange:
    """The right edge of a growing tree: at most log2(n) perfect subtrees (constant memory).

    The frontier holds one hash per set bit of ``size`` (largest subtree first), so appending a
    leaf merges exactly as many subtrees as ``size`` has trailing one bits, like a binary counter.
    ``append`` returns the perfect subtrees of level ≥ 1 that the new leaf completes, so a store
    can keep them; ``push`` is the same without that list (the verifier's hot path).
    """

    __slots__ = ("_hashes", "size")

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        """``frontier``: hashes of ``range_subtrees(0, size)``, left to right."""
        if size < 0 or bin(size).count("1") != len(frontier):
            raise InvalidTreeSize(f"a tree of size {size} has {bin(max(size, 0)).count('1')} frontier subtrees")
        self.size = size
        self._hashes: list[bytes] = list(frontier)

    def append(self, leaf: bytes) -> list[tuple[Subtree, bytes]]:
        hashes = self._hashes
        n = self.size
        self.size = n + 1
        level, acc = 0, leaf
        completed = []
        while n & 1:
            acc = node_hash(hashes.pop(), acc)
            level += 1
            n >>= 1
            completed.append((Subtree(level, (self.size >> level) - 1), acc))
        hashes.append(acc)
        return completed

    def push(self, leaf: bytes) -> None:
        hashes = self._hashes
        n = self.size
        self.size = n + 1
        acc = leaf
        while n & 1:
            acc = _sha256(NODE_PREFIX + hashes.pop() + acc).digest()
            n >>= 1
        hashes.append(acc)

    def root(self) -> bytes:
        return fold(self._hashes)

    @property
    def frontier(self) -> tuple[bytes, ...]:
        """The hashes of ``range_subtrees(0, size)``, left to right: with ``size``, all it takes
        to rebuild this range (``CompactRange(size, frontier)``)."""
        return tuple(self._hashes)

    def copy(self) -> CompactRange:
        clone = CompactRange()
        clone.size = self.size
        clone._hashes = list(self._hashes)
        return clone
