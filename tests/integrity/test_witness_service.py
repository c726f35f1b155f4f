"""The witness's directory: keys made once with private files 0600, records replaced atomically
before the answer, add-checkpoint serialised per log, and every bad set-up refused clearly."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from audit.checkpoint import VerifierKey
from audit.cosignature import CosignatureType, with_cosignatures
from audit.errors import CheckpointRefused, MalformedWitnessState, WitnessRefusal
from audit.witness import origin_hash
from integrity.errors import ConfigurationError
from integrity.witness_service import (
    KEY_FILES,
    NAME_FILE,
    VKEY_FILE,
    init_witness,
    load_cosigners,
    load_logs,
    open_witness,
)
from tests.audit.witness_support import DEMO_KEYS, DEMO_ORIGIN, MemoryLog, new_log

NAME = "witness.test/w1"


def _setup(tmp_path: Path, log: MemoryLog) -> tuple[Path, Path]:
    directory = tmp_path / "witness"
    init_witness(directory, NAME)
    vkey = tmp_path / "log.vkey"
    vkey.write_text(log.signer.verifier.to_text() + "\n")
    return directory, vkey


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_init_writes_private_keys_0600_and_the_public_vkeys(tmp_path: Path) -> None:
    directory = tmp_path / "w"
    keys = init_witness(directory, NAME)
    assert [k.kind for k in keys] == [CosignatureType.MLDSA44, CosignatureType.ED25519]
    for name in KEY_FILES.values():
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert (directory / VKEY_FILE).read_text() == "".join(k.to_text() + "\n" for k in keys)
    assert [c.key for c in load_cosigners(directory)] == list(keys)


def test_init_refuses_to_replace_a_witness_and_writes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "w"
    init_witness(directory, NAME)
    before = _files(directory)
    with pytest.raises(ConfigurationError, match="already holds a witness"):
        init_witness(directory, "witness.test/other")
    assert _files(directory) == before


def test_init_refuses_even_one_leftover_key(tmp_path: Path) -> None:
    directory = tmp_path / "w"
    directory.mkdir()
    (directory / KEY_FILES[CosignatureType.ED25519]).write_text("old key")
    with pytest.raises(ConfigurationError, match=r"witness-ed25519\.key\.pem"):
        init_witness(directory, NAME)
    assert _files(directory) == {"witness-ed25519.key.pem": b"old key"}


def test_init_refuses_an_invalid_name_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="invalid witness name"):
        init_witness(tmp_path / "w", "has space")
    assert not (tmp_path / "w").exists()


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "w"
    init_witness(directory, NAME)
    (directory / KEY_FILES[CosignatureType.MLDSA44]).chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        load_cosigners(directory)


def test_a_directory_without_a_witness_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a witness directory"):
        load_cosigners(tmp_path)


def test_log_origin_defaults_to_the_key_name_and_can_be_overridden(tmp_path: Path) -> None:
    demo = load_logs([DEMO_KEYS / "audit-log.vkey"])
    assert [log.origin for log in demo] == [DEMO_ORIGIN]
    other = load_logs([DEMO_KEYS / "audit-log.vkey"], origin="example.test/renamed")
    assert [log.origin for log in other] == ["example.test/renamed"]
    assert other[0].keys == demo[0].keys
    with pytest.raises(ConfigurationError, match="exactly one --log"):
        load_logs([DEMO_KEYS / "audit-log.vkey", DEMO_KEYS / "audit-log.vkey"], origin="x")


@pytest.mark.parametrize(
    ("content", "message"), [("", "not a signed-note verifier key"), ("garbage\n", "not a signed-note verifier key")]
)
def test_bad_log_key_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "log.vkey"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        load_logs([path])
    with pytest.raises(ConfigurationError, match="cannot read log key"):
        load_logs([tmp_path / "missing.vkey"])


def test_accepted_checkpoint_is_on_disk_before_the_answer(tmp_path: Path) -> None:
    log = new_log()
    directory, vkey = _setup(tmp_path, log)
    service, lock = open_witness(directory, [vkey], clock=lambda: 1_760_000_000)
    try:
        result = service.add_checkpoint(log.body(0, 12))
        record_file = directory / "logs" / origin_hash(log.origin)
        assert record_file.read_text() == result.record.to_text()
        assert stat.S_IMODE(record_file.stat().st_mode) == 0o600
        assert [p.name for p in record_file.parent.iterdir()] == [record_file.name]  # no temporary left
        cosigned = with_cosignatures(log.checkpoint(12), result.body)
        assert all(c.key.verify(cosigned) == 1_760_000_000 for c in service.witness.cosigners)
        assert service.latest(origin_hash(log.origin)) == result.record
        assert service.latest("0" * 64) is None and service.latest("../etc") is None
    finally:
        lock.release()


@pytest.mark.parametrize(
    ("body_of", "reason"),
    [
        (lambda log: b"old x\n\n", WitnessRefusal.MALFORMED),
        (lambda log: new_log(origin="example.test/unknown").body(12, 20), WitnessRefusal.UNKNOWN_LOG),
        (lambda log: MemoryLog(new_log().signer, log.origin).body(12, 20), WitnessRefusal.UNTRUSTED),
        (lambda log: log.body(0, 20), WitnessRefusal.OLD_SIZE_MISMATCH),
        (lambda log: MemoryLog(log.signer, log.origin, salt="fork").body(12, 20), WitnessRefusal.INCONSISTENT),
    ],
)
def test_a_refusal_writes_nothing(
    tmp_path: Path, body_of: Callable[[MemoryLog], bytes], reason: WitnessRefusal
) -> None:
    log = new_log()
    directory, vkey = _setup(tmp_path, log)
    service, lock = open_witness(directory, [vkey])
    try:
        service.add_checkpoint(log.body(0, 12))
        before = _files(directory)
        with pytest.raises(CheckpointRefused) as info:
            service.add_checkpoint(body_of(log))
        assert info.value.reason is reason
        assert _files(directory) == before
    finally:
        lock.release()


def test_two_requests_from_the_same_size_cannot_both_advance(tmp_path: Path) -> None:
    """tlog-witness's rollback race: the clock is read between the check of the old size and the
    write of the new record, and here it is slow, so without the per-log lock both would pass."""
    log = new_log()
    directory, vkey = _setup(tmp_path, log)

    def slow_clock() -> int:
        time.sleep(0.3)
        return 1_760_000_000

    service, lock = open_witness(directory, [vkey], clock=slow_clock)
    outcomes: dict[int, object] = {}
    start = threading.Barrier(2)

    def submit(new: int) -> None:
        start.wait()
        try:
            outcomes[new] = service.add_checkpoint(log.body(0, new)).record.size
        except CheckpointRefused as exc:
            outcomes[new] = exc.reason

    try:
        threads = [threading.Thread(target=submit, args=(n,)) for n in (10, 30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        lock.release()
    sizes = [v for v in outcomes.values() if isinstance(v, int)]
    refusals = [v for v in outcomes.values() if isinstance(v, WitnessRefusal)]
    assert len(sizes) == 1 and refusals == [WitnessRefusal.OLD_SIZE_MISMATCH]
    winner = sizes[0]
    stored = service.store.load(log.origin)
    assert stored is not None and stored.size == winner


def test_one_process_per_directory(tmp_path: Path) -> None:
    log = new_log()
    directory, vkey = _setup(tmp_path, log)
    _service, lock = open_witness(directory, [vkey])
    try:
        with pytest.raises(ConfigurationError, match="another witness process"):
            open_witness(directory, [vkey])
    finally:
        lock.release()
    _service, lock = open_witness(directory, [vkey])  # free again once released
    lock.release()


def test_a_corrupt_record_stops_the_start(tmp_path: Path) -> None:
    log = new_log()
    directory, vkey = _setup(tmp_path, log)
    (directory / "logs").mkdir()
    (directory / "logs" / origin_hash(log.origin)).write_text("garbage")
    with pytest.raises(MalformedWitnessState):
        open_witness(directory, [vkey])
    # The directory lock was released on the way out.
    (directory / "logs" / origin_hash(log.origin)).unlink()
    _service, lock = open_witness(directory, [vkey])
    lock.release()


def test_the_name_file_is_what_names_the_cosignatures(tmp_path: Path) -> None:
    directory = tmp_path / "w"
    init_witness(directory, NAME)
    assert (directory / NAME_FILE).read_text() == NAME + "\n"
    assert {c.name for c in load_cosigners(directory)} == {NAME}
    assert isinstance(load_logs([DEMO_KEYS / "audit-log.vkey"])[0].keys[0], VerifierKey)
