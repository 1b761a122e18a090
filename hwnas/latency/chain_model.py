"""A latency table bound to a chain space (``LatencyModel``): ``T[l, k]`` in ms, expected and predicted latency.

A chain net's latency is modelled as the sum of its parts (stem, one op per layer, head)
through the table's calibration ``a * sum + c * ops + b`` (``hwnas.latency.calibration``),
``ops`` the layers that run an op (not a skip): ``c`` is what an op costs inside a net beyond its
time alone, which a line through ``sum`` alone would charge to every net. Each part was timed
as its own call; where the table holds the ``overhead`` entry (an identity model), that per-call
cost is taken off every part and counted once per net, so skipping layers saves no phantom calls.
The sum stays separable per layer, so the fastest and slowest nets are exact (per-layer minimum
and maximum). Measurements behind this: docs/latency_models.md.
"""

from __future__ import annotations

import torch

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency.calibration import apply_calibration
from hwnas.latency.keys import check_covers, head_key, overhead_key, profile_command, stem_key
from hwnas.latency.table import LatencyTable
from hwnas.spaces import SKIP_OPS, ChainSpace


class LatencyModel:
    """``latency_ms[l, k]``: ms of candidate ``space.candidates[k]`` at layer ``l`` (float64).

    Illegal (layer, op) pairs hold 0 and are excluded by ``space.candidate_mask()``; skip ops
    cost 0 ms. ``fixed_ms`` is the stem plus the head. ``call_overhead_ms`` (0 for tables without
    the overhead entry) is already taken off each part and counted once in ``fixed_ms``.
    ``calibrated_ms[l, k]`` and ``calibrated_fixed_ms`` are the same parts through the
    calibration: what each adds to the predicted whole-net latency (``a * ms + c`` for an op, 0
    for a skip).
    """

    def __init__(self, table: LatencyTable, space: ChainSpace) -> None:
        self.table = table
        self.space = space
        if table.meta.get("space") not in (None, space.name):  # its -o would name this table, which profile then refuses
            raise HwnasError(
                f"latency table {table.path or ''} is a table of space {table.meta['space']}, not {space.name}; profile "
                f"{space.name} into a table of its own with: {profile_command(space, table.meta)}"
            )
        check_covers(table, space)
        self.mask = space.candidate_mask()
        overhead = overhead_key(space)
        self.call_overhead_ms = table.ms(overhead) if overhead in table.entries else 0.0
        self.latency_ms = torch.zeros(self.mask.shape, dtype=torch.float64)
        runs_op = torch.zeros(self.mask.shape, dtype=torch.float64)
        self.fixed_ms = self._fill(runs_op)
        self.calibration = dict(table.calibration or {"a": 1.0, "b": 0.0})  # a copy: calibrated_ms is computed once
        scale, per_op_ms = float(self.calibration["a"]), float(self.calibration.get("per_op_ms", 0.0))
        self.calibrated_ms = scale * self.latency_ms + per_op_ms * runs_op
        self.calibrated_fixed_ms = scale * self.fixed_ms + float(self.calibration["b"])

    def _fill(self, runs_op: torch.Tensor) -> float:
        """Fill ``latency_ms[l, k]`` and ``runs_op[l, k]`` (the ops each candidate runs); return the fixed parts' ms."""
        columns = self.space.candidates
        #: each searchable part's ms by key (the per-call cost taken off): ``sum_ms`` is ``fixed_ms`` plus those the net runs
        self.part_ms = {}
        for layer in self.space.layers:
            for op in layer.candidates:
                if op not in SKIP_OPS:
                    key = layer.op_spec(op).key
                    self.part_ms[key] = self._part_ms(key)
                    self.latency_ms[layer.index, columns.index(op)] = self.part_ms[key]
                    runs_op[layer.index, columns.index(op)] = 1.0
        return self.table.ms(stem_key(self.space)) + self._part_ms(head_key(self.space))

    def _part_ms(self, key: str) -> float:
        """A part's entry without the per-call cost (never below 0: a part cannot save time)."""
        return max(self.table.ms(key) - self.call_overhead_ms, 0.0)

    def expected(self, probs: torch.Tensor) -> torch.Tensor:
        """E[latency] in ms under per-layer op probabilities ``probs`` [layers, ops]; differentiable."""
        table = self.calibrated_ms.to(dtype=probs.dtype, device=probs.device)
        return (probs * table).sum() + self.calibrated_fixed_ms

    def layer_ms(self, arch: Arch) -> list[float]:
        columns = self.space.candidates
        return [float(self.latency_ms[i, columns.index(op)]) for i, op in enumerate(arch.choices_in(self.space))]

    def sum_ms(self, arch: Arch) -> float:
        """Uncalibrated sum of the table entries of ``arch``."""
        return self.fixed_ms + sum(self.layer_ms(arch))

    def predict(self, arch: Arch) -> float:
        """Predicted (calibrated) latency of ``arch`` in ms."""
        return float(apply_calibration(self.calibration, self.sum_ms(arch), self.space.count_ops(arch.choices)))

    def columns_ms(self, columns: list[int]) -> float:
        """Predicted ms of the arch that runs candidate column ``columns[l]`` at layer ``l``.

        The same number as ``predict`` (the calibrated parts add up), without building an
        ``Arch``: cheap enough to call after every search step.
        """
        picked = self.calibrated_ms[torch.arange(len(columns)), torch.tensor(columns)]
        return float(picked.sum()) + self.calibrated_fixed_ms

    def reachable_ms(self, fixed: dict[int, int] | None = None) -> tuple[float, float]:
        """The fastest and slowest predicted ms over the archs whose layers in ``fixed`` run their fixed column."""
        low = self.calibrated_ms.masked_fill(~self.mask, float("inf")).min(dim=1).values
        high = self.calibrated_ms.masked_fill(~self.mask, float("-inf")).max(dim=1).values
        for layer, column in (fixed or {}).items():
            low[layer] = high[layer] = self.calibrated_ms[layer, column]
        return float(low.sum()) + self.calibrated_fixed_ms, float(high.sum()) + self.calibrated_fixed_ms

    def _extreme_columns(self, fastest: bool) -> list[int]:
        fill = float("inf") if fastest else float("-inf")
        table = self.calibrated_ms.masked_fill(~self.mask, fill)
        return (table.argmin(dim=1) if fastest else table.argmax(dim=1)).tolist()

    def _extreme(self, fastest: bool) -> tuple[Arch, float]:
        columns = self.space.candidates
        arch = Arch(self.space.name, [columns[int(k)] for k in self._extreme_columns(fastest)], self.space.args.to_dict())
        return arch, self.predict(arch)

    def fastest_columns(self) -> list[int]:
        """The fastest arch as candidate columns."""
        return self._extreme_columns(fastest=True)

    def fastest(self) -> tuple[Arch, float]:
        """The fastest arch of the space and its predicted ms (exact: the sum is separable)."""
        return self._extreme(fastest=True)

    def slowest(self) -> tuple[Arch, float]:
        return self._extreme(fastest=False)
