"""A latency table bound to a cell space (``nb201``): the sum over what the built net runs, and a per-edge surrogate.

A net of the NB201 space runs its stem, its two reductions and its head, and in each of its
15 cells every op that feeds the cell output (``Nb201Space.run_parts``: ``skip_connect`` and
``none`` run nothing) plus one add per extra input of a node. The prediction is the table's
calibration over that sum and its count of parts, as for the other spaces.

The search needs a latency per (edge, op) (``latency_ms[e, k]``): the op's entries over the
15 cells (5 per stage, at each stage's shape). That is the sum of a net whose every edge feeds
the output, without its adds: the expected-latency gradient and ``reachable_ms`` use it as
the surrogate; ``predict`` and ``columns_ms`` (what the controller and derive hold against the
budget) count exactly the parts the net runs. The fastest net (every edge ``none``) and the
slowest (every edge ``nor_conv_3x3``) are exact under both.
"""

from __future__ import annotations

import torch

from hwnas.arch import Arch
from hwnas.latency.calibration import apply_calibration
from hwnas.latency.chain_model import LatencyModel
from hwnas.latency.keys import head_key, stem_key
from hwnas.spaces.nb201 import CELLS_PER_STAGE, FREE_OPS, Nb201Space


class CellLatencyModel(LatencyModel):
    """``LatencyModel`` for ``nb201``: per-edge surrogate ``latency_ms[e, k]``, exact ``predict``."""

    space: Nb201Space

    def _fill(self, runs_op: torch.Tensor) -> float:
        """Per edge and op, its entries over the 15 cells; the stem, head and reductions are the fixed parts."""
        space, columns = self.space, self.space.candidates
        self.part_ms = {part.key: self._part_ms(part.key) / part.repeats for part in space.parts()}
        for layer in space.layers:
            for op in layer.candidates:
                if op not in FREE_OPS:
                    keys = [space.op_key(op, c, size) for c, size in space.stages()]
                    self.latency_ms[layer.index, columns.index(op)] = CELLS_PER_STAGE * sum(self.part_ms[k] for k in keys)
                    runs_op[layer.index, columns.index(op)] = CELLS_PER_STAGE * len(keys)
        fixed_ms = self.table.ms(stem_key(space)) + self._part_ms(head_key(space))
        return fixed_ms + sum(self.part_ms[key] for key in space.fixed_part_keys())

    def layer_ms(self, arch: Arch) -> list[float]:
        """Per edge, the surrogate's ms of its op (not what the net runs: see ``sum_ms``)."""
        return super().layer_ms(arch)

    def sum_ms(self, arch: Arch) -> float:
        """Uncalibrated sum of the entries of the parts ``arch`` runs."""
        return self.fixed_ms + sum(self.part_ms[key] for key in self.space.run_parts(arch.choices_in(self.space)))

    def predict(self, arch: Arch) -> float:
        parts = self.space.run_parts(arch.choices_in(self.space))
        return float(apply_calibration(self.calibration, self.fixed_ms + sum(self.part_ms[k] for k in parts), len(parts)))

    def columns_ms(self, columns: list[int]) -> float:
        """``predict`` of the arch running candidate ``columns[e]`` on edge ``e``."""
        names = self.space.candidates
        return self.predict(Arch.of(self.space, tuple(names[int(c)] for c in columns)))
