"""Dependency hygiene: hashed lock files and the vulnerability gate of scripts/dep-audit.

The gate's decisions are tested with a fake network and a fake pip-audit, so the suite needs
no network: which database is trusted, what fails, what is skipped and what is listed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("requirements.lock", "requirements-test.lock")


def _load_script() -> ModuleType:
    loader = SourceFileLoader("dep_audit_script", str(ROOT / "scripts" / "dep-audit"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up while the class is built
    loader.exec_module(module)
    return module


dep = _load_script()


class FakeNet:
    """Answers by URL prefix; anything unlisted is unreachable."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, url: str, body: bytes | None, timeout: float) -> object:
        self.asked.append(url)
        for prefix, answer in self.answers.items():
            if url.startswith(prefix):
                return answer
        raise dep.Unreachable("Name or service not known")


OSV_OK = {dep.OSV_QUERY_URL: {"vulns": [{"id": "GHSA-h5c8-rqwp-cp95", "aliases": ["CVE-2024-22195"]}]}}
PROJECT_CANARY_OK = {
    f"{dep.PYPI_JSON_URL}/pycrypto/json": {
        "info": {"version": "2.6.1"},
        "vulnerabilities": [{"id": "PYSEC-2017-94", "aliases": ["CVE-2013-7459"]}],
    }
}


def _lock(tmp_path: Path, *pins: str) -> Path:
    path = tmp_path / "requirements.lock"
    path.write_text("".join(f"{p} \\\n    --hash=sha256:{'0' * 64}\n" for p in pins), encoding="utf-8")
    return path


def _pip_audit(
    stdout: object, returncode: int = 0, stderr: str = ""
) -> Callable[[Sequence[str]], subprocess.CompletedProcess[str]]:
    def run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        assert "--disable-pip" in command  # hashed locks: no resolution, nothing installed
        text = stdout if isinstance(stdout, str) else json.dumps(stdout)
        return subprocess.CompletedProcess(list(command), returncode, text, stderr)

    return run


def _main(
    args: Sequence[str], *, env: dict[str, str] | None = None, fetch: object, run: object = None
) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = dep.main(list(args), env=env or {}, fetch=fetch, run=run, out=lines.append)
    return code, lines


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_in_the_lock_files_carries_a_sha256_hash(lock: str) -> None:
    text = (ROOT / lock).read_text(encoding="utf-8")
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1].replace("-r requirements.lock\n", ""))
    pins = [e for e in entries if e.strip()]
    assert pins, f"{lock} pins nothing"
    for entry in pins:
        assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+ \\\n", entry), entry
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"no hash for {entry.split()[0]}"
    assert len(dep.read_pins(ROOT / lock)) >= len(pins)


def test_pins_are_read_through_includes_and_hash_continuations(tmp_path: Path) -> None:
    _lock(tmp_path, "Jinja2==3.1.6", "pyyaml==6.0.3")
    test_lock = tmp_path / "requirements-test.lock"
    test_lock.write_text(
        f"# header\n-r requirements.lock\npytest==9.2.0 \\\n    --hash=sha256:{'1' * 64}\n", encoding="utf-8"
    )
    pins = dep.read_pins(test_lock)
    assert [(p.name, p.version) for p in pins] == [("Jinja2", "3.1.6"), ("pyyaml", "6.0.3"), ("pytest", "9.2.0")]


def test_an_unpinned_requirement_is_a_usage_error(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("jinja2>=3\n", encoding="utf-8")
    code, lines = _main([str(lock)], fetch=FakeNet(OSV_OK))
    assert code == dep.EXIT_ERROR and "not an exact pin" in lines[0]


@pytest.mark.parametrize("ci", ["", "true"])
def test_no_reachable_database_skips_with_one_clear_line(tmp_path: Path, ci: str) -> None:
    code, lines = _main([str(_lock(tmp_path, "jinja2==3.1.6"))], env={"CI": ci}, fetch=FakeNet({}))
    assert code == dep.EXIT_CLEAN
    assert (
        len(lines) == 1
        and lines[0].startswith("dep-audit: SKIPPED")
        and "OSV" in lines[0]
        and "1 pins not audited" in lines[0]
    )


def test_a_mirror_without_advisory_data_is_unreachable_not_clean(tmp_path: Path) -> None:
    empty = FakeNet(
        {dep.OSV_QUERY_URL: {"vulns": []}, dep.PYPI_JSON_URL: {"info": {"version": "2.6.1"}, "vulnerabilities": []}}
    )
    code, lines = _main([str(_lock(tmp_path, "jinja2==3.1.2"))], fetch=empty, run=_pip_audit({"dependencies": []}))
    assert code == dep.EXIT_CLEAN and lines[0].startswith("dep-audit: SKIPPED") and "without CVE-2024-22195" in lines[0]


def test_a_known_vulnerability_fails_the_gate_and_unaudited_packages_are_listed(tmp_path: Path) -> None:
    report = {
        "dependencies": [
            {"name": "jinja2", "version": "3.1.2", "vulns": [{"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"]}]},
            {
                "name": "private-pkg",
                "skip_reason": "Dependency not found on PyPI and could not be audited: private-pkg (1.0)",
            },
        ],
        "fixes": [],
    }
    code, lines = _main(
        [str(_lock(tmp_path, "jinja2==3.1.2", "private-pkg==1.0"))], fetch=FakeNet(OSV_OK), run=_pip_audit(report, 1)
    )
    assert code == dep.EXIT_VULNERABLE
    assert "dep-audit: VULNERABLE jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in: 3.1.3)" in lines
    assert any(line.startswith("dep-audit: not audited: private-pkg") for line in lines)
    assert lines[-1] == "dep-audit: 1 audited, 1 vulnerable, 1 not audited"


def test_a_clean_audit_passes(tmp_path: Path) -> None:
    report = {"dependencies": [{"name": "jinja2", "version": "3.1.6", "vulns": []}], "fixes": []}
    code, lines = _main([str(_lock(tmp_path, "jinja2==3.1.6"))], fetch=FakeNet(OSV_OK), run=_pip_audit(report))
    assert code == dep.EXIT_CLEAN and lines[-1] == "dep-audit: 1 audited, 0 vulnerable, 0 not audited"


@pytest.mark.parametrize(("ci", "expected"), [("true", 2), ("", 0)])
def test_a_reachable_database_that_breaks_mid_audit_fails_only_in_ci(tmp_path: Path, ci: str, expected: int) -> None:
    broken = _pip_audit("", 2, "requests.exceptions.ConnectionError: reset by peer")
    code, lines = _main([str(_lock(tmp_path, "jinja2==3.1.6"))], env={"CI": ci}, fetch=FakeNet(OSV_OK), run=broken)
    assert code == expected and len(lines) == 1 and "did not finish" in lines[0] and "reset by peer" in lines[0]


def test_project_json_audits_latest_pins_and_lists_the_others(tmp_path: Path) -> None:
    net = FakeNet(
        {
            **PROJECT_CANARY_OK,
            f"{dep.PYPI_JSON_URL}/ecdsa/json": {
                "info": {"version": "0.19.2"},
                "vulnerabilities": [
                    {"id": "GHSA-wj6h-64fc-37mp", "aliases": ["CVE-2024-23342"], "fixed_in": [], "withdrawn": None}
                ],
            },
            f"{dep.PYPI_JSON_URL}/old-thing/json": {"info": {"version": "2.0"}, "vulnerabilities": []},
            f"{dep.PYPI_JSON_URL}/retracted/json": {
                "info": {"version": "1.0"},
                "vulnerabilities": [{"id": "PYSEC-0000-1", "withdrawn": "2024-01-01T00:00:00Z"}],
            },
        }
    )
    lock = _lock(tmp_path, "ecdsa==0.19.2", "Old_Thing==1.0", "retracted==1.0")
    code, lines = _main([str(lock)], fetch=net)
    assert code == dep.EXIT_VULNERABLE
    assert "dep-audit: VULNERABLE ecdsa 0.19.2: GHSA-wj6h-64fc-37mp (fixed in: no fixed release)" in lines
    assert any("not audited: Old_Thing 1.0: not the latest release (2.0)" in line for line in lines)
    assert lines[-1] == "dep-audit: 2 audited, 1 vulnerable, 1 not audited"
    assert f"{dep.PYPI_JSON_URL}/old-thing/json" in net.asked  # PEP 503 name in the URL
    ignored, _ = _main(["--ignore-vuln", "CVE-2024-23342", str(lock)], fetch=net)
    assert ignored == dep.EXIT_CLEAN
