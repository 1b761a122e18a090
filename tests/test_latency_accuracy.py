"""Accuracy figures against hand computations and a brute-force Kendall tau-b."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.latency.accuracy import error_metrics, fit_linear, kendall_tau_b


def brute_force_tau_b(x, y):
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            ties_x += 1
            ties_y += 1
        elif dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx * dy > 0:
            concordant += 1
        else:
            discordant += 1
    pairs = len(x) * (len(x) - 1) // 2
    return (concordant - discordant) / math.sqrt((pairs - ties_x) * (pairs - ties_y))


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_b_matches_pair_enumeration_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=17).astype(float)  # few distinct values: many ties
    y = x + rng.integers(-3, 4, size=17)
    assert kendall_tau_b(x, y) == pytest.approx(brute_force_tau_b(list(x), list(y)), abs=1e-12)


def test_kendall_tau_b_extremes():
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_error_metrics_by_hand():
    measured = [1.0, 2.0, 4.0, 5.0]
    predicted = [1.1, 1.8, 4.0, 6.0]  # relative errors +10 %, -10 %, 0 %, +20 %
    figures = error_metrics(predicted, measured)
    assert figures["n"] == 4
    assert figures["mape"] == pytest.approx((0.1 + 0.1 + 0 + 0.2) / 4)
    assert figures["rmspe"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0 + 0.04) / 4))
    assert figures["within_5"] == pytest.approx(0.25)
    assert figures["within_10"] == pytest.approx(0.75)
    assert figures["mean_signed_error"] == pytest.approx((0.1 - 0.1 + 0 + 0.2) / 4)
    assert figures["kendall_tau"] == pytest.approx(1.0)
    assert figures["p90_relative_error"] == pytest.approx(np.percentile([0.1, 0.1, 0.0, 0.2], 90))


def test_error_metrics_refuse_bad_input():
    with pytest.raises(HwnasError):
        error_metrics([1.0], [1.0, 2.0])
    with pytest.raises(HwnasError):
        error_metrics([1.0], [0.0])


@pytest.mark.parametrize("robust", [True, False])
def test_fit_linear_recovers_a_line(robust):
    a, b = fit_linear([1.0, 2.0, 3.0, 5.0], [2.5, 4.5, 6.5, 10.5], robust=robust)
    assert (a, b) == (pytest.approx(2.0), pytest.approx(0.5))
    with pytest.raises(HwnasError):
        fit_linear([1.0, 1.0], [1.0, 2.0], robust=robust)


def test_robust_fit_ignores_a_contended_outlier():
    predicted = np.linspace(1.0, 2.0, 11)
    measured = 1.1 * predicted + 0.05
    measured[3] *= 1.5  # another process took the core during this arch
    a, b = fit_linear(predicted, measured)
    assert (a, b) == (pytest.approx(1.1), pytest.approx(0.05))
    a_lsq, _ = fit_linear(predicted, measured, robust=False)
    assert abs(a_lsq - 1.1) > 0.05


def _line(fit: dict) -> tuple:
    return fit["a"], fit["b"], fit["per_op_ms"], fit["fit"]


def test_calibration_never_has_a_negative_slope():
    from hwnas.latency.validate import calibration_fit

    assert _line(calibration_fit([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]))[:3] == (pytest.approx(2.0), pytest.approx(0.0), 0.0)
    a, b, _, method = _line(calibration_fit([1.0, 1.1, 1.2, 1.3], [1.3, 1.2, 1.1, 1.0]))  # noise reversed the order
    assert a > 0 and b == 0.0 and method.startswith("ratio") and "slope was not positive" in method
    assert a == pytest.approx(np.median([1.3 / 1.0, 1.2 / 1.1, 1.1 / 1.2, 1.0 / 1.3]))
    # measured = 2 * sum - 1 fits the sample, but would predict -0.2 ms for the fastest net, summing to 0.4 ms
    a, b, _, method = _line(calibration_fit([1.0, 1.5, 2.0, 2.5], [1.0, 2.0, 3.0, 4.0], fastest=(0.4, 0)))
    assert (
        b == 0.0 and "-0.2 ms for the fastest net" in method and a == pytest.approx(np.median([1.0, 2.0 / 1.5, 1.5, 4.0 / 2.5]))
    )
    # the same line is kept where the space's fastest net sums to 0.6 ms (predicted 0.2 ms > 0)
    assert _line(calibration_fit([1.0, 1.5, 2.0, 2.5], [1.0, 2.0, 3.0, 4.0], fastest=(0.6, 0))) == (
        pytest.approx(2.0),
        pytest.approx(-1.0),
        0.0,
        "theil-sen",
    )
    # ... unless the fastest net itself was measured and contradicts it: the line predicts 0.2 ms
    # for it (measured 0.9), mean error 15.6 % against the ratio's 13.75 % (ratio 1.5), by hand
    a, b, _, method = _line(calibration_fit([1.0, 1.5, 2.0, 2.5, 0.6], [1.0, 2.0, 3.0, 4.0, 0.9], fastest=(0.6, 0)))
    assert (a, b) == (pytest.approx(1.5), 0.0) and "13.8%" in method and "15.6%" in method


def test_per_op_line_recovers_what_each_op_costs_inside_a_net():
    from hwnas.latency.accuracy import fit_per_op_line

    rng = np.random.default_rng(0)
    sums, ops = rng.uniform(0.2, 1.1, 17), rng.integers(6, 22, 17)
    measured = 1.1 * sums + 0.006 * ops + 0.04
    assert fit_per_op_line(sums, ops, measured) == (pytest.approx(1.1), pytest.approx(0.006), pytest.approx(0.04))
    contended = measured.copy()
    contended[4] *= 1.4  # another process took the core during this net: the refit leaves it out
    assert fit_per_op_line(sums, ops, contended) == (pytest.approx(1.1), pytest.approx(0.006), pytest.approx(0.04))
    with pytest.raises(HwnasError, match="vary independently"):
        fit_per_op_line(sums[:5], 2 * sums[:5], measured[:5])  # op counts that move with the sums
    with pytest.raises(HwnasError, match=r"one sum, op count and measurement per net \(got 17, 16, 17\)"):
        fit_per_op_line(sums, ops[:16], measured)
    with pytest.raises(HwnasError, match="> 0"):
        fit_per_op_line(sums, ops, -measured)


def test_calibration_prefers_the_per_op_line_where_small_nets_run_few_ops():
    """The case of this project's VM: a line through the sum alone over-predicts the fastest net."""
    from hwnas.latency.validate import calibration_fit

    sums = [0.45, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0, 0.18, 1.07]  # random nets, then the fastest and the slowest
    ops = [15, 17, 18, 18, 19, 20, 20, 6, 21]
    measured = [1.1 * s + 0.006 * o + 0.04 for s, o in zip(sums, ops)]
    fit = calibration_fit(sums, measured, (0.18, 6), ops)
    assert fit["fit"] == "per-op line" and fit["per_op_ms"] == pytest.approx(0.006)
    assert 1.1 * 0.18 + 0.006 * 6 + 0.04 == pytest.approx(fit["a"] * 0.18 + fit["per_op_ms"] * 6 + fit["b"])
    sum_only = calibration_fit(sums, measured, (0.18, 6))  # without op counts, the best line misses the fastest net
    assert sum_only["fit"] == "theil-sen" and sum_only["a"] * 0.18 + sum_only["b"] > 1.05 * (1.1 * 0.18 + 0.006 * 6 + 0.04)
    # an op cannot cost less than nothing: measured falling with the op count refuses the per-op line
    falling = [1.1 * s - 0.01 * o + 0.3 for s, o in zip(sums, ops)]
    refused = calibration_fit(sums, falling, (0.18, 6), ops)
    assert refused["per_op_ms"] == 0.0 and "the per-op line charged each op -0.01 ms" in refused["fit"]
    too_few = calibration_fit(sums[:3], measured[:3], (0.18, 6), ops[:3])
    assert too_few["per_op_ms"] == 0.0 and "no per-op line: a per-op calibration needs at least four nets" in too_few["fit"]


def test_a_noisy_validation_says_so():
    from hwnas.latency.validate import NOISY_FLOOR, noise_warnings

    assert noise_warnings({"noise_floor": {"mape": 0.184}}) == [
        "the machine disagreed with itself by 18.4% (noise floor, even vs odd rounds): these figures and the calibration "
        "fitted now carry that noise; validate again in a quieter hour or with more --rounds"
    ]
    assert noise_warnings({"noise_floor": {"mape": NOISY_FLOOR}}) == []
    assert noise_warnings({}) == []  # one round: no noise floor to judge by
