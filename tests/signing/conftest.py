"""Fixtures of the signing tests (the helpers themselves are in ``_pki.py``)."""

from __future__ import annotations

import pytest

from tests.signing._pki import TestCa


@pytest.fixture(scope="module")
def ca() -> TestCa:
    """A throwaway root CA, one per test module."""
    return TestCa.create()
