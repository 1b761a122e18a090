"""tests/mutations.py stays runnable: each mutation's snippet occurs once in its file, and its tests exist."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mutations import MUTATIONS, ROOT  # noqa: E402


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_every_mutation_applies_and_names_existing_tests(mutation):
    assert (ROOT / mutation.path).read_text().count(mutation.old) == 1, f"update {mutation.name} in tests/mutations.py"
    assert mutation.new != mutation.old and mutation.tests
    for test in mutation.tests:
        path, _, name = test.partition("::")
        assert (ROOT / path).is_file(), test
        assert not name or f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), test
