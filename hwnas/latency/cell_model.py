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
from hwnas.errors import HwnasError
from hwnas.latency.model import LatencyModel, apply_calibration, check_covers, head_key, overhead_key, profile_command, stem_key
from hwnas.latency.table import LatencyTable
from hwnas.spaces.nb201 import CELLS_PER_STAGE, FREE_OPS, Nb201Space


class CellLatencyModel(LatencyModel):
    """``LatencyModel`` for ``nb201``: per-edge surrogate ``latency_ms[e, k]``, exact ``predict``."""

    def __init__(self, table: LatencyTable, space: Nb201Space) -> None:  # noqa: D107 (the parent's fields, filled per edge)
        self.table, self.space = table, space
        if table.meta.get("space") not in (None, space.name):
            raise HwnasError(
                f"latency table {table.path or ''} is a table of space {table.meta['space']}, not {space.name}; profile "
                f"{space.name} into a table of its own with: {profile_command(space, table.meta)}"
            )
        check_covers(table, space)
        self.mask = space.candidate_mask()
        columns = space.candidates
        overhead = overhead_key(space)
        self.call_overhead_ms = table.ms(overhead) if overhead in table.entries else 0.0
        self.part_ms = {part.key: self._part_ms(part.key) / part.repeats for part in space.parts()}
        self.latency_ms = torch.zeros(self.mask.shape, dtype=torch.float64)
        runs_op = torch.zeros(self.mask.shape, dtype=torch.float64)
        for layer in space.layers:
            for op in layer.candidates:
                if op not in FREE_OPS:
                    keys = [space.op_key(op, c, size) for c, size in space.stages()]
                    self.latency_ms[layer.index, columns.index(op)] = CELLS_PER_STAGE * sum(self.part_ms[k] for k in keys)
                    runs_op[layer.index, columns.index(op)] = CELLS_PER_STAGE * len(keys)
        self.fixed_ms = table.ms(stem_key(space)) + self._part_ms(head_key(space))
        self.fixed_ms += sum(self.part_ms[key] for key in space.fixed_part_keys())
        self.calibration = dict(table.calibration or {"a": 1.0, "b": 0.0})
        scale, per_op_ms = float(self.calibration["a"]), float(self.calibration.get("per_op_ms", 0.0))
        self.calibrated_ms = scale * self.latency_ms + per_op_ms * runs_op
        self.calibrated_fixed_ms = scale * self.fixed_ms + float(self.calibration["b"])

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
