"""pytest imports test modules by basename (no packages under tests/): two test files with the
same name in different folders stop the whole collection ("import file mismatch")."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def test_every_test_module_has_a_unique_basename() -> None:
    files = list((Path(__file__).resolve().parents[1]).rglob("test_*.py"))
    assert len(files) > 50
    dup = [n for n, k in Counter(f.name for f in files).items() if k > 1]
    assert not dup, f"test modules sharing a basename: {dup}"
