"""A latency table bound to a DAG-block space (``dsonas``): predicted latency as a sum over the parts a net runs.

A DAG net runs its stem, its reductions and its head (the fixed parts), and in each block
every live op (an entry per op at the block's shape), the 1x1 projection at the width of
its concatenation (an entry per width, 1 .. M*N) and its adds: one per distinct partial sum
of op inputs (``BlockGraph.sums``), not one per edge, since ops whose inputs begin alike
share their sums; the add entry times a chain of adds (``AddChain``), taken per add. The
prediction is, as for the chain spaces, ``a * sum + c * ops + b`` (``hwnas.latency.calibration``),
``ops`` the searchable parts the net runs (live ops, projections and adds), and the
runtime's per-call cost is counted once per net. Because the calibration is linear and the
sum separable over blocks, each block's calibrated cost adds up to the prediction
(``block_ms``): what the repair saves per edge it removes. An edge's own share
(``hwnas.search.dsonas.edge_costs``, DSO-NAS's adaptive weights) is approximate: whether
removing it saves an add depends on the other edges.
The fastest net is the empty one (every block the identity); the full one is not the slowest
(``slowest``).
"""

from __future__ import annotations

from collections.abc import Sequence

from hwnas.arch import Arch
from hwnas.latency.calibration import apply_calibration
from hwnas.latency.keys import check_covers, head_key, overhead_key, stem_key
from hwnas.latency.table import LatencyTable
from hwnas.spaces.dag import DagSpace


class DagLatencyModel:
    """Predicted (calibrated) latency of the archs of a DAG space, part by part."""

    def __init__(self, table: LatencyTable, space: DagSpace) -> None:
        self.table, self.space = table, space
        check_covers(table, space)
        overhead = overhead_key(space)
        self.call_overhead_ms = table.ms(overhead) if overhead in table.entries else 0.0
        self.part_ms = {part.key: self._part_ms(part.key, part.repeats) for part in space.parts()}
        self.fixed_ms = (
            table.ms(stem_key(space))
            + self._part_ms(head_key(space))
            + sum(self._part_ms(key) for key in space.fixed_part_keys())
        )
        self.calibration = dict(table.calibration or {"a": 1.0, "b": 0.0})
        scale, per_op = float(self.calibration["a"]), float(self.calibration.get("per_op_ms", 0.0))
        #: what each part adds to the prediction
        self.calibrated_part_ms = {key: scale * ms + per_op for key, ms in self.part_ms.items()}
        self.calibrated_fixed_ms = scale * self.fixed_ms + float(self.calibration["b"])
        self._slowest: tuple[Arch, float] | None = None

    def _part_ms(self, key: str, repeats: int = 1) -> float:
        """A part's entry without the per-call cost, per copy where the entry times a chain (``Part.repeats``)."""
        return max(self.table.ms(key) - self.call_overhead_ms, 0.0) / repeats

    # -- per block -----------------------------------------------------------------------
    def block_ms(self, index: int, kept: Sequence[bool]) -> float:
        """What block ``index`` with edges ``kept`` adds to the prediction (calibrated)."""
        return sum(self.calibrated_part_ms[key] for key in self.space.block_parts(index, kept))

    def masks_ms(self, masks: Sequence[Sequence[bool]]) -> float:
        """The predicted ms of the net keeping ``masks`` (one per block): the fixed parts plus every block's."""
        return self.calibrated_fixed_ms + sum(self.block_ms(index, kept) for index, kept in enumerate(masks))

    def layer_ms(self, arch: Arch) -> list[float]:
        """Uncalibrated ms of each block of ``arch`` (the sum of its parts' entries)."""
        return [
            sum(self.part_ms[key] for key in self.space.block_parts(index, kept))
            for index, kept in enumerate(self.space.masks(arch.choices_in(self.space)))
        ]

    # -- whole nets ----------------------------------------------------------------------
    def sum_ms(self, arch: Arch) -> float:
        """Uncalibrated sum of the table entries of ``arch``."""
        return self._sum(self.space.run_parts(arch.choices_in(self.space)))

    def predict(self, arch: Arch) -> float:
        """Predicted (calibrated) latency of ``arch`` in ms: the calibration over its parts' sum and count."""
        parts = self.space.run_parts(arch.choices_in(self.space))
        return float(apply_calibration(self.calibration, self._sum(parts), len(parts)))

    def _sum(self, parts: list[str]) -> float:
        return self.fixed_ms + sum(self.part_ms[key] for key in parts)

    def fastest(self) -> tuple[Arch, float]:
        arch = Arch.of(self.space, self.space.empty_choices())
        return arch, self.predict(arch)

    def full(self) -> tuple[Arch, float]:
        """Every edge kept: the supernet's net, where DSO-NAS's pruning starts."""
        arch = Arch.of(self.space, self.space.full_choices())
        return arch, self.predict(arch)

    def slowest(self) -> tuple[Arch, float]:
        """The slowest net found by a greedy ascent from the full net, block by block (blocks add up independently).

        The full net need not be the slowest: its ops share their partial sums, and a sparser
        block can run more adds than it saves in ops and projection width. Each block flips
        the edge that slows it most until no single flip slows it: a local maximum, so the
        space may hold a slower net, but no net one edge away from it is slower.
        """
        if self._slowest is None:
            by_shape: dict[tuple[int, int], list[bool]] = {}  # blocks of one shape have one cost function
            for index, layer in enumerate(self.space.layers):
                if (layer.c_in, layer.h) not in by_shape:
                    by_shape[layer.c_in, layer.h] = self._ascend(index)
            masks = [by_shape[layer.c_in, layer.h] for layer in self.space.layers]
            arch = Arch.of(self.space, self.space.choices_of(masks))
            self._slowest = (arch, self.predict(arch))
        return self._slowest

    def _ascend(self, index: int) -> list[bool]:
        kept = [True] * len(self.space.graph.edges)
        ms = self.block_ms(index, kept)
        while True:
            best_ms, best = max(((self.block_ms(index, flip), flip) for flip in _flips(kept)), key=lambda trial: trial[0])
            if best_ms <= ms + 1e-12:
                return kept
            ms, kept = best_ms, best


def _flips(kept: list[bool]) -> list[list[bool]]:
    """``kept`` with one edge flipped, for every edge."""
    return [kept[:e] + [not kept[e]] + kept[e + 1 :] for e in range(len(kept))]
