"""A latency table bound to a search space: ``T[l, k]`` in ms, expected and predicted latency.

The latency of a chain net is modelled as the sum of its parts (stem, one op per layer, head),
then mapped through the table's calibration ``a * sum + c * ops + b`` fitted on whole-net
measurements (``hwnas tables validate``), where ``ops`` counts the layers that run an op (not a
skip). ``c`` is what an op costs inside a net beyond its time alone. Without it the intercept
of the line absorbs the per-op cost of the 15-21 ops random archs run and charges it to every
net, so a line through ``sum`` alone over-predicts the space's fastest net (6 ops) by a
fifth or more (measured: docs/DESIGN.md, section 8).

Every part was timed as its own call, and each call pays the runtime's fixed cost (with ONNX
Runtime a sizeable share of a small net's summed parts: section 8), while the whole net pays it once. Where the table holds the ``overhead`` entry
(an identity model timed the same way), it is taken off every part but one, so the sum counts
it once and a net with more skipped layers is not favoured by the count of calls it saves. Because the sum is separable per layer, the fastest and slowest
nets of the space are exact: the per-layer minimum and maximum. The calibration keeps it
separable: each op's calibrated cost is ``a * ms + c`` (``LatencyModel.calibrated_ms``).
"""

from __future__ import annotations

import math
import shlex

import torch

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency.precision import precision_of_dtype
from hwnas.latency.table import LatencyTable, recalibrate
from hwnas.latency.whole_net import with_whole_net
from hwnas.spaces import SKIP_OPS, ChainSpace, Space, user_space_file


def count_ops(arch: Arch) -> int:
    """The searchable parts ``arch`` runs (a chain space: layers that run an op, not a skip): the ``ops`` of the calibration."""
    return arch.build_space().count_ops(arch.choices)


def apply_calibration(calibration: dict, sum_ms: float, ops: int) -> float:
    """``a * sum + c * ops + b``: the predicted latency of a net whose entries sum to ``sum_ms`` over ``ops`` ops."""
    return calibration["a"] * sum_ms + calibration.get("per_op_ms", 0.0) * ops + calibration["b"]


def calibration_formula(calibration: dict) -> str:
    """A calibration in words: ``measured ~ 1.1030 * sum + 0.0058 * ops + 0.0364 ms``."""
    per_op = float(calibration.get("per_op_ms", 0.0))
    ops = f" + {per_op:.4f} * ops" if per_op else ""
    return f"measured ~ {calibration['a']:.4f} * sum{ops} + {calibration['b']:.4f} ms"


def calibration_record(table: LatencyTable) -> dict | None:
    """What a run records of the calibration its table gave it: the line, how and when it was fitted, its error.

    ``None`` for a table without one (a search on raw sums, ``--uncalibrated``).
    """
    fit = table.calibration
    if fit is None:
        return None
    validation = table.validation or {}
    return {
        "formula": calibration_formula(fit),
        "fit": fit.get("fit"),
        "fitted": fit.get("fitted"),
        "by": fit.get("by", "hwnas tables validate"),
        "nets": validation.get("n"),
        "held_out": validation.get("held_out", "half"),
        "p90_relative_error": table.p90_relative_error,
    }


def stem_key(space: Space) -> str:
    """Table key of the fixed stem (input shape included)."""
    c, h, w = space.input_shape
    return f"stem:{space.name}:c{c}-{space.stem_out_channels}:h{h}w{w}"


def head_key(space: Space) -> str:
    """Table key of the fixed head (its input shape and the number of classes)."""
    c, h, w = space.head_in_shape
    return f"head:{space.name}:c{c}-{space.args.num_classes}:h{h}w{w}"


def overhead_key(space: Space) -> str:
    """Table key of the per-call cost of the runtime (an identity model at the net's input shape)."""
    c, h, w = space.input_shape
    return f"overhead:identity:c{c}:h{h}w{w}"


def required_keys(space: Space) -> list[str]:
    """Every key a table needs to cover ``space``: every part its nets can run, the stem and the head."""
    return [part.key for part in space.parts()] + [stem_key(space), head_key(space)]


def profile_command(space: Space, meta: dict) -> str:
    """The ``hwnas profile`` call that measures ``space`` on the target ``meta`` describes."""
    source = user_space_file(space)
    parts = ["hwnas", "profile", "--space", source.source if source else space.name]
    defaults = source.defaults if source else {"resolution": 224, "num_classes": 1000, "in_channels": 3, "width_mult": 1.0}
    for name, value in space.args.to_dict().items():
        if defaults.get(name) != value:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    for name in ("device", "runtime", "threads", "batch_size"):
        if meta.get(name) is not None:
            parts += [f"--{name.replace('_', '-')}", str(meta[name])]
    if meta.get("dtype") not in (None, "float32"):
        parts += ["--precision", precision_of_dtype(meta["dtype"])]
    if meta.get("path"):
        parts += ["-o", str(meta["path"])]
    return shlex.join(parts)


def check_covers(table: LatencyTable, space: Space) -> None:
    """An error naming the missing entries and the ``hwnas profile`` call that fills them, unless ``table`` covers ``space``."""
    missing = table.missing(required_keys(space))
    if missing:
        meta = dict(table.meta, path=table.path)
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise HwnasError(
            f"latency table {table.path or ''} lacks {len(missing)} entr{'y' if len(missing) == 1 else 'ies'} "
            f"for space {space.name} ({shown}); fill them with: {profile_command(space, meta)}"
        )


def latency_model(table: LatencyTable, space: Space):
    """The latency model of ``space`` under ``table``: ``LatencyModel`` for a chain space, ``DagLatencyModel`` for a DAG
    space, ``CellLatencyModel`` for ``nb201``; its ``predict`` goes through the table's whole-net model where it has one
    (``hwnas.latency.whole_net``)."""
    from hwnas.latency.cell_model import CellLatencyModel
    from hwnas.latency.dag_model import DagLatencyModel
    from hwnas.spaces import DagSpace
    from hwnas.spaces.nb201 import Nb201Space

    if isinstance(space, DagSpace):
        model = DagLatencyModel(table, space)
    elif isinstance(space, Nb201Space):
        model = CellLatencyModel(table, space)
    else:
        model = LatencyModel(table, space)
    check_positive(model)
    return with_whole_net(model, table.whole_net) if table.whole_net else model


def check_positive(model) -> None:
    """Refuse a table whose calibration predicts a net of the space at 0 ms or less.

    With a positive slope and a per-op cost >= 0 (``LatencyTable`` checks both when it reads the
    file), the lowest prediction of the space is its fastest net's: if that is positive, every
    prediction the table can make is.
    """
    fastest_ms = model.fastest()[1]
    if not math.isfinite(fastest_ms) or fastest_ms <= 0:
        table = model.table
        raise HwnasError(
            f"latency table {table.path or ''}: its calibration ({calibration_formula(table.calibration or {'a': 1, 'b': 0})}) "
            f"predicts the fastest net of space {model.space.name} at {fastest_ms:.4g} ms, and a net takes more than 0 ms: "
            f"the intercept 'b' is too low; {recalibrate(table.path)}"
        )


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
        columns = space.candidates
        overhead = overhead_key(space)
        self.call_overhead_ms = table.ms(overhead) if overhead in table.entries else 0.0
        self.latency_ms = torch.zeros(self.mask.shape, dtype=torch.float64)
        runs_op = torch.zeros(self.mask.shape, dtype=torch.float64)
        for layer in space.layers:
            for op in layer.candidates:
                if op not in SKIP_OPS:
                    self.latency_ms[layer.index, columns.index(op)] = self._part_ms(layer.op_spec(op).key)
                    runs_op[layer.index, columns.index(op)] = 1.0
        self.fixed_ms = table.ms(stem_key(space)) + self._part_ms(head_key(space))
        self.calibration = dict(table.calibration or {"a": 1.0, "b": 0.0})  # a copy: calibrated_ms is computed once
        scale, per_op_ms = float(self.calibration["a"]), float(self.calibration.get("per_op_ms", 0.0))
        self.calibrated_ms = scale * self.latency_ms + per_op_ms * runs_op
        self.calibrated_fixed_ms = scale * self.fixed_ms + float(self.calibration["b"])

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
