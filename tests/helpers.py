"""Helpers shared by the search tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def flags(**options: Any) -> list[str]:
    """Command-line flags from keywords, in order: ``flags(top_k=2, quiet=True)`` is ``["--top-k", "2", "--quiet"]``.

    ``True`` gives the bare flag; ``None`` and ``False`` leave the flag out.
    """
    args: list[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        args.append("--" + name.replace("_", "-"))
        if value is not True:
            args.append(str(value))
    return args


def tiny_search(table_path: Path, budget_ms: float, **options: Any) -> list[str]:
    """``hwnas search`` flags for the tiny space under the table at ``table_path``: a budget, short epochs.

    ``options`` override the defaults or add flags (``flags`` spelling: ``steps_per_epoch=3``, ``quiet=True``).
    """
    defaults = dict(latency=f"{budget_ms}ms", table=str(table_path), width_mult=0.25, resolution=16, epochs=1)
    return flags(**{**defaults, "steps_per_epoch": 2, "batch_size": 16, "bn_batches": 1, **options})
