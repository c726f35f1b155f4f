"""The audit log served as C2SP tlog-tiles under /v1/audit/tlog/, on both back ends, through
the real app: every tile and entry bundle of a 300-entry log is fetched over HTTP and checked
by an RFC 9162 computation written out here (level-0 tiles are the bundles' leaf hashes, the
level-1 tile hashes full level-0 tiles, the tiles rebuild the signed root), no clear personal
data is in any byte served, malformed paths and tiles beyond the checkpoint are refused as
problem+json, and the cache headers say which answers never change. An independent
tlog-tiles client (tlog-scales) reads the log from a real server on the loopback."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from audit import store
from audit.checkpoint import SignedCheckpoint, VerifierKey
from tests.api.exchange_support import LoopbackServer
from tests.conftest import Service
from tests.tools import missing

BASE = "/v1/audit/tlog"
SIZE = 300  # one full level-0 tile, a partial one of 44, a partial level-1 tile of 1
NAME = "Trần Thị Tlogtile"
ID_NUMBER = "079188001234"
PROBLEM_JSON = "application/problem+json"


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return _sha(b"\x01" + left + right)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes, independent of audit.merkle."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


def _index(n: int) -> str:
    """The tlog-tiles path form of a tile index (x-prefixed 3-digit groups), written out here."""
    groups = [f"{n % 1000:03d}"]
    while n >= 1000:
        n //= 1000
        groups.insert(0, f"x{n % 1000:03d}")
    return "/".join(groups)


def _path(level: int | str, n: int, width: int = 256) -> str:
    return f"tile/{level}/{_index(n)}" + (f".p/{width}" if width < 256 else "")


def _tiles_of(size: int) -> list[tuple[int, int, int]]:
    """(level, index, width) of every hash tile a tree of ``size`` has, per the specification."""
    out, level = [], 0
    while size >> (8 * level):
        full, partial = divmod(size >> (8 * level), 256)
        out += [(level, n, 256) for n in range(full)]
        if partial:
            out.append((level, full, partial))
        level += 1
    return out


def _split_bundle(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 2], "big")
        assert at + 2 + size <= len(data), "a truncated bundle entry"
        out.append(data[at + 2 : at + 2 + size])
        at += 2 + size
    return out


def _cache_control(response: httpx.Response) -> dict[str, str]:
    parts = [p.strip() for p in response.headers["cache-control"].split(",")]
    return {k.strip().lower(): v for k, _, v in (p.partition("=") for p in parts)}


@dataclass
class Log:
    svc: Service
    headers: dict[str, str]
    pii_seqs: tuple[int, int]

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.svc.client.get(f"{BASE}/{path}", headers=self.headers, **kwargs)  # type: ignore[arg-type]

    def ok(self, path: str) -> httpx.Response:
        response = self.get(path)
        assert response.status_code == 200, (path, response.text)
        return response


@pytest.fixture
def log(service: Service) -> Iterator[Log]:
    """A log of exactly SIZE entries, two of them with personal data (one in the full tile, one
    in the partial one), and a checkpoint at SIZE."""
    audit = service.state.audit
    headers = service.auth("audit:read")  # creating the key appends an entry: before counting
    pii = {"name": NAME, "id_number": ID_NUMBER}
    first = audit.record("system", "dossier.received", "000.00.31.H29-251123-0001", {"channel": "portal"}, pii)
    filler = SIZE - audit.size() - 1
    audit.record_many([("system", "test.filled", f"item {i}", {"i": i}, None) for i in range(filler)])
    second = audit.record("system", "dossier.received", "000.00.31.H29-251123-0002", {"channel": "portal"}, pii)
    assert audit.size() == SIZE and first < 256 <= second
    assert audit.checkpoint_now().tree_size == SIZE
    yield Log(service, headers, (first, second))


def _fetch_all(log: Log, size: int) -> tuple[dict[int, list[bytes]], list[bytes], list[httpx.Response]]:
    """Every hash tile (as hashes per level) and every entry bundle (as entries) of the tree."""
    hashes: dict[int, list[bytes]] = {}
    answers = []
    for level, n, width in _tiles_of(size):
        response = log.ok(_path(level, n, width))
        assert len(response.content) == 32 * width
        hashes.setdefault(level, []).extend(response.content[i : i + 32] for i in range(0, len(response.content), 32))
        answers.append(response)
    entries: list[bytes] = []
    full, partial = divmod(size, 256)
    for n, width in [*((n, 256) for n in range(full)), *([(full, partial)] if partial else [])]:
        response = log.ok(_path("entries", n, width))
        bundled = _split_bundle(response.content)
        assert len(bundled) == width
        entries += bundled
        answers.append(response)
    return hashes, entries, answers


def _root_from_tiles(hashes: dict[int, list[bytes]], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) taking each aligned subtree of height 8·L from the level-L tiles."""
    level, a, b = 0, lo, hi
    while b - a > 1 and a % 256 == 0 and b % 256 == 0:
        a, b, level = a // 256, b // 256, level + 1
    if b - a == 1:
        return hashes[level][a]
    k = 1 << ((hi - lo - 1).bit_length() - 1)
    return _node(_root_from_tiles(hashes, lo, lo + k), _root_from_tiles(hashes, lo + k, hi))


def test_the_tiles_rebuild_the_signed_root_and_the_bundles_the_stored_entries(log: Log) -> None:
    note = log.ok("checkpoint")
    assert note.headers["content-type"] == "text/plain; charset=utf-8"
    assert note.text == log.svc.client.get("/v1/audit/checkpoint", headers=log.headers).text
    keys = [VerifierKey.from_text(k) for k in log.svc.client.get("/v1/audit/public-key").text.splitlines()]
    SignedCheckpoint.from_text(note.text).verify(keys)
    origin, size_line, root_line = note.text.split("\n")[:3]
    size, root = int(size_line), base64.b64decode(root_line)
    assert size == SIZE and origin == log.svc.state.audit.origin

    hashes, entries, _ = _fetch_all(log, size)
    assert sorted(hashes) == [0, 1] and len(hashes[0]) == SIZE and len(hashes[1]) == 1
    # Level 0: the leaf hashes of the bundled entries, which are the stored entries' hashes.
    assert [_sha(b"\x00" + e) for e in entries] == hashes[0]
    stored = log.svc.client.get(f"/v1/audit/entries?start=0&end={SIZE}", headers=log.headers).json()["entries"]
    assert [bytes.fromhex(e["hash"]) for e in stored] == hashes[0]
    for data, entry in zip(entries, stored, strict=True):
        assert json.loads(data) == {k: v for k, v in entry.items() if k != "hash"}
    # Level 1: each hash is the MTH of a full level-0 tile; together they give the signed root.
    assert hashes[1] == [_mth(hashes[0][:256])]
    assert _root_from_tiles(hashes, 0, size) == root


def test_no_byte_served_holds_clear_personal_data(log: Log) -> None:
    with log.svc.state.engine.connect() as conn:
        kept = [store.get_pii(conn, seq).personal() for seq in log.pii_seqs]
    assert kept == [{"id_number": ID_NUMBER, "name": NAME}] * 2  # the log does hold it, apart
    _, entries, answers = _fetch_all(log, SIZE)
    served = b"".join([log.ok("checkpoint").content, *(a.content for a in answers)])
    for clear in (NAME, ID_NUMBER, "Tlogtile", json.dumps(NAME)):
        assert clear.encode() not in served
    for seq in log.pii_seqs:
        commitment = json.loads(entries[seq])["pii"]
        assert len(commitment) == 64 and commitment.encode() in served


def test_full_tiles_are_immutable_and_partial_ones_and_the_checkpoint_short_lived(log: Log) -> None:
    for path in ("tile/0/000", "tile/entries/000"):
        response = log.ok(path)
        assert response.headers["content-type"] == "application/octet-stream"
        cache = _cache_control(response)
        assert cache["max-age"] == "31536000" and "immutable" in cache and "no-store" not in cache
    for path in ("tile/0/001.p/44", "tile/entries/001.p/44", "tile/1/000.p/1", "checkpoint"):
        cache = _cache_control(log.ok(path))
        assert "immutable" not in cache and ("no-cache" in cache or int(cache["max-age"]) <= 60), path
    # An authenticated answer must not be kept by a shared cache for callers without a key.
    assert all("private" in _cache_control(log.ok(p)) for p in ("tile/0/000", "tile/1/000.p/1", "checkpoint"))


def _refused(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"].endswith(":" + slug)
    assert "immutable" not in response.headers["cache-control"]


def test_tiles_beyond_the_checkpoint_are_404_until_a_checkpoint_covers_them(log: Log) -> None:
    audit = log.svc.state.audit
    before = log.ok("tile/0/001.p/44").content
    audit.record_many([("system", "test.later", f"later {i}", None, None) for i in range(10)])
    assert audit.size() == SIZE + 10
    for path in (
        "tile/0/001.p/45",  # exists in the database, not yet under a checkpoint
        "tile/entries/001.p/45",
        "tile/0/001",
        "tile/entries/001",
        "tile/0/002.p/1",
        "tile/1/000",
        "tile/1/001.p/1",
        "tile/2/000.p/1",
        "tile/63/x999/999",
    ):
        _refused(log.get(path), 404, "tile-not-found")
    audit.checkpoint_now()
    after = log.ok("tile/0/001.p/54").content
    # The partial tile of the earlier checkpoint is still served, a prefix of the newer one.
    assert log.ok("tile/0/001.p/44").content == before == after[: 44 * 32]
    assert log.ok("tile/0/001.p/1").content == before[:32]


MALFORMED = [
    "tile/00/000",
    "tile/64/000",
    "tile/0/0000",
    "tile/0/01",
    "tile/0/x000/001",
    "tile/0/001/000",
    "tile/0/000.p/0",
    "tile/0/000.p/256",
    "tile/0/000.p/01",
    "tile/0/000.p",
    "tile/0/000/",
    "tile/entries/",
    "tile/entries/0",
    "tile/",
    "tile/abc/000",
    "tile/0/%D9%A0%D9%A0%D9%A0",  # digits of another script
    "tile/0/x001.p/5/000",
]


def test_malformed_paths_are_400_and_change_nothing(log: Log) -> None:
    for path in MALFORMED:
        _refused(log.get(path), 400, "malformed-tile-path")
    assert log.svc.state.audit.size() == SIZE
    assert log.svc.state.audit.current_checkpoint().tree_size == SIZE


def test_paths_outside_the_tile_tree_and_other_methods_are_refused(log: Log) -> None:
    for path in ("tiles/0/000", "checkpoints", "entries/000", "tile-0-000"):
        _refused(log.get(path), 404, "not-found")
    response = log.svc.client.post(f"{BASE}/tile/0/000", headers=log.headers)
    assert response.status_code == 405 and response.headers["content-type"] == PROBLEM_JSON


def test_reading_tiles_needs_the_audit_read_scope(log: Log) -> None:
    others = log.svc.auth("audit:append", "sign", "verify")
    for path in ("checkpoint", "tile/0/000", "tile/entries/000", "tile/0/0000"):
        anonymous = log.svc.client.get(f"{BASE}/{path}")
        assert anonymous.status_code == 401 and anonymous.headers["content-type"] == PROBLEM_JSON
        assert log.svc.client.get(f"{BASE}/{path}", headers=others).status_code == 403


def test_an_independent_tlog_tiles_client_verifies_the_log_over_http(log: Log) -> None:
    try:
        from tlog_scales.backend import HttpBackend
        from tlog_scales.reader import TilesReader
        from tlog_scales.signing import Vkey
        from tlog_scales.tiles import leaf_hash
    except ImportError:
        missing("tlog-scales is not installed (pip package tlog-scales, pinned in requirements-test.lock)")
    server = LoopbackServer(log.svc.app)
    try:
        backend = HttpBackend(f"{server.url}{BASE}")
        backend.session.headers["Authorization"] = log.headers["Authorization"]
        reader = TilesReader(backend)
        checkpoint = reader.get_checkpoint()
        vkey = log.svc.client.get("/v1/audit/public-key").text.splitlines()[0]
        checkpoint.verify(Vkey.from_string(vkey))
        assert checkpoint.size == SIZE
        assert reader.calculate_root_hash() == checkpoint.root_hash
        stored = log.svc.client.get(f"/v1/audit/entries?start=0&end={SIZE}", headers=log.headers).json()["entries"]
        for seq in (0, *log.pii_seqs, 255, 256, SIZE - 1):
            leaf = reader.get_entry(seq)
            assert leaf_hash(leaf).hex() == stored[seq]["hash"]
            reader.get_inclusion_proof(seq, SIZE).check(leaf_hash(leaf), checkpoint.root_hash)
            assert NAME.encode() not in leaf and ID_NUMBER.encode() not in leaf
        # The proofs it builds from the tiles are the ones the proof API serves.
        ours = log.svc.client.get(f"/v1/audit/proofs/consistency?first=100&second={SIZE}", headers=log.headers).json()
        theirs = reader.get_consistency_proof(100, SIZE)
        assert [h.hex() for h in theirs.node_hashes] == ours["path"]
        theirs.check(bytes.fromhex(ours["first_root"]), checkpoint.root_hash)
    finally:
        server.stop()
