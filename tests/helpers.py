"""Helpers shared by the search tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from hwnas.latency import LatencyModel, LatencyTable
from hwnas.search.synthetic import tiny_space


def budget_between(table_path: Path, share: float) -> float:
    """The budget ``share`` of the way from the tiny space's fastest net to its slowest, under the table at ``table_path``."""
    model = LatencyModel(LatencyTable.load(table_path), tiny_space())
    fastest, slowest = model.fastest()[1], model.slowest()[1]
    return fastest + share * (slowest - fastest)
