"""docs/threat-model.md cites tests by name; every name must exist, and the document keeps its shape.

A renamed or deleted test makes this fail, so the threat model cannot claim evidence that is
no longer in the suite.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "threat-model.md"
REFERENCE = re.compile(r"\b(tests/[A-Za-z0-9_/]+\.py)::(test_[A-Za-z0-9_]+)\b")
ARTICLES = [f"Art. 4.{n}" for n in range(1, 6)] + [f"Art. 5.{n}" for n in range(1, 7)] + ["Account duty"]
COMPONENTS = (
    "API and gateway",
    "Signing and keystore",
    "Audit log",
    "Accounts and auth",
    "Receipts",
    "Database",
    "Operators",
)
STRIDE = "STRIDE"


def _text() -> str:
    return DOCUMENT.read_text(encoding="utf-8")


def _references() -> list[tuple[str, str]]:
    return sorted(set(REFERENCE.findall(_text())))


@cache
def _test_functions(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    return frozenset(node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _section(heading_prefix: str, level: str) -> str:
    text = _text()
    start = text.find(f"\n{level} {heading_prefix}")
    assert start >= 0, f"no section {level} {heading_prefix}"
    following = re.search(rf"\n#{{2,{len(level)}}} ", text[start + 1 :])
    return text[start : start + 1 + following.start()] if following else text[start:]


def test_the_document_cites_tests_at_all() -> None:
    assert len(_references()) >= 100


@pytest.mark.parametrize(("path", "name"), _references())
def test_every_cited_test_exists(path: str, name: str) -> None:
    assert (ROOT / path).is_file(), f"docs/threat-model.md cites {path}, which does not exist"
    assert name in _test_functions(path), f"docs/threat-model.md cites {path}::{name}, which is not defined there"


@pytest.mark.parametrize("article", ARTICLES)
def test_each_article_item_has_its_section_with_evidence(article: str) -> None:
    section = _section(article, "###")
    assert REFERENCE.search(section), f"{article} names no test"


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_is_examined_for_every_stride_threat(component: str) -> None:
    section = _section(f"3.{COMPONENTS.index(component) + 1} {component}", "###")
    letters = {m.group(1) for m in re.finditer(r"^\| ([STRIDE]) \|", section, re.MULTILINE)}
    assert letters == set(STRIDE), f"{component} lacks {sorted(set(STRIDE) - letters)}"


def test_out_of_scope_and_gaps_are_stated() -> None:
    scope = _section("4. Out of scope", "##")
    for topic in (
        "superuser with the signing keys and the database",
        "PKCS#11",
        "TLS termination",
        "forwarded headers",
    ):
        assert topic.lower() in scope.lower(), topic
    assert re.search(r"^1\. ", _section("5. Gaps", "##"), re.MULTILINE)


def test_personal_data_section_names_the_law_and_the_operators_share() -> None:
    section = _section("6. Personal data", "##")
    for topic in ("Law 91/2025/QH15", "Decree 356/2025/NĐ-CP", "salted commitment", "Erasure", "Left to the operator"):
        assert topic in section, topic
    assert REFERENCE.search(section), "the personal-data section names no test"
