"""RFC 9162 §2.1 Merkle tree: the published RFC 6962/9162 test vectors (as used by
transparency-dev/merkle), proof shapes, and corrupted proofs refused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import InvalidProof, InvalidTreeSize
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    Subtree,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    leaves_resolver,
    node_hash,
    range_subtrees,
    root,
    verify_consistency,
    verify_inclusion,
)

H = bytes.fromhex
# The eight leaf inputs of the RFC 6962 / CT test vectors.
LEAF_INPUTS = [
    b"",
    H("00"),
    H("10"),
    H("2021"),
    H("3031"),
    H("40414243"),
    H("5051525354555657"),
    H("606162636465666768696a6b6c6d6e6f"),
]
LEAVES = [leaf_hash(x) for x in LEAF_INPUTS]
ROOTS = [
    H(x)
    for x in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# (leaf index, tree size, proof)
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]
# (first size, second size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = H("abacaba000000000000000000000000000000000000000000060061e00123456")


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert root(0, leaves_resolver([])) == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_root_matches_published_vector(size: int) -> None:
    assert root(size, leaves_resolver(LEAVES)) == ROOTS[size - 1]


@pytest.mark.parametrize("size", range(1, 9))
def test_compact_range_root_matches_published_vector(size: int) -> None:
    tree = CompactRange()
    for leaf in LEAVES[:size]:
        tree.append(leaf)
    assert tree.root() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proof_matches_published_vector(index: int, size: int, proof: list[str]) -> None:
    produced = inclusion_proof(index, size, leaves_resolver(LEAVES))
    assert produced == [H(p) for p in proof]
    verify_inclusion(LEAVES[index], index, size, produced, ROOTS[size - 1])


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proof_matches_published_vector(first: int, second: int, proof: list[str]) -> None:
    produced = consistency_proof(first, second, leaves_resolver(LEAVES))
    assert produced == [H(p) for p in proof]
    verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], produced)


def _inclusion_corruptions(index: int, size: int, proof: list[bytes], root_hash: bytes, leaf: bytes):
    yield "index-1", (leaf, index - 1, size, proof, root_hash)
    yield "index+1", (leaf, index + 1, size, proof, root_hash)
    yield "index^2", (leaf, index ^ 2, size, proof, root_hash)
    yield "size*2", (leaf, index, size * 2, proof, root_hash)
    yield "size/2", (leaf, index, size // 2, proof, root_hash)
    yield "wrong leaf", (hashlib.sha256(b"WrongLeaf").digest(), index, size, proof, root_hash)
    yield "empty root", (leaf, index, size, proof, EMPTY_ROOT)
    yield "random root", (leaf, index, size, proof, SOME_HASH)
    yield "trailing root", (leaf, index, size, [*proof, root_hash], root_hash)
    yield "preceding root", (leaf, index, size, [root_hash, *proof], root_hash)
    yield "short garbage", (leaf, index, size, [*proof, b""], root_hash)
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        yield f"bit flipped in proof[{i}]", (leaf, index, size, flipped, root_hash)
    if proof:
        yield "removed component", (leaf, index, size, proof[:-1], root_hash)
    if len(proof) > 1:
        yield "inserted component", (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root_hash)


@pytest.mark.parametrize(("index", "size", "proof"), [v for v in INCLUSION if v[1] > 1])
def test_every_corrupted_inclusion_proof_is_refused(index: int, size: int, proof: list[str]) -> None:
    good = [H(p) for p in proof]
    for name, args in _inclusion_corruptions(index, size, good, ROOTS[size - 1], LEAVES[index]):
        with pytest.raises(InvalidProof):
            verify_inclusion(*args)
            pytest.fail(f"accepted: {name}")


def _consistency_corruptions(first: int, second: int, r1: bytes, r2: bytes, proof: list[bytes]):
    yield "first-1", (first - 1, second, r1, r2, proof)
    yield "first+1", (first + 1, second, r1, r2, proof)
    yield "first^2", (first ^ 2, second, r1, r2, proof)
    yield "second*2", (first, second * 2, r1, r2, proof)
    yield "second/2", (first, second // 2, r1, r2, proof)
    yield "wrong root1", (first, second, SOME_HASH, r2, proof)
    yield "wrong root2", (first, second, r1, SOME_HASH, proof)
    yield "swapped roots", (first, second, r2, r1, proof)
    yield "empty proof", (first, second, r1, r2, [])
    yield "trailing root1", (first, second, r1, r2, [*proof, r1])
    yield "trailing root2", (first, second, r1, r2, [*proof, r2])
    yield "preceding root1", (first, second, r1, r2, [r1, *proof])
    yield "preceding root2", (first, second, r1, r2, [r2, *proof])
    yield "preceding proof[0]", (first, second, r1, r2, [proof[0], *proof])
    yield "truncated", (first, second, r1, r2, proof[:-1])
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        yield f"bit flipped in proof[{i}]", (first, second, r1, r2, flipped)


@pytest.mark.parametrize(("first", "second", "proof"), [v for v in CONSISTENCY if v[2]])
def test_every_corrupted_consistency_proof_is_refused(first: int, second: int, proof: list[str]) -> None:
    good = [H(p) for p in proof]
    for name, args in _consistency_corruptions(first, second, ROOTS[first - 1], ROOTS[second - 1], good):
        with pytest.raises(InvalidProof):
            verify_consistency(*args)
            pytest.fail(f"accepted: {name}")


def test_trivial_consistency_cases() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[4], [])
    verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    with pytest.raises(InvalidProof):
        verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])
    with pytest.raises(InvalidProof):
        verify_consistency(3, 3, ROOTS[2], ROOTS[2], [EMPTY_ROOT])
    with pytest.raises(InvalidProof):
        verify_consistency(2, 1, ROOTS[1], ROOTS[0], [])
    with pytest.raises(InvalidProof):
        verify_consistency(1, 2, ROOTS[0], ROOTS[1], [])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (8, 7)])
def test_inclusion_outside_the_tree_is_refused(index: int, size: int) -> None:
    with pytest.raises(InvalidTreeSize):
        inclusion_ranges(index, size)
    with pytest.raises(InvalidProof):
        verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


def test_inclusion_ranges_match_the_reference_shapes() -> None:
    # transparency-dev/merkle proof_test.go, tree of size 7: b h l=hash(i,j); f j k; i k.
    assert inclusion_ranges(0, 7) == [(1, 2), (2, 4), (4, 7)]
    assert inclusion_ranges(4, 7) == [(5, 6), (6, 7), (0, 4)]
    assert inclusion_ranges(6, 7) == [(4, 6), (0, 4)]
    assert range_subtrees(4, 7) == (Subtree(1, 2), Subtree(0, 6))


def test_consistency_ranges_match_the_reference_shapes() -> None:
    # 5 -> 7 is e f j k; 3 -> 7 is c d g l=hash(i,j); 4 -> 7 is l=hash(i,j); 7 -> 8 is j leaf7 i k.
    assert consistency_ranges(5, 7) == [(4, 5), (5, 6), (6, 7), (0, 4)]
    assert consistency_ranges(3, 7) == [(2, 3), (3, 4), (0, 2), (4, 7)]
    assert consistency_ranges(4, 7) == [(4, 7)]
    assert consistency_ranges(7, 8) == [(6, 7), (7, 8), (4, 6), (0, 4)]
    with pytest.raises(InvalidTreeSize):
        consistency_ranges(9, 8)


def test_unaligned_range_is_not_a_subtree() -> None:
    with pytest.raises(InvalidTreeSize):
        range_subtrees(1, 3)


def test_compact_range_reports_completed_subtrees() -> None:
    tree = CompactRange()
    completed = [tree.append(leaf) for leaf in LEAVES[:4]]
    assert completed[0] == [] and completed[2] == []
    assert completed[1] == [(Subtree(1, 0), node_hash(LEAVES[0], LEAVES[1]))]
    assert [s for s, _ in completed[3]] == [Subtree(1, 1), Subtree(2, 0)]
    assert completed[3][-1][1] == ROOTS[3]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.data())
def test_proofs_produced_from_stored_subtrees_always_verify(size: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    resolve = leaves_resolver(leaves)
    root_hash = root(size, resolve)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    verify_inclusion(leaves[index], index, size, inclusion_proof(index, size, resolve), root_hash)
    first = data.draw(st.integers(min_value=0, max_value=size))
    verify_consistency(first, size, root(first, resolve), root_hash, consistency_proof(first, size, resolve))
