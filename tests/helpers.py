"""Helpers shared by the search tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from hwnas.latency import LatencyModel, LatencyTable
from hwnas.spaces import ChainSpace, get_space


def tiny_space(resolution: int = 16) -> ChainSpace:
    """The proxyless layout at a quarter width and a small input: fast enough for unit tests."""
    return get_space("proxyless", resolution=resolution, in_channels=1, num_classes=10, width_mult=0.25)


def budget_between(table_path: Path, share: float) -> float:
    """The budget ``share`` of the way from the tiny space's fastest net to its slowest, under the table at ``table_path``."""
    model = LatencyModel(LatencyTable.load(table_path), tiny_space())
    fastest, slowest = model.fastest()[1], model.slowest()[1]
    return fastest + share * (slowest - fastest)
