"""The budget: parsing, the aim, refusal before training, the loss forms, derivation never over the limit."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency import LatencyModel
from hwnas.search.budget import BudgetController, make_target, parse_latency
from hwnas.search.derive import derive_under_budget
from hwnas.search.synthetic import synthetic_table, tiny_space


@pytest.mark.parametrize(
    "text, ms",
    [("80ms", 80.0), ("80 ms", 80.0), ("0.08s", 80.0), ("80000us", 80.0), ("80", 80.0), (" 1.5MS ", 1.5), ("2.5e-1", 0.25), ("750µs", 0.75)],
)
def test_parse_latency_units(text, ms):
    assert parse_latency(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["", "fast", "80 mss", "-3ms", "0ms", "80 m", "1,5ms", "ms", "80ms80"])
def test_parse_latency_rejects_nonsense(text):
    with pytest.raises(HwnasError, match="latency budget"):
        parse_latency(text)


def test_budget_under_fastest_is_refused_with_the_fastest_latency():
    with pytest.raises(HwnasError, match=r"fastest net .*\(0\.4076 ms\)"):
        make_target(0.4, fastest_ms=0.4076, slowest_ms=2.6, margin=None, table_p90=None)


def test_margin_defaults_to_table_p90_else_five_percent_and_aim_never_under_fastest():
    assert make_target(10, 1, 20, None, None).aim_ms == pytest.approx(9.5)
    validated = make_target(10, 1, 20, None, 0.08)
    assert validated.aim_ms == pytest.approx(9.2) and validated.margin_source.startswith("table")
    assert make_target(10, 1, 20, 0.2, 0.08).aim_ms == pytest.approx(8.0)
    tight = make_target(1.02, 1.0, 20, None, None)
    assert tight.aim_ms == pytest.approx(1.0) and tight.aim_clamped
    # 1.02 x 0.95 = 0.969 ms is under the fastest net; aiming at 1.0 ms keeps 1 - 1.0 / 1.02 = 2.0 % of margin
    assert tight.clamp_note() == ("budget x (1 - margin 5.0%) = 0.969 ms is under the fastest net (1 ms): the search aims at "
                                  "the fastest net, a margin of 2.0% only")
    assert validated.clamp_note() is None
    with pytest.raises(HwnasError, match="margin"):
        make_target(10, 1, 20, 1.5, None)


def test_lagrangian_multiplier_rises_over_and_falls_under():
    controller = BudgetController("lagrangian", aim_ms=10.0, rate=0.5)
    controller.update(12.0)
    assert controller.multiplier == pytest.approx(0.1)
    controller.update(12.0)
    assert controller.multiplier == pytest.approx(0.2)
    controller.update(6.0)
    assert controller.multiplier == pytest.approx(0.0)
    controller.update(6.0)
    assert controller.multiplier == pytest.approx(-0.2)  # under the aim, the term now pays for using the budget
    one_sided = BudgetController("lagrangian", aim_ms=10.0, rate=0.5, one_sided=True)
    one_sided.update(6.0)
    assert one_sided.multiplier == 0.0
    expected = torch.tensor(11.0, requires_grad=True)
    controller.multiplier = 2.0
    controller.loss(torch.tensor(1.0), expected).backward()
    assert expected.grad == pytest.approx(2.0 / 10.0)


def test_proxyless_loss_forms():
    ce, expected = torch.tensor(2.0), torch.tensor(100.0)
    assert float(BudgetController("add-linear", 80.0).loss(ce, expected)) == pytest.approx(2.0 + 0.1 * 20 / 80)
    assert float(BudgetController("mul-log", 80.0).loss(ce, expected)) == pytest.approx(
        0.2 * 2.0 * (math.log(100) / math.log(80)) ** 0.3
    )
    with pytest.raises(HwnasError, match="above 1 ms"):
        BudgetController("mul-log", 0.9)
    with pytest.raises(HwnasError, match="unknown latency loss"):
        BudgetController("quadratic", 10.0)


# -- derivation --------------------------------------------------------------------------------
class SliceModel:
    """A 3-layer slice with the LatencyModel interface derivation uses; brute force is possible here."""

    def __init__(self, rng: random.Random) -> None:
        space = tiny_space()
        self.space = _SliceSpace(space.candidates)
        self.mask = torch.tensor([[rng.random() < 0.7 or k == 0 for k in range(4)] for _ in range(3)])
        self.latency_ms = torch.tensor([[rng.uniform(0.1, 2.0) for _ in range(4)] for _ in range(3)], dtype=torch.float64)
        self.latency_ms[~self.mask] = 0
        self.fixed_ms, self.scale, self.offset = 0.3, rng.uniform(0.9, 1.2), rng.uniform(-0.05, 0.05)
        self.per_op_ms = rng.uniform(0.0, 0.3)  # charged by every column but 0, which plays the skip
        self.calibrated_ms = self.scale * self.latency_ms + self.per_op_ms * self.mask.double()
        self.calibrated_ms[:, 0] = self.scale * self.latency_ms[:, 0]

    def predict(self, arch: Arch) -> float:
        columns = self.space.candidates
        chosen = [columns.index(op) for op in arch.choices]
        total = self.fixed_ms + sum(float(self.latency_ms[i, k]) for i, k in enumerate(chosen))
        return self.scale * total + self.per_op_ms * sum(k != 0 for k in chosen) + self.offset

    def all_archs(self):
        columns = self.space.candidates
        legal = [[k for k in range(4) if self.mask[i, k]] for i in range(3)]
        for combo in itertools.product(*legal):
            yield combo, Arch(self.space.name, [columns[k] for k in combo])

    def fastest(self):
        return min(((a, self.predict(a)) for _, a in self.all_archs()), key=lambda pair: pair[1])


class _SliceSpace:
    name = "proxyless"

    def __init__(self, columns):
        self.candidates = columns[:4]
        self.args = tiny_space().args


def test_derive_never_over_the_limit_and_is_argmax_when_it_fits_brute_force():
    rng = random.Random(0)
    for trial in range(300):
        model = SliceModel(rng)
        alpha = torch.randn(3, 4, generator=torch.Generator().manual_seed(trial)) * rng.choice([0.1, 1, 3])
        probs = torch.softmax(alpha.masked_fill(~model.mask, float("-inf")), 1)
        log_p = torch.log(probs)
        _, fastest_ms = model.fastest()
        slowest_ms = max(model.predict(a) for _, a in model.all_archs())
        limit = rng.uniform(fastest_ms, slowest_ms)
        arch = derive_under_budget(probs, model, limit)
        assert model.predict(arch) <= limit + 1e-9
        columns = model.space.candidates
        chosen = [columns.index(op) for op in arch.choices]
        assert all(bool(model.mask[i, k]) for i, k in enumerate(chosen))
        feasible = [(sum(float(log_p[i, k]) for i, k in enumerate(combo)), combo) for combo, a in model.all_archs() if model.predict(a) <= limit]
        best_log_p, best = max(feasible)
        argmax = tuple(probs.argmax(1).tolist())
        if argmax == best:  # the argmax fits: nothing may be given up
            assert tuple(chosen) == argmax
        # no single swap improves it within the limit (the fill pass is complete)
        score = sum(float(log_p[i, k]) for i, k in enumerate(chosen))
        for layer in range(3):
            for k in range(4):
                if model.mask[layer, k] and float(log_p[layer, k]) > float(log_p[layer, chosen[layer]]) + 1e-9:
                    swapped = list(chosen)
                    swapped[layer] = k
                    assert model.predict(Arch("proxyless", [columns[j] for j in swapped])) > limit - 1e-9
        assert score <= best_log_p + 1e-9


def test_derive_on_a_full_space_never_exceeds_random_budgets():
    space = tiny_space()
    model = LatencyModel(synthetic_table(space), space)
    fastest, slowest = model.fastest()[1], model.slowest()[1]
    rng = random.Random(1)
    for trial in range(40):
        alpha = torch.randn(model.mask.shape, generator=torch.Generator().manual_seed(trial)) * 2
        probs = torch.softmax(alpha.masked_fill(~model.mask, float("-inf")), 1)
        limit = rng.uniform(fastest, slowest)
        arch = derive_under_budget(probs, model, limit)
        assert model.predict(arch) <= limit + 1e-9
        columns = space.candidates
        argmax = Arch(space.name, [columns[k] for k in probs.argmax(1).tolist()], space.args.to_dict())
        if model.predict(argmax) <= limit:
            assert arch == argmax
    with pytest.raises(HwnasError, match="fastest"):
        derive_under_budget(probs, model, fastest * 0.9)
