"""The repository speaks of itself alone: no file points outside it.

What the repository holds is what its readers receive, so a reference to a document, a
directory or a ticket that lives elsewhere is a dead end for them. Every file git knows (tracked,
or new and not ignored) is searched line by line for: a path into the sibling directories the
project was once developed beside, the names of design or style documents kept outside the
repository, ticket numbers and numbered rules of a style guide (``RULES`` below). Every
relative link of a Markdown file must name a file or directory that exists inside the
repository. Path-traversal strings that tests feed to the service ("../etc/passwd") are not
references and are not flagged: only those sibling directories are.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = frozenset({".git", ".venv", "var", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"})

# Written in pieces so that this file does not match its own patterns.
_OUTSIDE = "|".join(
    (
        r"\.\./" + "shared",
        r"\.\./" + r"\.library",
        r"\b" + "DESIGN" + r"\.md\b",
        r"\b" + "STYLE" + r"\.md\b",
    )
)
RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(_OUTSIDE), "refers to a file outside the repository"),
    (re.compile(r"\b" + "issues?" + r"\s+#?\d+", re.IGNORECASE), "cites a ticket number"),
    (re.compile(r"\b" + "rule" + r"\s+#?\d+", re.IGNORECASE), "cites a numbered style rule"),
)
# [text](target) or [text](target "title"); images too. Targets with a scheme or only an anchor
# are not files.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def repository_files(root: Path) -> list[Path]:
    """Files git tracks or would track (new, not ignored); a plain walk where git is absent."""
    git = shutil.which("git")
    if git is not None and (root / ".git").exists():
        listed = subprocess.run(
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return sorted({root / name for name in listed.split("\0") if name and (root / name).is_file()})
    return sorted(_walk(root))


def _walk(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        relative = path.relative_to(root).parts
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative):
            continue
        if path.is_file():
            yield path


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None  # binary
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _link_problem(root: Path, document: Path, target: str) -> str | None:
    if target.startswith("#") or _SCHEME.match(target):
        return None
    path_part = target.split("#", 1)[0].split("?", 1)[0]
    if not path_part:
        return None
    base = root if path_part.startswith("/") else document.parent
    resolved = (base / path_part.lstrip("/")).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return f"links to {target}, outside the repository"
    if not resolved.exists():
        return f"links to {target}, which does not exist"
    return None


def find_outside_references(root: Path, files: Iterable[Path]) -> list[str]:
    """``path:line: reason`` for every reference outside the repository in ``files``."""
    found: list[str] = []
    for path in files:
        text = _text(path)
        if text is None:
            continue
        name = path.relative_to(root).as_posix()
        markdown = path.suffix.lower() == ".md"
        in_fence = False
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, reason in RULES:
                match = pattern.search(line)
                if match:
                    found.append(f"{name}:{number}: {reason}: {match.group(0)!r}")
            if not markdown:
                continue
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
                continue
            if in_fence:
                continue
            for target in _LINK.findall(line):
                problem = _link_problem(root, path, target)
                if problem:
                    found.append(f"{name}:{number}: {problem}")
    return found


def test_no_file_of_the_repository_refers_outside_it() -> None:
    files = repository_files(ROOT)
    assert any(path.name == "README.md" for path in files), "the file list is empty or wrong"
    problems = find_outside_references(ROOT, files)
    assert not problems, "references outside the repository:\n" + "\n".join(problems)


def test_the_checker_reports_each_kind_of_outside_reference(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "real.md").write_text("# real\n", encoding="utf-8")
    sibling = "../" + "shared"
    (tmp_path / "README.md").write_text(
        "\n".join(
            (
                "# A project",
                f"The design is in `{sibling}/notes.txt`.",
                "See " + "DESIGN" + ".md for the contract.",
                "Fixed in " + "issue" + " 12.",
                "As STYLE" + ".md " + "rule" + " 4 says.",
                "[fine](docs/real.md) and [anchor](#a-project) and [web](https://example.org/x)",
                "[missing](docs/absent.md)",
                "[escapes](../elsewhere/README.md)",
                "```",
                "[in a code block](not/checked.md)",
                "```",
            )
        )
        + "\n",
        encoding="utf-8",
    )
    (tmp_path / "tool.py").write_text(
        f'ATTACK = "../etc/passwd"  # a test input, not a reference\nBAD = "{sibling}/seeds"\n', encoding="utf-8"
    )
    problems = find_outside_references(tmp_path, sorted(_walk(tmp_path)))
    lines = sorted(p.split(": ", 1)[0] for p in problems)
    assert lines == [
        "README.md:2",
        "README.md:3",
        "README.md:4",
        "README.md:5",
        "README.md:5",
        "README.md:7",
        "README.md:8",
        "tool.py:2",
    ], problems
    assert any("does not exist" in p for p in problems)
    assert any("outside the repository" in p and "elsewhere" in p for p in problems)


def test_a_clean_tree_gives_no_report(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Clean\n\nSee [the code](main.py).\n", encoding="utf-8")
    (tmp_path / "main.py").write_text('PATH = "/a/../b"\n', encoding="utf-8")
    assert find_outside_references(tmp_path, sorted(_walk(tmp_path))) == []
