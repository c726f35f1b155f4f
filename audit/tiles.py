"""The log as C2SP tlog-tiles (https://c2sp.org/tlog-tiles): tile paths, the hashes a tile
holds and the entry-bundle encoding. Pure: the caller brings the hashes (a ``Resolver``) and
the entries.

A hash tile at level L, index N holds, left to right, the RFC 9162 hashes of the perfect
subtrees of height 8·L with indexes N·256 … N·256 + W − 1 (level 0: the entries' leaf hashes).
The store keeps every perfect subtree as it completes (audit.store), so a tile is one resolver
call of W stored hashes, never a recomputation of the tree. A full tile (W = 256) never
changes; a partial one (W < 256) is a prefix of the full tile it will become.

An entry bundle holds the same range of entries as the level-0 tile of the same index: each
entry's canonical bytes, JCS(entry without ``hash``), behind a big-endian uint16 length. Those
are exactly the bytes whose RFC 9162 leaf hash, SHA-256(0x00 ‖ bytes), is the entry's ``hash``
(docs/audit-log.md §2). The entry carries only the salted commitment to its personal data,
never the data itself (audit.pii).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from audit.entry import Entry, body_bytes, canonical
from audit.errors import EntryTooLong, InvalidTreeSize, MalformedTilePath, TileNotFound
from audit.merkle import Resolver, Subtree

TILE_WIDTH = 256
# A tile spans 8 levels of the Merkle tree: 2**8 = 256 hashes per tile.
TILE_HEIGHT = 8
MAX_LEVEL = 63
MAX_PARTIAL_WIDTH = TILE_WIDTH - 1
# Eight 3-digit groups reach 10**24 tiles, past any 64-bit tree at any level: longer index
# paths are refused before any arithmetic on them.
MAX_INDEX_GROUPS = 8
MAX_BUNDLE_ENTRY = 0xFFFF  # the uint16 length prefix
TILE_ROOT = "tile"
ENTRIES_ELEMENT = "entries"
PARTIAL_SUFFIX = ".p"

# Decimal with no extra leading zeros, ASCII digits only (str.isdigit takes other scripts' digits).
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_INNER_GROUP = re.compile(r"x[0-9]{3}")
_LAST_GROUP = re.compile(r"[0-9]{3}")


class TileKind(StrEnum):
    HASHES = "hashes"  # tile/<L>/<N>
    ENTRIES = "entries"  # tile/entries/<N>


@dataclass(frozen=True)
class TileRef:
    """One tile or entry bundle: ``width`` hashes (or entries), 256 for a full one."""

    kind: TileKind
    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_LEVEL or (self.kind is TileKind.ENTRIES and self.level != 0):
            raise MalformedTilePath(f"tile level {self.level} is outside 0..{MAX_LEVEL}")
        if self.index < 0:
            raise MalformedTilePath(f"tile index {self.index} is negative")
        if not 1 <= self.width <= TILE_WIDTH:
            raise MalformedTilePath(f"tile width {self.width} is outside 1..{TILE_WIDTH}")

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def start(self) -> int:
        """The first entry the tile spans (the specification's start index)."""
        return self.index << (TILE_HEIGHT * (self.level + 1))

    @property
    def end(self) -> int:
        """One past the last entry its ``width`` hashes span: the smallest tree that holds it."""
        return (self.index * TILE_WIDTH + self.width) << (TILE_HEIGHT * self.level)

    def subtrees(self) -> tuple[Subtree, ...]:
        """The perfect subtrees whose hashes the tile holds, left to right."""
        first = self.index * TILE_WIDTH
        return tuple(Subtree(TILE_HEIGHT * self.level, first + i) for i in range(self.width))

    def path(self) -> str:
        """The tile's path below the log's prefix, e.g. ``tile/0/x001/234.p/7``."""
        head = ENTRIES_ELEMENT if self.kind is TileKind.ENTRIES else str(self.level)
        tail = f"{PARTIAL_SUFFIX}/{self.width}" if self.partial else ""
        return f"{TILE_ROOT}/{head}/{_encode_index(self.index)}{tail}"


def _encode_index(index: int) -> str:
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def parse_tile_path(path: str) -> TileRef:
    """The tile named by ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``.

    Only the one spelling the specification gives each tile is accepted: no leading zeros in
    L or W, 3-digit index groups all but the last prefixed with ``x``, no leading ``x000``
    group, W in 1..255. Anything else raises MalformedTilePath.
    """
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != TILE_ROOT:
        raise MalformedTilePath("a tile path is tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]")
    head, groups = parts[1], parts[2:]
    if head == ENTRIES_ELEMENT:
        kind, level = TileKind.ENTRIES, 0
    elif _LEVEL.fullmatch(head) and int(head) <= MAX_LEVEL:
        kind, level = TileKind.HASHES, int(head)
    else:
        raise MalformedTilePath(f"tile level must be 0..{MAX_LEVEL} without leading zeros, or 'entries'")
    width = TILE_WIDTH
    if len(groups) >= 2 and groups[-2].endswith(PARTIAL_SUFFIX):
        if not _WIDTH.fullmatch(groups[-1]) or int(groups[-1]) > MAX_PARTIAL_WIDTH:
            raise MalformedTilePath(f"a partial tile's width must be 1..{MAX_PARTIAL_WIDTH} without leading zeros")
        width = int(groups[-1])
        groups = [*groups[:-2], groups[-2].removesuffix(PARTIAL_SUFFIX)]
    return TileRef(kind, level, _parse_index(groups), width)


def _parse_index(groups: list[str]) -> int:
    if len(groups) > MAX_INDEX_GROUPS:
        raise MalformedTilePath(f"a tile index has at most {MAX_INDEX_GROUPS} groups of 3 digits")
    *inner, last = groups
    if not _LAST_GROUP.fullmatch(last) or not all(_INNER_GROUP.fullmatch(g) for g in inner):
        raise MalformedTilePath("a tile index is 3-digit groups, all but the last prefixed with 'x' (x001/234)")
    if inner and inner[0] == "x000":
        raise MalformedTilePath("a tile index has no leading x000 group")
    index = 0
    for group in groups:
        index = index * 1000 + int(group.removeprefix("x"))
    return index


def check_within(ref: TileRef, tree_size: int) -> None:
    """Raise TileNotFound unless a tree of ``tree_size`` entries holds the whole tile: a full
    tile once its 256 hashes exist, a partial one of any width up to what exists (the partial
    tile of an earlier checkpoint's size stays available, as the specification requires)."""
    if ref.end > tree_size:
        raise TileNotFound(f"{ref.path()} lies beyond the checkpointed tree of {tree_size} entries")


def hash_tile(ref: TileRef, resolve: Resolver) -> bytes:
    """The tile's bytes: its ``width`` hashes of 32 bytes, read in one ``resolve`` call."""
    if ref.kind is not TileKind.HASHES:
        raise MalformedTilePath(f"{ref.path()} is an entry bundle, not a hash tile")
    subtrees = ref.subtrees()
    found = resolve(subtrees)
    try:
        return b"".join(found[sub] for sub in subtrees)
    except KeyError as exc:
        raise InvalidTreeSize(f"subtree {exc} of {ref.path()} is not stored") from None


def bundle_entry(entry: Entry) -> bytes:
    """The entry's canonical bytes: the leaf its ``hash`` is the RFC 9162 leaf hash of,
    assembled exactly as the hash is (audit.entry.body_bytes)."""
    data_jcs = canonical(dict(entry.data))
    return body_bytes(entry.seq, entry.ts, entry.actor, entry.action, entry.subject, data_jcs, entry.pii, entry.prev)


def entry_bundle(entries: Iterable[Entry]) -> bytes:
    """The entry bundle of ``entries``: each entry's bytes behind a big-endian uint16 length."""
    out = bytearray()
    for entry in entries:
        data = bundle_entry(entry)
        if len(data) > MAX_BUNDLE_ENTRY:
            raise EntryTooLong(
                f"entry {entry.seq} is {len(data)} bytes; an entry bundle holds at most {MAX_BUNDLE_ENTRY}"
            )
        out += len(data).to_bytes(2, "big")
        out += data
    return bytes(out)
