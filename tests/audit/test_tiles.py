"""C2SP tlog-tiles geometry and encodings: paths in the specification's one spelling (its own
examples), which tiles a tree of a given size serves, tile hashes against an independent
RFC 9162 computation, and entry bundles whose entries hash to the entries' leaf hashes."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.entry import Entry, build_entry, validate_event
from audit.errors import EntryTooLong, InvalidTreeSize, MalformedTilePath, TileNotFound
from audit.merkle import leaves_resolver
from audit.tiles import TileKind, TileRef, check_within, entry_bundle, hash_tile, parse_tile_path

HASHES, ENTRIES = TileKind.HASHES, TileKind.ENTRIES


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes, written out here independently of audit.merkle."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _sha(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:]))


def _split_bundle(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 2], "big")
        out.append(data[at + 2 : at + 2 + size])
        at += 2 + size
    assert at == len(data)
    return out


@pytest.mark.parametrize(
    ("path", "ref"),
    [
        ("tile/0/x001/x234/067", TileRef(HASHES, 0, 1234067)),  # the specification's example
        ("tile/0/000", TileRef(HASHES, 0, 0)),
        ("tile/63/999", TileRef(HASHES, 63, 999)),
        ("tile/1/x001/000.p/17", TileRef(HASHES, 1, 1000, 17)),
        ("tile/entries/273.p/112", TileRef(ENTRIES, 0, 273, 112)),
        ("tile/entries/x999/255.p/255", TileRef(ENTRIES, 0, 999255, 255)),
        ("tile/2/000.p/1", TileRef(HASHES, 2, 0, 1)),
    ],
)
def test_paths_parse_to_the_tile_they_name_and_back(path: str, ref: TileRef) -> None:
    assert parse_tile_path(path) == ref
    assert ref.path() == path


@given(
    kind=st.sampled_from(TileKind),
    level=st.integers(0, 63),
    index=st.integers(0, 10**24 - 1),
    width=st.integers(1, 256),
)
def test_every_tile_has_one_path_that_reads_back(kind: TileKind, level: int, index: int, width: int) -> None:
    ref = TileRef(kind, 0 if kind is ENTRIES else level, index, width)
    assert parse_tile_path(ref.path()) == ref


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile",
        "tile/",
        "tile/0",
        "tile/0/",
        "tiles/0/000",
        "/tile/0/000",
        "tile/00/000",  # leading zero in L
        "tile/01/000",
        "tile/64/000",  # L beyond 63
        "tile/-1/000",
        "tile/+1/000",
        "tile/abc/000",
        "tile/١/000",  # a digit of another script
        "tile/0/0000",  # a group of 4 digits
        "tile/0/01",
        "tile/0/x001",  # the last group has no x
        "tile/0/001/002",  # inner groups need the x
        "tile/0/x1/000",
        "tile/0/x000/001",  # a leading x000 group: not the one spelling of index 1
        "tile/0/x000/x001/000",
        "tile/0/X001/000",
        "tile/0/٠٠٠",
        "tile/0/000/",
        "tile/0//000",
        "tile/0/../000",
        "tile/0/000.p",
        "tile/0/000.p/",
        "tile/0/000.p/0",  # W is 1..255
        "tile/0/000.p/256",
        "tile/0/000.p/01",
        "tile/0/000.p/+5",
        "tile/0/000.p/5/",
        "tile/0/000.p/5.p/5",
        "tile/0/000.q/5",
        "tile/0/x001.p/5/000",
        "tile/entries",
        "tile/entries/",
        "tile/entries/1",
        "tile/Entries/000",
        "tile/0/" + "x001/" * 8 + "000",  # past any 64-bit tree
    ],
)
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(MalformedTilePath):
        parse_tile_path(path)


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": ENTRIES, "level": 1, "index": 0},
        {"kind": HASHES, "level": 64, "index": 0},
        {"kind": HASHES, "level": 0, "index": -1},
        {"kind": HASHES, "level": 0, "index": 0, "width": 0},
        {"kind": HASHES, "level": 0, "index": 0, "width": 257},
    ],
)
def test_tiles_outside_the_specification_cannot_be_named(fields: dict[str, object]) -> None:
    with pytest.raises(MalformedTilePath):
        TileRef(**fields)  # type: ignore[arg-type]


def _served(ref: TileRef, size: int) -> bool:
    try:
        check_within(ref, size)
    except TileNotFound:
        return False
    return True


def test_a_tree_of_70000_entries_serves_the_tiles_the_specification_lists() -> None:
    size = 70_000
    assert _served(TileRef(HASHES, 0, 272), size) and not _served(TileRef(HASHES, 0, 273), size)
    assert _served(TileRef(ENTRIES, 0, 272), size) and not _served(TileRef(ENTRIES, 0, 273), size)
    assert _served(TileRef(HASHES, 0, 273, 112), size) and not _served(TileRef(HASHES, 0, 273, 113), size)
    assert _served(TileRef(HASHES, 1, 0), size) and not _served(TileRef(HASHES, 1, 1), size)
    assert _served(TileRef(HASHES, 1, 1, 17), size) and not _served(TileRef(HASHES, 1, 1, 18), size)
    assert _served(TileRef(HASHES, 2, 0, 1), size) and not _served(TileRef(HASHES, 2, 0, 2), size)
    assert not _served(TileRef(HASHES, 3, 0, 1), size)
    # A narrower partial tile (an earlier checkpoint's) stays available.
    assert _served(TileRef(HASHES, 0, 273, 1), size)


def test_a_tree_of_256_entries_has_one_full_tile_and_a_level_1_partial_one() -> None:
    assert _served(TileRef(HASHES, 0, 0), 256) and not _served(TileRef(HASHES, 0, 1, 1), 256)
    assert _served(TileRef(HASHES, 1, 0, 1), 256) and not _served(TileRef(HASHES, 1, 0), 256)
    assert not _served(TileRef(HASHES, 0, 0), 255)


def test_tile_hashes_are_the_subtree_hashes_of_their_level() -> None:
    leaves = [_sha(b"\x00" + i.to_bytes(4, "big")) for i in range(600)]
    resolve = leaves_resolver(leaves)
    assert hash_tile(TileRef(HASHES, 0, 1), resolve) == b"".join(leaves[256:512])
    assert hash_tile(TileRef(HASHES, 0, 2, 88), resolve) == b"".join(leaves[512:600])
    assert hash_tile(TileRef(HASHES, 1, 0, 2), resolve) == _mth(leaves[:256]) + _mth(leaves[256:512])


def test_a_tile_whose_subtrees_are_not_stored_is_refused() -> None:
    resolve = leaves_resolver([_sha(b"x")] * 300)
    with pytest.raises(InvalidTreeSize):
        hash_tile(TileRef(HASHES, 1, 0, 2), resolve)
    with pytest.raises(MalformedTilePath):
        hash_tile(TileRef(ENTRIES, 0, 0, 1), resolve)


def _entries(count: int) -> list[Entry]:
    out, prev = [], "0" * 64
    for seq in range(count):
        entry = build_entry(
            seq=seq,
            ts="2026-12-07T15:27:10.310776Z",
            actor="user:nguyễn",
            action="dossier.received",
            subject=f'hồ sơ "{seq}"\\',
            data={"n": seq, "text": "ký số ✓"},
            pii="ab" * 32 if seq % 2 else None,
            prev=prev,
        )
        out.append(entry)
        prev = entry.hash
    return out


def test_each_bundled_entry_hashes_to_its_leaf_and_reads_back_as_the_entry() -> None:
    entries = _entries(5)
    bundled = _split_bundle(entry_bundle(entries))
    assert len(bundled) == 5
    for entry, data in zip(entries, bundled, strict=True):
        assert _sha(b"\x00" + data).hex() == entry.hash
        assert json.loads(data) == {k: v for k, v in entry.to_dict().items() if k != "hash"}


def test_the_largest_entry_the_log_accepts_fits_a_bundle() -> None:
    wide = "\U0001d538"  # 4 bytes of UTF-8
    actor, subject = "user:" + wide * 200, wide * 500
    data, encoded = validate_event(actor, "dossier.received", subject, {"k": "\\" * 8_000})
    assert len(encoded) > 16_000
    entry = build_entry(
        seq=2**53, ts="2026-12-07T15:27:10.310776Z", actor=actor, action="a." + "b" * 98,
        subject=subject, data=data, pii="f" * 64, prev="0" * 64,
    )  # fmt: skip
    [bundled] = _split_bundle(entry_bundle([entry]))
    assert _sha(b"\x00" + bundled).hex() == entry.hash


def test_an_entry_too_long_for_a_16_bit_length_is_refused_whole() -> None:
    huge = Entry(0, "2026-12-07T15:27:10.310776Z", "system", "a.b", "s", {"k": "x" * 70_000}, None, "0" * 64, "0" * 64)
    with pytest.raises(EntryTooLong, match="entry 0"):
        entry_bundle([*_entries(1), huge])
