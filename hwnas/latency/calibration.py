"""The calibration of a latency table: ``measured ~ a * sum + c * ops + b`` over a net's parts.

``hwnas tables validate`` fits it on whole-net measurements; both latency models
(``hwnas.latency.model``, ``hwnas.latency.dag_model``) apply it.
"""

from __future__ import annotations

from hwnas.arch import Arch
from hwnas.latency.table import LatencyTable


def count_ops(arch: Arch) -> int:
    """The searchable parts ``arch`` runs (a chain space: layers that run an op, not a skip): the ``ops`` of the calibration."""
    return arch.build_space().count_ops(arch.choices)


def apply_calibration(calibration: dict, sum_ms: float, ops: int) -> float:
    """``a * sum + c * ops + b``: the predicted latency of a net whose entries sum to ``sum_ms`` over ``ops`` ops."""
    return calibration["a"] * sum_ms + calibration.get("per_op_ms", 0.0) * ops + calibration["b"]


def calibration_formula(calibration: dict) -> str:
    """A calibration in words: ``measured ~ 1.1030 * sum + 0.0058 * ops - 0.0364 ms``."""

    def term(value: float) -> str:
        return f"{'-' if value < 0 else '+'} {abs(value):.4f}"

    per_op = float(calibration.get("per_op_ms", 0.0))
    ops = f" {term(per_op)} * ops" if per_op else ""
    return f"measured ~ {calibration['a']:.4f} * sum{ops} {term(float(calibration['b']))} ms"


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
