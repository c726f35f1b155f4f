"""The audit log served as C2SP tlog-tiles for monitors: the latest signed checkpoint, hash
tiles and entry bundles, all read against that checkpoint's tree size.

Nothing beyond the latest checkpoint is served, so every tile a monitor fetches is covered by
a signed root it already holds. Hash tiles come from the stored subtree hashes (one indexed
read of at most 256 rows); entry bundles from the entries table alone, never from the
personal-data table.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit import store, tiles
from audit.errors import InvalidTreeSize, NoCheckpoint
from audit.tiles import TileKind, TileRef
from integrity.audit_service import AuditService
from integrity.db import READ_ONLY


@dataclass(frozen=True)
class Tile:
    ref: TileRef
    body: bytes

    @property
    def immutable(self) -> bool:
        """A full tile never changes; a partial one is superseded as the log grows."""
        return not self.ref.partial


def checkpoint_note(audit: AuditService) -> str:
    """The latest signed checkpoint note (NoCheckpoint when none was signed yet)."""
    return audit.current_checkpoint().note


def read_tile(audit: AuditService, path: str) -> Tile:
    """The tile or entry bundle at ``path`` (``tile/…``). MalformedTilePath for a path not in
    the specification's form, TileNotFound for one beyond the latest checkpoint."""
    ref = tiles.parse_tile_path(path)
    with audit.engine.connect().execution_options(**READ_ONLY) as conn:
        latest = store.latest_checkpoint(conn)
        if latest is None:
            raise NoCheckpoint("the log has no signed checkpoint yet")
        tiles.check_within(ref, latest.tree_size)
        if ref.kind is TileKind.HASHES:
            return Tile(ref, tiles.hash_tile(ref, store.resolver(conn)))
        entries = [entry for entry, _ in store.iter_entries(conn, ref.start, ref.end)]
    if len(entries) != ref.width:
        raise InvalidTreeSize(f"{ref.path()} lacks stored entries: {len(entries)} of {ref.width}")
    return Tile(ref, tiles.entry_bundle(entries))
