"""The witness over HTTP (C2SP tlog-witness): every answer of add-checkpoint through the real
app, then three real ``bhxh-integrity witness serve`` processes cosigning checkpoints of the demo
audit-log key, refusing a fork, and keeping their record across a SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.witness_app import MAX_BODY_BYTES, create_witness_app
from audit.cosignature import CosignerKey, with_cosignatures
from audit.witness import origin_hash
from integrity.witness_service import init_witness, open_witness
from tests.audit.witness_support import (
    DEMO_ORIGIN,
    LOG_VKEY,
    REPO,
    MemoryLog,
    WitnessProcess,
    demo_log_signer,
    new_log,
)
from tests.loopback import free_port


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- the app in this process ------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, MemoryLog, Path]]:
    log = new_log()
    directory = tmp_path / "w"
    init_witness(directory, "witness.test/w1")
    vkey = tmp_path / "log.vkey"
    vkey.write_text(log.signer.verifier.to_text() + "\n")
    service, lock = open_witness(directory, [vkey])
    try:
        with TestClient(create_witness_app(service)) as client:
            yield client, log, directory
    finally:
        lock.release()


def test_cosigned_answer_is_signature_lines_that_verify(served: tuple[TestClient, MemoryLog, Path]) -> None:
    client, log, directory = served
    response = client.post("/add-checkpoint", content=log.body(0, 9))
    assert response.status_code == 200, response.text
    lines = response.text
    assert lines.count("\n") == 2 and all(line.startswith("\u2014 witness.test/w1 ") for line in lines.splitlines())
    cosigned = with_cosignatures(log.checkpoint(9), lines)
    keys = [CosignerKey.from_text(line) for line in (directory / "witness.vkey").read_text().splitlines()]
    assert all(abs(key.verify(cosigned) - time.time()) < 60 for key in keys)


def test_monitors_get_the_latest_cosigned_checkpoint(served: tuple[TestClient, MemoryLog, Path]) -> None:
    client, log, directory = served
    path = f"/{origin_hash(log.origin)}/checkpoint"
    assert client.get(path).status_code == 404
    client.post("/add-checkpoint", content=log.body(0, 9))
    client.post("/add-checkpoint", content=log.body(9, 14))
    response = client.get(path)
    assert response.status_code == 200
    assert response.text.startswith(f"{log.origin}\n14\n")
    assert response.text == (directory / "logs" / origin_hash(log.origin)).read_text()


@pytest.mark.parametrize(
    ("make_body", "status"),
    [
        (lambda log: b"old 1\nnot a proof\n\nnot a checkpoint", 400),
        (lambda log: log.body(0, 12), 409),
        (lambda log: new_log(origin=log.origin).body(9, 12), 403),
        (lambda log: new_log(origin="example.test/unknown").body(9, 12), 404),
        (lambda log: MemoryLog(log.signer, log.origin, salt="fork").body(9, 12), 422),
    ],
    ids=["400-malformed", "409-old-size", "403-untrusted", "404-unknown", "422-fork"],
)
def test_refusals_have_the_status_of_the_spec_and_write_nothing(
    served: tuple[TestClient, MemoryLog, Path], make_body: Callable[[MemoryLog], bytes], status: int
) -> None:
    client, log, directory = served
    assert client.post("/add-checkpoint", content=log.body(0, 9)).status_code == 200
    record = directory / "logs" / origin_hash(log.origin)
    before = record.read_bytes()
    response = client.post("/add-checkpoint", content=make_body(log))
    assert response.status_code == status, response.text
    assert record.read_bytes() == before


def test_409_carries_the_stored_size_as_text_x_tlog_size(served: tuple[TestClient, MemoryLog, Path]) -> None:
    client, log, _ = served
    client.post("/add-checkpoint", content=log.body(0, 9))
    response = client.post("/add-checkpoint", content=log.body(0, 12))
    assert response.status_code == 409
    assert response.headers["content-type"] == "text/x.tlog.size"
    assert response.text == "9\n"


def test_a_body_over_the_limit_is_refused_unread(served: tuple[TestClient, MemoryLog, Path]) -> None:
    client, _, directory = served
    response = client.post("/add-checkpoint", content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert list((directory / "logs").iterdir()) == []


def test_add_checkpoint_is_post_only(served: tuple[TestClient, MemoryLog, Path]) -> None:
    client, _, _ = served
    assert client.get("/add-checkpoint").status_code == 405


# --- the command line -------------------------------------------------------------------------


def test_init_prints_the_two_vkeys_and_refuses_a_second_time(tmp_path: Path) -> None:
    done = _cli(["witness", "init", "--name", "witness.test/w1", "--dir", str(tmp_path / "w")], tmp_path)
    assert done.returncode == 0, done.stderr
    keys = [CosignerKey.from_text(line) for line in done.stdout.splitlines()]
    assert [k.kind for k in keys] == [0x06, 0x04] and {k.name for k in keys} == {"witness.test/w1"}
    again = _cli(["witness", "init", "--name", "witness.test/w1", "--dir", str(tmp_path / "w"), "--json"], tmp_path)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "already holds a witness" in again.stderr
    assert [CosignerKey.from_text(line) for line in (tmp_path / "w" / "witness.vkey").read_text().splitlines()] == keys


def test_init_json(tmp_path: Path) -> None:
    done = _cli(["witness", "init", "--name", "witness.test/w2", "--dir", str(tmp_path / "w"), "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["name"] == "witness.test/w2" and [v["type"] for v in out["vkeys"]] == ["mldsa44", "ed25519"]
    assert all(CosignerKey.from_text(v["vkey"]).name == "witness.test/w2" for v in out["vkeys"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dir", "nowhere", "--log", str(LOG_VKEY)], "not a witness directory"),
        (["--dir", "w", "--log", "missing.vkey"], "cannot read log key"),
    ],
)
def test_serve_refuses_a_bad_set_up_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    init_witness(tmp_path / "w", "witness.test/w1")
    done = _cli(["witness", "serve", *args, "--port", str(free_port())], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1


# --- three witness processes ------------------------------------------------------------------


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[WitnessProcess]]:
    started: list[WitnessProcess] = []
    try:
        for n in (1, 2, 3):
            directory = tmp_path / f"w{n}"
            keys = list(init_witness(directory, f"witness{n}.test/w"))  # the command itself is tested above
            witness = WitnessProcess(directory, keys, tmp_path / f"w{n}.log")
            witness.start()
            started.append(witness)
        yield started
    finally:
        for witness in started:
            witness.stop()


def _cosign_everywhere(witnesses: list[WitnessProcess], log: MemoryLog, old: int, new: int) -> None:
    body = log.body(old, new)
    answers = [w.add(body) for w in witnesses]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    cosigned = with_cosignatures(log.checkpoint(new), "".join(a.text for a in answers))
    assert cosigned.verify([log.signer.verifier]) == (log.signer.verifier,)
    for witness in witnesses:
        for key in witness.keys:
            assert abs(key.verify(cosigned) - time.time()) < 60


def test_three_witnesses_cosign_refuse_a_fork_and_survive_sigkill(witnesses: list[WitnessProcess]) -> None:
    log = MemoryLog(demo_log_signer(), DEMO_ORIGIN, size=40)
    _cosign_everywhere(witnesses, log, 0, 5)
    _cosign_everywhere(witnesses, log, 5, 17)

    # A fork signed with the log's own key: same size and another root, then a fork that grows.
    fork = MemoryLog(log.signer, log.origin, size=40, salt="rewritten")
    for body in (fork.request(17, 17).to_body(), fork.body(17, 25)):
        assert [w.add(body).status_code for w in witnesses] == [422, 422, 422]
    # A client that missed the last cosigning learns the stored size.
    stale = [w.add(fork.body(5, 25)) for w in witnesses]
    assert {(a.status_code, a.text, a.headers["content-type"]) for a in stale} == {(409, "17\n", "text/x.tlog.size")}

    # The first witness answers, then dies at once; its record was on disk before the answer.
    first = witnesses[0]
    assert first.add(log.body(17, 23)).status_code == 200
    first.kill()
    first.start()
    again = first.add(log.body(17, 30))
    assert (again.status_code, again.text) == (409, "23\n")
    latest = httpx.get(f"{first.url}/{origin_hash(DEMO_ORIGIN)}/checkpoint", timeout=10)
    assert latest.status_code == 200 and latest.text.startswith(f"{DEMO_ORIGIN}\n23\n")
    assert first.add(log.body(23, 30)).status_code == 200
    # The others never saw 23 and still stand at 17.
    assert [w.add(log.body(23, 30)).text for w in witnesses[1:]] == ["17\n", "17\n"]
