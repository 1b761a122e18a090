"""How well predictions match measurements: relative errors, shares within a band, Kendall's tau-b, linear fits.

All relative figures are fractions (0.05 is 5 %), relative to the *measured* value; a positive
signed error means the prediction was too high. Kendall's tau-b is computed here (numpy,
O(n^2) pairs: n is tens of archs) so hwnas does not depend on scipy; so is the Theil-Sen fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwnas.errors import HwnasError


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((pairs - ties in x) * (pairs - ties in y)).

    NaN when one side is constant (no order to agree with).
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise HwnasError(f"kendall_tau_b needs two equally long 1-d sequences, got {a.shape} and {b.shape}")
    upper = np.triu_indices(len(a), k=1)
    sign_a = np.sign(a[:, None] - a[None, :])[upper]
    sign_b = np.sign(b[:, None] - b[None, :])[upper]
    untied_a, untied_b = np.count_nonzero(sign_a), np.count_nonzero(sign_b)
    if untied_a == 0 or untied_b == 0:
        return float("nan")
    return float(np.sum(sign_a * sign_b) / np.sqrt(float(untied_a) * float(untied_b)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's over the ranks, tied values at their mean rank."""
    a, b = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise HwnasError(f"spearman needs two equally long 1-d sequences of 2 or more, got {a.shape} and {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / norm) if norm else float("nan")


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def error_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """``n, mape, rmspe, within_5, within_10, kendall_tau, mean_signed_error, p90_relative_error``."""
    pred, meas = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if pred.shape != meas.shape or pred.ndim != 1 or len(pred) == 0:
        raise HwnasError(f"need equally many predictions and measurements (got {pred.shape} and {meas.shape})")
    if np.any(meas <= 0):
        raise HwnasError("measured latencies must be > 0")
    relative = (pred - meas) / meas
    size = np.abs(relative)
    edge = 1e-9  # 1.1 vs 1.0 is within 10 %, though (1.1 - 1.0) / 1.0 is 0.10000000000000009 in floats
    return {
        "n": int(len(pred)),
        "mape": float(size.mean()),
        "rmspe": float(np.sqrt(np.mean(relative**2))),
        "within_5": float(np.mean(size <= 0.05 + edge)),
        "within_10": float(np.mean(size <= 0.10 + edge)),
        "kendall_tau": kendall_tau_b(pred, meas),
        "mean_signed_error": float(relative.mean()),
        "p90_relative_error": float(np.percentile(size, 90)),
    }


def fit_linear(predicted: Sequence[float], measured: Sequence[float], robust: bool = True) -> tuple[float, float]:
    """``measured ~ a * predicted + b``; needs two distinct predictions.

    ``robust`` (default): Theil-Sen, the median of the slopes of all pairs and the median
    intercept. On a shared machine a few whole-net measurements land 30-50 % high when another
    process takes the core; least squares (``robust=False``) tilts its line towards them, the
    medians ignore them.
    """
    pred, meas = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if len(pred) < 2 or np.ptp(pred) == 0:
        raise HwnasError("a calibration needs at least two archs with different predictions")
    if not robust:
        a, b = np.polyfit(pred, meas, 1)
        return float(a), float(b)
    i, j = np.triu_indices(len(pred), k=1)
    distinct = pred[i] != pred[j]
    a = float(np.median((meas[j] - meas[i])[distinct] / (pred[j] - pred[i])[distinct]))
    return a, float(np.median(meas - a * pred))


def fit_per_op_line(sums: Sequence[float], ops: Sequence[int], measured: Sequence[float]) -> tuple[float, float, float]:
    """``(a, c, b)`` of ``measured ~ a * sum + c * ops + b``: least squares on relative residuals, refitted once.

    Relative, like every figure here: a 0.3 ms net 0.03 ms off is as wrong as a 3 ms net 0.3 ms
    off, so the fast end, where tight budgets select, weighs as much as the slow end. A contended
    measurement (30-50 % high) would tilt least squares, so the fit is redone without the points
    whose residual exceeds three times the median one, and at least 2 %.
    """
    if not len(sums) == len(ops) == len(measured):
        raise HwnasError(
            f"a per-op calibration needs one sum, op count and measurement per net (got {len(sums)}, {len(ops)}, {len(measured)})"
        )
    x = np.column_stack([np.asarray(sums, dtype=np.float64), np.asarray(ops, dtype=np.float64), np.ones(len(sums))])
    y = np.asarray(measured, dtype=np.float64)
    if not (y > 0).all():
        raise HwnasError("a per-op calibration needs measured latencies > 0")
    if len(y) < 4 or np.linalg.matrix_rank(x) < 3:
        raise HwnasError("a per-op calibration needs at least four nets whose sums and op counts vary independently")

    def solve(rows: np.ndarray) -> np.ndarray:
        weights = 1.0 / y[rows]
        return np.linalg.lstsq(x[rows] * weights[:, None], y[rows] * weights, rcond=None)[0]

    coefficients = solve(np.ones(len(y), dtype=bool))
    residuals = np.abs(x @ coefficients - y) / y
    kept = residuals <= max(3 * float(np.median(residuals)), 0.02)
    if kept.sum() >= 4 and np.linalg.matrix_rank(x[kept]) == 3:
        coefficients = solve(kept)
    a, c, b = (float(v) for v in coefficients)
    return a, c, b
