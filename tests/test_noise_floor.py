"""The noise floor from nets timed twice: the exact bound by hand, the fitted noise against a simulation."""

import itertools

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.latency.noise_floor import bound_within, fit_noise, floor, perfect_mape, perfect_share
from hwnas.spaces.nb201 import NB201_OPS, all_live, canonical_choices


def test_the_bound_counts_a_pair_twice_only_when_one_value_is_within_10_percent_of_both():
    # ratios 1.2 (0.9 * 1.2 = 1.08 <= 1.1: both), 1.3 (one), 1.0 (both): 5 of 6
    assert bound_within(np.array([1.0, 1.0, 2.0]), np.array([1.2, 1.3, 2.0])) == pytest.approx(5 / 6)


@pytest.mark.parametrize(("p", "s1", "s2"), [(0.3, 0.005, 0.15), (0.0, 0.08, 0.08)])
def test_a_perfect_models_share_matches_a_simulation_of_the_device(p, s1, s2):
    rng = np.random.default_rng(0)
    n = 4000
    true = np.exp(rng.normal(1.0, 0.5, n))

    def timed():
        return true * np.exp(np.where(rng.random(n) < p, rng.normal(0, s2, n), rng.normal(0, s1, n)))

    a, b = timed(), timed()
    noise = fit_noise(a, b)
    simulated = np.abs(true - a) / a  # the true latency as the prediction of the first timing
    assert perfect_share(noise, 0.10) == pytest.approx(np.mean(simulated <= 0.10), abs=0.03)
    assert perfect_share(noise, 0.05) == pytest.approx(np.mean(simulated <= 0.05), abs=0.03)
    assert perfect_mape(noise) == pytest.approx(np.mean(simulated), rel=0.1)
    assert floor(a, b)["bound_within_10"] >= perfect_share(noise, 0.10) - 0.03


def test_bad_pairs_are_refused():
    with pytest.raises(HwnasError, match="positive"):
        fit_noise(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    with pytest.raises(HwnasError, match="equally long"):
        bound_within(np.array([1.0, 2.0]), np.array([1.0]))


def test_nb201s_one_symmetry_pairs_1500_cells():
    cells = list(itertools.product(NB201_OPS, repeat=6))
    classes = {canonical_choices(c) for c in cells}
    # with edge 1->2 'none' (5^5 cells) nodes 1 and 2 swap; 5^3 of those are their own mirror
    assert len(classes) == 5**6 - (5**5 - 5**3) // 2
    mirror = ("nor_conv_3x3", "avg_pool_3x3", "none", "skip_connect", "none", "nor_conv_1x1")
    assert canonical_choices(mirror) == canonical_choices(
        ("avg_pool_3x3", "nor_conv_3x3", "none", "skip_connect", "nor_conv_1x1", "none")
    )
    # edge 0->1 feeds nothing in ``mirror`` (node 1 has no edge out that is not 'none')
    assert not all_live(mirror) and all_live(
        ("nor_conv_3x3", "avg_pool_3x3", "none", "skip_connect", "nor_conv_1x1", "nor_conv_1x1")
    )


def test_timings_without_noise_leave_a_perfect_model_every_net():
    a = np.array([1.0, 2.0, 3.0])
    assert perfect_share(fit_noise(a, a.copy()), 0.05) == 1.0 and perfect_mape(fit_noise(a, a.copy())) == 0.0
