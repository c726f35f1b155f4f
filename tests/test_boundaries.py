"""The package boundaries of docs/architecture.md hold: each leaf domain package, imported alone in a
fresh interpreter, brings no other package of this repository into sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = {"signing", "audit", "auth", "integrity", "api"}


@pytest.mark.parametrize("package", ["signing", "audit", "auth"])
def test_leaf_package_imports_no_other_package_of_ours(package: str) -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout)) & OURS
    assert loaded == {package}
