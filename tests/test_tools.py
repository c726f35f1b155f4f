"""The rule of tests/tools.py, seen as pytest reports it: a missing program FAILS a test when CI is
set and skips it otherwise, so a CI run can never go green by skipping an independent check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.tools import in_ci, require_tool

NEEDS_MISSING_TOOL = """
from tests.tools import require_tool

def test_needs_a_missing_tool():
    require_tool("no-such-tool-xyz", "nothing")
"""


def _run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_missing.py").write_text(NEEDS_MISSING_TOOL)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the rule under test; starts in a fraction of the time
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "test_missing.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_tool_fails_the_test_in_ci(tmp_path: Path, ci: str) -> None:
    out = _run_pytest(tmp_path, ci)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 failed" in out.stdout and "skipped" not in out.stdout
    assert "no-such-tool-xyz is not installed (Debian package nothing" in out.stdout
    assert "CI is set: this test must run, never skip" in out.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_a_missing_tool_skips_the_test_outside_ci(tmp_path: Path, ci: str | None) -> None:
    out = _run_pytest(tmp_path, ci)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 skipped" in out.stdout and "failed" not in out.stdout
    assert "no-such-tool-xyz is not installed (Debian package nothing" in out.stdout


def test_an_installed_tool_gives_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    assert require_tool("sh", "dash") == shutil.which("sh")


def test_a_package_phrase_is_named_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^no-such-tool-xyz is not installed \(pip package x-cli\)$"):
        require_tool("no-such-tool-xyz", "pip package x-cli")
