"""The update rules of the differentiable methods, each checked against a computation made independently here."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hwnas.arch import Arch
from hwnas.latency import LatencyModel
from hwnas.search import STRATEGIES
from hwnas.search.budget import BudgetController
from hwnas.search.dsnas import layers_to_fix
from hwnas.search.proxyless import binary_gate_alpha_grad, shift_keeping_others
from hwnas.search.snas import gumbel_softmax, linear_temperature
from hwnas.search.supernet import ArchParameters, MixedOp, PathChoice, Supernet
from hwnas.search.synthetic import synthetic_table
from hwnas.spaces import SPACES, ChainSpace, get_space
from hwnas.spaces.nb201 import Nb201Space

from helpers import tiny_space

#: the methods whose loss carries E[lat] to alpha: every registered non-one-shot method of chain spaces
GRADIENT_METHODS = [name for name, cls in STRATEGIES.items() if not cls.one_shot and cls.supports(tiny_space())]
CHAIN_SPACES = [name for name, cls in SPACES.items() if issubclass(cls, ChainSpace)]


def distinct_candidates(supernet: Supernet) -> Supernet:
    """Re-initialise every candidate on its own: the supernet starts them as one function (``nest_into``),
    which makes every arch gradient zero until training has parted them."""
    for layer in supernet.layers:
        for op in layer.ops.values():
            for module in op.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return supernet


def make_strategy(method: str, **options):
    torch.manual_seed(0)
    space = tiny_space()
    latency = LatencyModel(synthetic_table(space), space)
    supernet, arch = distinct_candidates(Supernet(space)), ArchParameters(space)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.05, momentum=0.9)
    budget = BudgetController("lagrangian", aim_ms=latency.fastest()[1] * 1.5)  # multiplier 0: no latency gradient
    if "warmup_epochs" in STRATEGIES[method].knobs:
        options.setdefault("warmup_epochs", 0)  # arch steps from the first step
    strategy = STRATEGIES[method](supernet, arch, latency, budget, optimizer, options, torch.Generator().manual_seed(1))
    strategy.init_alpha()
    return strategy


def batch(n: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)


# -- supernet -----------------------------------------------------------------------------------
def test_supernet_single_paths_compute_the_child_with_inherited_weights():
    space = tiny_space()
    supernet = Supernet(space).eval()
    arch = Arch.random(space, seed=3)
    child = supernet.extract_child(arch).eval()
    images, _ = batch()
    assert torch.allclose(supernet(images, supernet.arch_choices(arch)), child(images), atol=1e-6)


def test_mixed_op_weighted_one_hot_equals_single_path_and_skip_is_shortcut():
    space = tiny_space()
    layer = next(layer for layer in space.layers if layer.shortcut)
    mixed = MixedOp(space, layer).eval()
    columns = [space.candidates.index(op) for op in layer.candidates]
    x = torch.randn(2, layer.c_in, layer.h, layer.w)
    one_hot = torch.zeros(len(columns))
    one_hot[1] = 1.0
    assert torch.allclose(mixed(x, PathChoice.weighted(tuple(columns), one_hot)), mixed(x, PathChoice.single(columns[1])))
    zero = space.candidates.index("zero")
    assert torch.equal(mixed(x, PathChoice.single(zero)), x)
    with pytest.raises(Exception, match="multipliers"):
        mixed(x, PathChoice(tuple(columns), torch.ones(2)))


# -- ProxylessNAS -------------------------------------------------------------------------------
def test_binary_gate_formula_by_hand_on_a_tiny_layer():
    torch.manual_seed(0)
    space = tiny_space()
    layer = space.layers[1]
    mixed = MixedOp(space, layer)
    pair = (space.candidates.index("mb3_k3"), space.candidates.index("mb6_k5"))
    x = torch.randn(2, layer.c_in, layer.h, layer.w)
    alpha_pair = torch.tensor([0.3, -0.2], requires_grad=True)
    p = torch.softmax(alpha_pair.detach(), 0)
    gates = torch.tensor([0.0, 1.0], requires_grad=True)
    target = torch.randn(2, layer.c_out, *layer.out_hw)
    out = mixed(x, PathChoice.gated(pair, gates, active=pair[1]))
    loss = ((out - target) ** 2).sum()
    (gate_grads,) = torch.autograd.grad(loss, gates)
    # by hand: dL/dg_j = <dL/dout, o_j>, with dL/dout = 2 (out - target)
    with torch.no_grad():
        outputs = [mixed.ops[space.candidates[c]](x) for c in pair]
        upstream = 2 * (out.detach() - target)
        by_hand_gates = torch.stack([(upstream * o).sum() for o in outputs])
    assert torch.allclose(gate_grads, by_hand_gates, rtol=1e-4, atol=1e-5)
    expected = torch.zeros(2)
    for i in range(2):
        for j in range(2):
            expected[i] += by_hand_gates[j] * p[j] * ((1.0 if i == j else 0.0) - p[i])
    assert torch.allclose(binary_gate_alpha_grad(gate_grads, p), expected, rtol=1e-4, atol=1e-5)
    # and it is d/dalpha of sum_j dL/dg_j softmax(alpha)_j
    (through_softmax,) = torch.autograd.grad((gate_grads * torch.softmax(alpha_pair, 0)).sum(), alpha_pair)
    assert torch.allclose(binary_gate_alpha_grad(gate_grads, p), through_softmax, atol=1e-6)


def test_proxyless_arch_step_sets_the_formula_and_keeps_unsampled_probabilities():
    strategy = make_strategy("proxyless")
    space = tiny_space()
    images, labels = batch()
    before = strategy.arch.probs().detach().clone()
    replay = torch.Generator()
    replay.set_state(strategy.generator.get_state())
    recorded: dict = {}
    original_sample, original_step = strategy.sample_pairs, strategy.arch_optimizer.step

    def sample_pairs():
        result = original_sample()
        recorded["pairs"] = result[2]
        return result

    def step(*args, **kwargs):
        recorded["grad"] = strategy.arch.alpha.grad.clone()
        return original_step(*args, **kwargs)

    strategy.sample_pairs, strategy.arch_optimizer.step = sample_pairs, step
    reference = copy.deepcopy(strategy.supernet)
    strategy.arch_step(images, labels)

    # independent replay: same samples, autograd gate gradients, formula written out
    alpha = strategy.arch.alpha.detach()
    expected = torch.zeros_like(alpha)
    choices, gates, pairs = [], [], []
    for layer in range(len(before)):
        pair = torch.multinomial(before[layer], 2, replacement=False, generator=replay).tolist()
        p = torch.softmax(torch.log(before[layer, pair]), 0)
        active = int(torch.multinomial(p, 1, generator=replay))
        gate = torch.zeros(2)
        gate[active] = 1
        gate.requires_grad_(True)
        # an active zero makes the layer its shortcut: neither path runs (the reference's zero layer)
        zero_active = space.candidates[pair[active]] == "zero"
        choices.append(PathChoice.single(pair[active]) if zero_active else PathChoice.gated(tuple(pair), gate, pair[active]))
        gates.append(gate)
        pairs.append((pair, p))
    assert [pair for pair, _ in pairs] == recorded["pairs"]
    grads = torch.autograd.grad(F.cross_entropy(reference(images, choices), labels), gates, allow_unused=True)
    assert any(g is None for g in grads) and any(g is not None for g in grads)  # both cases occur in this replay
    for layer, ((pair, p), g) in enumerate(zip(pairs, grads)):
        if g is None:
            continue
        for i in range(2):
            expected[layer, pair[i]] = sum(g[j] * p[j] * (float(i == j) - p[i]) for j in range(2))
    assert torch.allclose(recorded["grad"], expected, rtol=1e-4, atol=1e-6)

    after = strategy.arch.probs().detach()
    moved = 0
    for layer, pair in enumerate(recorded["pairs"]):
        others = [k for k in range(after.shape[1]) if k not in pair and bool(strategy.arch.mask[layer, k])]
        assert torch.allclose(after[layer, others], before[layer, others], atol=1e-6)
        moved += int(not torch.allclose(after[layer, pair], before[layer, pair]))
    assert moved > 0  # the step did change the sampled pairs' probabilities


def test_shift_keeps_other_probabilities_exactly():
    old = torch.tensor([0.1, -0.4, 0.7, 0.0, 1.2])
    new = old.clone()
    new[[1, 3]] += torch.tensor([0.9, -0.5])
    shift_keeping_others(new, old, [1, 3])
    p_old, p_new = torch.softmax(old, 0), torch.softmax(new, 0)
    assert torch.allclose(p_new[[0, 2, 4]], p_old[[0, 2, 4]], atol=1e-7)
    assert not torch.allclose(p_new[[1, 3]], p_old[[1, 3]])


# -- SNAS -----------------------------------------------------------------------------------------
def test_gumbel_softmax_samples_follow_p():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = torch.log(p).expand(20000, -1)  # the last candidate is illegal (-inf)
    winners = gumbel_softmax(logits, 1.0, torch.Generator().manual_seed(0)).argmax(dim=1)
    frequencies = torch.bincount(winners, minlength=5).double() / len(winners)
    assert torch.allclose(frequencies, p.double(), atol=0.012)
    assert frequencies[4] == 0


def test_temperature_anneals_linearly():
    assert linear_temperature(0, 10, 1.0, 0.03) == pytest.approx(1.0)
    assert linear_temperature(5, 10, 1.0, 0.03) == pytest.approx(0.515)
    assert linear_temperature(10, 10, 1.0, 0.03) == pytest.approx(0.03)


def test_snas_single_level_step_moves_weights_and_alpha_and_uses_all_paths():
    strategy = make_strategy("snas")
    ran: set = set()
    for index, layer in enumerate(strategy.supernet.layers):
        for name, op in layer.ops.items():
            op.register_forward_hook(lambda *_, key=(index, name): ran.add(key))
    alpha_before = strategy.arch.alpha.detach().clone()
    weight_before = strategy.supernet.layers[0].ops["mb3_k3"].body[0][0].weight.detach().clone()
    strategy.epoch_start(0, 4)
    strategy.step(*batch(), None)
    assert len(ran) == sum(len(layer.ops) for layer in strategy.supernet.layers)
    assert not torch.equal(strategy.arch.alpha.detach(), alpha_before)
    assert not torch.equal(strategy.supernet.layers[0].ops["mb3_k3"].body[0][0].weight.detach(), weight_before)


# -- DSNAS ----------------------------------------------------------------------------------------
def test_dsnas_alpha_grad_is_grad_log_p_times_finite_difference_dl_dz():
    strategy = make_strategy("dsnas")
    images, labels = batch(4)
    probs = strategy.arch.probs().detach().double()
    replay = torch.Generator()
    replay.set_state(strategy.generator.get_state())
    columns = torch.multinomial(strategy.arch.probs().detach(), 1, generator=replay).flatten().tolist()
    reference = copy.deepcopy(strategy.supernet).double()
    recorded = {}
    original_step = strategy.arch_optimizer.step

    def step(*args, **kwargs):
        recorded["grad"] = strategy.arch.alpha.grad.clone()
        return original_step(*args, **kwargs)

    strategy.arch_optimizer.step = step
    strategy.step(images, labels, None)

    def loss_with(z: torch.Tensor) -> float:
        with torch.no_grad():
            choices = [PathChoice.single(c, z[layer]) for layer, c in enumerate(columns)]
            return float(F.cross_entropy(reference(images.double(), choices), labels))

    eps = 1e-7  # the loss is piecewise smooth (ReLU6, batch-4 BN): a small step stays on one piece
    rewards = torch.zeros(len(columns), dtype=torch.float64)
    for layer in range(len(columns)):
        up, down = torch.ones(len(columns), dtype=torch.float64), torch.ones(len(columns), dtype=torch.float64)
        up[layer] += eps
        down[layer] -= eps
        rewards[layer] = (loss_with(up) - loss_with(down)) / (2 * eps)
    # d log p_l(c_l) / d alpha_lk = delta(c_l, k) - p_lk on legal entries
    expected = torch.zeros_like(probs)
    for layer, column in enumerate(columns):
        one_hot = torch.zeros(probs.shape[1], dtype=torch.float64)
        one_hot[column] = 1
        expected[layer] = rewards[layer] * (one_hot - probs[layer]) * strategy.arch.mask[layer]
    assert rewards.abs().max() > 0
    assert torch.allclose(recorded["grad"].double(), expected, rtol=2e-3, atol=1e-6)


def test_dsnas_runs_one_path_per_layer_and_one_forward_per_step():
    strategy = make_strategy("dsnas")
    calls = {"head": 0, "ops": 0}
    strategy.supernet.head.register_forward_hook(lambda *_: calls.__setitem__("head", calls["head"] + 1))
    for layer in strategy.supernet.layers:
        for op in layer.ops.values():
            op.register_forward_hook(lambda *_: calls.__setitem__("ops", calls["ops"] + 1))
    strategy.step(*batch(), None)
    assert calls["head"] == 1
    assert calls["ops"] <= len(strategy.supernet.layers)


def settle(strategy, error: float = 0.0) -> None:
    """Record a run of controller errors, as arch steps would: ``error`` x aim off the aim every step."""
    for _ in range(strategy.budget.WINDOW):
        strategy.budget.update(strategy.budget.aim_ms * (1 + error))


def test_dsnas_early_stop_fixes_a_decided_layer_and_freezes_its_alpha():
    strategy = make_strategy("dsnas", early_stop=0.3)
    with torch.no_grad():
        strategy.arch.alpha[2, tiny_space().candidates.index("mb6_k7")] = 4.0  # column 5
    assert layers_to_fix(strategy.arch.probs(), 0.3) == [2]
    strategy.epoch_start(0, 3)
    assert strategy.fixed == {}  # the controller has not settled yet: nothing is fixed
    settle(strategy, error=0.2)
    strategy.epoch_start(0, 3)
    assert strategy.fixed == {}  # settled 20 % off the aim: still nothing
    settle(strategy, error=0.01)
    strategy.epoch_start(0, 3)
    assert strategy.fixed == {2: 5}
    frozen_row = strategy.arch.alpha.detach()[2].clone()
    others = strategy.arch.alpha.detach()[3].clone()
    for seed in range(3):
        strategy.step(*batch(seed=seed), None)
        assert strategy.sample(torch.Generator().manual_seed(seed))[2] == 5
    assert torch.equal(strategy.arch.alpha.detach()[2], frozen_row)
    assert not torch.equal(strategy.arch.alpha.detach()[3], others)


def test_dsnas_early_stop_keeps_the_aim_reachable():
    strategy = make_strategy("dsnas", early_stop=0.3)
    latency, space = strategy.latency, tiny_space()
    zero, slow = space.candidates.index("zero"), space.candidates.index("mb6_k7")
    zero_layers = [layer.index for layer in space.layers if "zero" in layer.candidates]
    with torch.no_grad():  # every layer decided: zero where legal, the slowest op elsewhere
        strategy.arch.alpha[:, slow] = 4.0
        strategy.arch.alpha[zero_layers, zero] = 8.0
    # an aim that the zeros would make unreachable once enough of them are fixed
    strategy.budget.aim_ms = latency.reachable_ms({layer: zero for layer in zero_layers})[1] * 1.05
    settle(strategy)
    strategy.epoch_start(1, 3)
    low, high = latency.reachable_ms(strategy.fixed)
    assert low <= strategy.budget.aim_ms <= high
    assert 0 < len(strategy.fixed) < len(space.layers)  # some layers fixed, not all
    assert sum(column == zero for column in strategy.fixed.values()) < len(zero_layers)


def test_dsnas_warmup_trains_weights_only():
    strategy = make_strategy("dsnas", warmup_epochs=1)
    alpha = strategy.arch.alpha.detach().clone()
    weights = [p.detach().clone() for p in strategy.supernet.stem.parameters()]
    strategy.epoch_start(0, 3)
    strategy.step(*batch(), None)
    assert torch.equal(strategy.arch.alpha.detach(), alpha) and strategy.budget.errors == []
    assert any(not torch.equal(p.detach(), w) for p, w in zip(strategy.supernet.stem.parameters(), weights))
    strategy.epoch_start(1, 3)
    strategy.step(*batch(), None)
    assert not torch.equal(strategy.arch.alpha.detach(), alpha) and len(strategy.budget.errors) == 1


def test_dsnas_expected_latency_counts_fixed_layers_as_their_op():
    strategy = make_strategy("dsnas", early_stop=0.3)
    column = tiny_space().candidates.index("mb6_k7")
    with torch.no_grad():
        strategy.arch.alpha[2, column] = 4.0
    settle(strategy)
    strategy.epoch_start(0, 3)
    effective = strategy.effective_probs()
    assert effective[2, column] == 1 and effective[2].sum() == 1
    assert torch.equal(effective[3], strategy.arch.probs()[3])
    latency = strategy.latency.calibrated_ms.float()  # what each candidate adds to the prediction
    soft = float(strategy.latency.expected(strategy.arch.probs().detach()))
    assert float(strategy.expected_ms().detach()) == pytest.approx(
        soft + float((latency[2] * (effective[2] - strategy.arch.probs()[2]).detach()).sum()), rel=1e-5
    )


@pytest.mark.parametrize("form", ["lagrangian", "mul-log", "add-linear"])
def test_proxyless_latency_term_moves_only_the_sampled_pairs(form):
    strategy = make_strategy("proxyless")
    strategy.budget = BudgetController(form, aim_ms=strategy.latency.fastest()[1] * 1.2)
    strategy.budget.multiplier = 5.0  # lagrangian: a latency term as strong as a settled controller's
    before = strategy.arch.probs().detach().clone()
    pairs = {}
    original = strategy.sample_pairs

    def sample_pairs():
        result = original()
        pairs["sampled"] = result[2]
        return result

    strategy.sample_pairs = sample_pairs
    strategy.arch_step(*batch())
    after = strategy.arch.probs().detach()
    moved = 0
    for layer, pair in enumerate(pairs["sampled"]):
        others = [k for k in range(after.shape[1]) if k not in pair and bool(strategy.arch.mask[layer, k])]
        assert torch.allclose(after[layer, others], before[layer, others], atol=1e-6)
        moved += int(not torch.allclose(after[layer, pair], before[layer, pair], atol=1e-6))
    assert moved > len(pairs["sampled"]) // 2  # the step did move the pairs


# -- the latency term reaches alpha: every method, every loss form -------------------------------------
def expected_after_steps(method: str, form: str, strength: float, steps: int = 10) -> tuple[float, float]:
    """E[lat] before and after ``steps`` arch steps under a tight aim, the latency term at ``strength``."""
    strategy = make_strategy(method)
    aim = strategy.latency.fastest()[1] * 1.05
    strategy.budget = BudgetController(form, aim_ms=aim, coef=strength if form != "lagrangian" else None, rate=0.0, gain=0.0)
    if form == "lagrangian":  # a constant multiplier: rate and gain 0 keep it at the integral
        strategy.budget.integral = strategy.budget.multiplier = strength
    before = float(strategy.expected_ms().detach())
    held_out = iter([batch(seed=100 + i) for i in range(steps)])
    for seed in range(steps):
        strategy.step(*batch(seed=seed), lambda: next(held_out))
    return before, float(strategy.expected_ms().detach())


@pytest.mark.parametrize("method", GRADIENT_METHODS)
@pytest.mark.parametrize("form", ["lagrangian", "mul-log", "add-linear"])
def test_a_tight_aim_lowers_expected_latency_through_the_latency_term(method, form):
    """Fails if the latency term stops reaching alpha (e.g. E[lat] detached): the same steps without it do not lower E[lat]."""
    before, with_term = expected_after_steps(method, form, strength=20.0)
    _, without = expected_after_steps(method, form, strength=0.0)
    assert with_term < before * 0.985, (before, with_term)
    assert with_term < without - 0.01 * before, (with_term, without)


# -- the supernet's start ---------------------------------------------------------------------------------
#: NB201's candidates (pooling, skip, none, 1x1 and 3x3 convolutions) are different functions by design, trained from
#: independent inits as NB201 does: the shared start is for spaces whose candidates are one family (MBConv, ShuffleNet)
ONE_FAMILY_SPACES = [name for name in CHAIN_SPACES if not issubclass(SPACES[name], Nb201Space)]


@pytest.mark.parametrize("name", ONE_FAMILY_SPACES)
def test_a_layers_candidates_start_as_one_function(name):
    space = get_space(name, resolution=16, in_channels=1, num_classes=10, width_mult=0.25)
    supernet = Supernet(space)
    for index, layer in enumerate(supernet.layers):
        spec = space.layers[index]
        x = torch.randn(4, spec.c_in, spec.h, spec.w)
        for mode in ("train", "eval"):
            outputs = {op: getattr(module, mode)()(x) for op, module in layer.ops.items() if op != "shuffle_x"}
            first = next(iter(outputs.values()))
            for op, out in outputs.items():
                assert torch.allclose(out, first, atol=1e-5), (index, op, mode)


def test_a_block_on_a_shortcut_starts_as_the_identity():
    space = tiny_space()
    for spec, layer in zip(space.layers, Supernet(space).layers):
        x = torch.randn(2, spec.c_in, spec.h, spec.w)
        for op, module in layer.ops.items():
            out = module.eval()(x)
            if spec.shortcut:  # the shortcut adds x: the block itself contributes nothing yet
                assert torch.equal(out, torch.zeros_like(out)), (spec.index, op)
            else:
                assert out.abs().sum() > 0
