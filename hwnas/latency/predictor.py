"""What every latency model offers: the interface the search, the derivation and the CLI rely on.

``LatencyModel`` (chain spaces) and ``DagLatencyModel`` (DAG spaces) implement it; each adds
what its own methods need (E[lat] over per-layer probabilities, per-block costs).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from hwnas.arch import Arch
from hwnas.latency.table import LatencyTable
from hwnas.spaces import Space


@runtime_checkable
class LatencyPredictor(Protocol):
    """Predicted latency (ms) of the archs of one space under one latency table."""

    table: LatencyTable
    space: Space
    #: the table's calibration ``{"a", "b", "per_op_ms"}`` (identity where the table has none)
    calibration: dict
    #: the runtime's per-call cost, taken off every part and counted once per net
    call_overhead_ms: float
    #: the fixed parts (stem, head, reductions), uncalibrated, and what they add to a prediction
    fixed_ms: float
    calibrated_fixed_ms: float

    def predict(self, arch: Arch) -> float:
        """The calibrated prediction in ms."""
        ...

    def sum_ms(self, arch: Arch) -> float:
        """The uncalibrated sum of the table entries ``arch`` runs."""
        ...

    def layer_ms(self, arch: Arch) -> list[float]:
        """Uncalibrated ms per searchable layer (chain) or block (DAG)."""
        ...

    def fastest(self) -> tuple[Arch, float]:
        """The fastest arch of the space and its prediction."""
        ...

    def slowest(self) -> tuple[Arch, float]:
        """The slowest arch (DAG spaces: the slowest found by a local ascent) and its prediction."""
        ...
