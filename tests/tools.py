"""The outside programs the tests drive (independent verifiers, renderers, a software token).

One rule for all of them: a test that needs a program which is not installed is skipped on a
developer's machine, and FAILS when the environment variable CI is set, so that a CI run can
never pass by skipping what it was meant to check. Call ``require_tool`` inside the test, right
where the program is needed, so that tests which never run it never depend on it.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

# The values CI services set (GitHub, GitLab: "true"; others "1"); anything else, unset included, is off.
_TRUTHY = frozenset({"1", "true", "yes", "on"})


def in_ci() -> bool:
    """Whether this run is a CI run (environment variable CI set to a true value)."""
    return os.environ.get("CI", "").strip().lower() in _TRUTHY


def missing(message: str) -> NoReturn:
    """Stop the current test because something it needs is not there: a failure in CI, a skip elsewhere."""
    if in_ci():
        pytest.fail(f"{message} (CI is set: this test must run, never skip)", pytrace=False)
    pytest.skip(message)


def require_tool(name: str, package: str) -> str:
    """The path of program ``name``; when it is not on PATH the test fails in CI, else skips.

    ``package`` is what installs it, named in the message: a bare name is a Debian package
    ("openssl"); pass a full phrase for anything else ("pip package pyhanko-cli").
    """
    found = shutil.which(name)
    if found is None:
        source = package if " " in package else f"Debian package {package}; `make system-deps` installs it"
        missing(f"{name} is not installed ({source})")
    return found
