"""DSO-NAS: the dsonas space (edges, pruning, costs), APG-NAG, the DAG latency model, the search."""

from __future__ import annotations

import random

import pytest
import torch

from hwnas.arch import Arch, load_arch
from hwnas.errors import HwnasError
from hwnas.latency import head_key, latency_model, overhead_key, required_keys, stem_key
from hwnas.latency.dag_model import DagLatencyModel
from hwnas.search.apg import ApgNag, soft_threshold
from hwnas.search.edge_supernet import EdgeSupernet
from hwnas.search.synthetic import synthetic_table
from hwnas.spaces import get_space
from hwnas.spaces.dag import BlockGraph

from helpers import flags


def small_space(**overrides):
    args = {"resolution": 16, "in_channels": 1, "num_classes": 10, "width_mult": 0.25, **overrides}
    return get_space("dsonas-small", **args)


def arch_of(space, masks, canonical=True) -> Arch:
    """The arch of ``space`` keeping edges ``masks`` (one per block)."""
    return Arch.of(space, space.choices_of(masks, canonical))


def node(level: int, slot: int, width: int = 4) -> int:
    return 1 + level * width + slot


def edge(graph: BlockGraph, src: int, dst: int) -> int:
    return graph.edges.index((src, dst))


# -- the space ------------------------------------------------------------------------------------
def test_block_graph_has_the_papers_edges():
    graph = BlockGraph(4, 4)
    # op at level i takes the input and the 4 * i earlier ops; the output takes all 16 ops
    assert len(graph.edges) == 4 * (1 + 5 + 9 + 13) + 16 == 128
    assert graph.in_edges[node(2, 1)] == tuple(graph.edges.index((src, node(2, 1))) for src in [0] + list(range(1, 9)))
    assert len(graph.in_edges[graph.output]) == 16


def test_isolated_ops_are_those_off_every_input_to_output_path():
    graph = BlockGraph(2, 2)  # nodes 1, 2 (level 0), 3, 4 (level 1), output 5
    kept = [False] * len(graph.edges)
    for src, dst in [(0, 1), (1, 3), (3, 5), (0, 2), (2, 4), (1, 5)]:
        kept[edge(graph, src, dst)] = True
    # node 4 has an input but reaches no output; node 2 then feeds only node 4: both isolated
    assert graph.live_ops(kept) == [1, 3]
    canonical = graph.canonical(kept)
    assert [graph.edges[e] for e, k in enumerate(canonical) if k] == [(0, 1), (1, 3), (1, 5), (3, 5)]
    # an op fed only by an isolated op is isolated too, even with an edge to the output
    kept = [False] * len(graph.edges)
    for src, dst in [(1, 3), (3, 5)]:
        kept[edge(graph, src, dst)] = True
    assert graph.live_ops(kept) == [] and not any(graph.canonical(kept))


@pytest.mark.parametrize("seed", range(3))
def test_arch_round_trips_and_random_archs_are_canonical(seed):
    space = get_space("dsonas", resolution=32, in_channels=1, num_classes=10)
    arch = Arch.random(space, seed)
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_compact(arch.to_compact()) == arch
    assert load_arch(arch.to_compact()) == arch
    assert space.canonical(arch.choices) == arch.choices
    assert len(arch.choices) == 24 and all(len(choice) == 32 for choice in arch.choices)


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("xyz", "is not an edge mask: expected 32 lowercase hex digits"),
        ("F" * 32, "is not an edge mask"),
    ],
)
def test_bad_edge_masks_are_clear_errors(choice, message):
    space = small_space()
    choices = list(space.full_choices())
    choices[3] = choice
    with pytest.raises(HwnasError, match=f"block 3: .*{message}"):
        load_arch(Arch(space.name, tuple(choices), space.args.to_dict()).to_json())


def reference_block(block, x, lam):
    """Eq. (3) and (4) of the paper written out over *every* edge of a full block, in float64: no pruning, no skipping."""
    graph = block.graph
    block = block.double()
    h = {0: x.double()}
    for n in range(1, graph.n_ops + 1):
        h[n] = block.ops[f"n{n}"](sum(lam[e] * h[graph.edges[e][0]] for e in graph.in_edges[n]))
    parts = torch.cat([lam[e] * h[graph.edges[e][0]] for e in graph.in_edges[graph.output]], 1)
    return block.project(parts) + h[0]


def child_lambdas(graph, lam):
    """What the extracted child computes: lambda on kept edges into the output (folded), 1 on other kept edges."""
    into_output = torch.zeros(lam.shape[-1], dtype=torch.bool)
    into_output[list(graph.in_edges[graph.output])] = True
    return torch.where(into_output, lam, (lam > 0).to(lam.dtype))


def test_zero_edges_change_nothing_pruned_net_equals_the_supernet_and_the_paper_formula():
    torch.manual_seed(0)
    space = small_space()
    supernet = EdgeSupernet(space).eval()
    graph = space.graph
    lam = torch.rand(len(space.layers), len(graph.edges)) + 0.1
    # zero edges that isolate no op: every op keeps its edge from the block input and its edge to the output
    protected = {edge(graph, 0, n) for n in range(1, 17)} | set(graph.in_edges[graph.output])
    drop = torch.rand(lam.shape) < 0.6
    for e in protected:
        drop[:, e] = False
    lam[drop] = 0.0
    arch = arch_of(space, [(row > 0).tolist() for row in lam])
    child = supernet.extract_child(arch, lam).eval()
    x = torch.randn(3, 1, 16, 16)
    folded = child_lambdas(graph, lam)
    with torch.no_grad():
        assert torch.allclose(child(x), supernet(x, folded), atol=1e-6)
        assert not torch.allclose(child(x), supernet(x, lam), atol=1e-3)  # the lambdas into ops are not in the child
        # block 0 alone against the paper's formula over all 128 edges in float64
        features = supernet.net.stem(x)
        full_block = supernet.net.blocks[0]
        want = reference_block(full_block, features, folded[0].double())
        got = child.blocks[0](features)
        assert torch.allclose(got.double(), want, atol=1e-6)
    # the child has exactly the kept edges, and the pruned edges' weights are gone
    assert len(child.blocks[0].edge_ids) == int((lam[0] > 0).sum())
    assert sum(p.numel() for p in child.parameters()) == space.cost(arch.choices).params


def test_isolated_ops_are_removed_from_the_built_net_and_from_the_supernets_forward():
    torch.manual_seed(1)
    space = small_space()
    graph = space.graph
    lam = torch.zeros(len(space.layers), len(graph.edges))
    for row in lam:  # input -> op(0,0) -> output; op(1,2) fed by op(0,0) but reaching nothing
        for src, dst in [(0, node(0, 0)), (node(0, 0), graph.output), (node(0, 0), node(1, 2)), (0, node(2, 1))]:
            row[edge(graph, src, dst)] = 0.7
    arch = arch_of(space, [(row > 0).tolist() for row in lam])
    raw = arch_of(space, [(row > 0).tolist() for row in lam], canonical=False)
    assert arch != raw and space.canonical(raw.choices) == arch.choices
    child = space.build(raw.choices)
    assert all(list(block.ops) == [f"n{node(0, 0)}"] for block in child.searchable)
    assert all(block.project[0].in_channels == block.channels for block in child.searchable)
    supernet = EdgeSupernet(space).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(supernet.extract_child(arch, lam).eval()(x), supernet(x, child_lambdas(graph, lam)), atol=1e-6)


def test_a_built_block_shares_its_partial_sums_and_computes_what_the_supernet_does_at_scale_1():
    """The built net's adds: a hand-worked block, ``sums`` against the adds the net runs, the exported ONNX graph's Add nodes."""
    import collections

    import onnx
    from torch.utils._python_dispatch import TorchDispatchMode

    from hwnas.latency.onnx_export import export_onnx_bytes

    graph = BlockGraph(2, 2)  # nodes 1, 2 (level 0), 3, 4 (level 1), output 5
    kept = [False] * len(graph.edges)
    for src, dst in [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (3, 5), (4, 5)]:
        kept[edge(graph, src, dst)] = True
    # node 3 sums (0, 1, 2), node 4 (0, 1): the prefix 0 + 1 is shared, so 2 adds, and the residual: 3
    assert graph.sums(kept) == 3
    # dense: ops 3 and 4 both sum (0, 1, 2): 2 adds between them (not 4), and the residual
    assert graph.sums([True] * len(graph.edges)) == 2 + 1
    assert graph.sums([False] * len(graph.edges)) == 0

    class CountAdds(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.adds = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.adds += func.overloadpacket is torch.ops.aten.add
            return func(*args, **(kwargs or {}))

    torch.manual_seed(3)
    space = small_space()
    supernet = EdgeSupernet(space).eval()
    for seed in range(3):
        arch = Arch.random(space, seed)
        masks = space.masks(arch.choices)
        net = supernet.extract_child(arch).eval()
        x = torch.randn(2, 1, 16, 16)
        with torch.no_grad():
            unit = [torch.tensor(m, dtype=torch.float32) for m in masks]
            assert torch.equal(net(x), supernet(x, unit))  # same terms, same order: the same bits
            features = net.stem(x)
            with CountAdds() as counter:
                net.blocks[0](features)
        assert counter.adds == graph_sums(space, masks[0]) == space.graph.sums(masks[0])
        exported = onnx.load_from_string(export_onnx_bytes(space.build(arch.choices).eval(), (1, 1, 16, 16)))
        reductions = 2  # each reduction adds its two branches
        adds = collections.Counter(n.op_type for n in exported.graph.node)["Add"]
        assert adds == sum(space.graph.sums(m) for m in masks) + reductions


def graph_sums(space, kept):
    """The adds of a block by brute force: every live op's input prefixes of 2+ sources, as a set, and the residual."""
    graph = space.graph
    live = live_ops_by_closure(graph, kept)
    ok = lambda e: kept[e] and (graph.edges[e][0] == 0 or graph.edges[e][0] in live)  # noqa: E731
    prefixes = set()
    for n in live:
        sources = [graph.edges[e][0] for e in graph.in_edges[n] if ok(e)]
        prefixes |= {tuple(sources[:k]) for k in range(2, len(sources) + 1)}
    into_output = any(ok(e) and graph.edges[e][0] in live for e in graph.in_edges[graph.output])
    return len(prefixes) + into_output


def test_an_empty_block_is_the_identity():
    space = small_space()
    net = space.build(space.empty_choices()).eval()
    x = torch.randn(2, 8, 16, 16)
    assert torch.equal(net.searchable[0](x), x)


def sep_flops(c: int, k: int, size: int) -> int:
    return size * size * c * k * k + size * size * c * c


def test_cost_counter_matches_a_hand_count():
    space = small_space()  # channels 8 / 16 / 32 at 16 / 8 / 4 pixels
    graph = space.graph
    kept = [False] * len(graph.edges)
    # input -> sep_k3 (level 0) -> avg pool (level 1, slot 3) -> output; sep_k5 (level 0) from input -> output
    for src, dst in [
        (0, node(0, 0)),
        (node(0, 0), node(1, 3)),
        (node(1, 3), graph.output),
        (0, node(0, 1)),
        (node(0, 1), graph.output),
        (node(0, 0), graph.output),
    ]:
        kept[edge(graph, src, dst)] = True
    empty = [False] * len(graph.edges)
    arch = arch_of(space, [kept] + [empty] * 5)
    block = sep_flops(8, 3, 16) + sep_flops(8, 5, 16) + 16 * 16 * (3 * 8) * 8  # two sep convs, pool free, 1x1 over 3 x 8
    block_params = (9 * 8 + 64 + 16) + (25 * 8 + 64 + 16) + (24 * 8 + 16)  # dw, pw, BN; projection + BN
    stem = 16 * 16 * 8 * 9 * 1
    reductions = (8 * 8 * 16 * 8 + 8 * 8 * 16 * 8 * 9) + (4 * 4 * 32 * 16 + 4 * 4 * 32 * 16 * 9)
    head = 32 * 10
    fixed_params = (9 * 8 + 16) + (8 * 16 + 32 + 9 * 8 * 16 + 32) + (16 * 32 + 64 + 9 * 16 * 32 + 64) + (32 * 10 + 10)
    assert space.cost(space.empty_choices()).flops == stem + reductions + head
    assert space.cost(space.empty_choices()).params == fixed_params
    cost = space.cost(arch.choices)
    assert cost.flops == stem + reductions + head + block
    assert cost.params == fixed_params + block_params
    assert cost.params == sum(p.numel() for p in space.build(arch.choices).parameters())


def test_paper_layouts():
    cifar = get_space("dsonas", resolution=32, in_channels=3, num_classes=10)
    assert [layer.c_in for layer in cifar.layers] == [32] * 8 + [64] * 8 + [128] * 8
    assert [layer.h for layer in cifar.layers] == [32] * 8 + [16] * 8 + [8] * 8
    imagenet = get_space("dsonas", resolution=224)
    assert [sum(1 for layer in imagenet.layers if layer.c_in == c) for c in (48, 96, 192, 384)] == [2, 2, 13, 6]
    assert imagenet.head_in_shape == (384, 7, 7)
    assert [layer.c_in for layer in small_space().layers] == [8, 8, 16, 16, 32, 32]


# -- APG-NAG ------------------------------------------------------------------------------------------


def test_soft_threshold_by_hand():
    z = torch.tensor([-2.0, -0.3, 0.0, 0.4, 1.5])
    assert torch.allclose(soft_threshold(z, 0.5), torch.tensor([-1.5, 0.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(soft_threshold(z, torch.tensor([0.0, 0.1, 0.0, 1.0, 2.0])), torch.tensor([-2.0, -0.2, 0.0, 0.0, 0.0]))


def test_two_apg_nag_steps_by_hand():
    lam = torch.tensor([1.0, 0.5, 0.02], dtype=torch.float64)
    optimizer = ApgNag(lr=0.1, momentum=0.9)
    optimizer.step(lam, torch.tensor([0.2, -1.0, 0.5], dtype=torch.float64), torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64))
    # z = [0.98, 0.6, -0.03]; S_0.05(z) = [0.93, 0.55, 0]; v = [-0.07, 0.05, -0.02]; S + 0.9 v = [0.867, 0.595, -0.018] -> >= 0
    assert torch.allclose(lam, torch.tensor([0.867, 0.595, 0.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(optimizer.velocity, torch.tensor([-0.07, 0.05, -0.02], dtype=torch.float64), atol=1e-12)
    optimizer.step(lam, torch.zeros(3, dtype=torch.float64), 0.5)
    # z = lam; S = [0.817, 0.545, 0]; v = S - lam + 0.9 v = [-0.113, -0.005, -0.018]; S + 0.9 v = [0.7153, 0.5405, -0.0162]
    assert torch.allclose(lam, torch.tensor([0.7153, 0.5405, 0.0], dtype=torch.float64), atol=1e-12)


def nonnegative_lasso():
    """``1/2 |A x - b|^2 + gamma . |x|`` over x >= 0, with b chosen so the unconstrained lasso wants negative entries."""
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(20, 8, generator=generator, dtype=torch.float64)
    truth = torch.tensor([1.5, 0.0, -1.0, 0.8, 0.0, 0.05, -0.4, 2.0], dtype=torch.float64)
    b = a @ truth + 0.01 * torch.randn(20, generator=generator, dtype=torch.float64)
    gamma = torch.tensor([0.5, 0.5, 0.5, 2.0, 0.5, 1.0, 0.5, 0.1], dtype=torch.float64)  # per entry, as adaptive costs
    step = 1.0 / float(torch.linalg.matrix_norm(a, ord=2) ** 2)
    return a, b, gamma, step


def test_apg_nag_reaches_the_fixed_point_of_a_plain_proximal_gradient_lasso_solve():
    a, b, gamma, step = nonnegative_lasso()
    ista = torch.ones(8, dtype=torch.float64)
    for _ in range(20000):  # plain projected ISTA: x <- max(0, x - t grad - t gamma), written out independently
        ista = torch.clamp(ista - step * (a.T @ (a @ ista - b)) - step * gamma, min=0.0)
    lam = torch.ones(8, dtype=torch.float64)
    optimizer = ApgNag(lr=step, momentum=0.9)
    for _ in range(5000):
        optimizer.step(lam, a.T @ (a @ lam - b), gamma)
        assert bool((lam >= 0).all())  # never negative, at any step
    assert torch.allclose(lam, ista, atol=1e-6), (lam, ista)
    assert int((ista == 0).sum()) >= 3  # the problem is sparse: the thresholds matter
    # the fixed point satisfies the optimality conditions of the non-negative lasso
    grad = a.T @ (a @ ista - b)
    assert bool((grad[ista > 0] + gamma[ista > 0]).abs().max() < 1e-6)
    assert bool((grad[ista == 0] + gamma[ista == 0] >= -1e-9).all())


# -- latency ---------------------------------------------------------------------------------------------

CALIBRATION = {"a": 1.3, "b": 0.05, "per_op_ms": 0.01}
OVERHEAD = 0.004


def random_table(space, seed=0):
    """Entries of random ms (no relation to FLOPs), a per-call overhead entry and a calibration."""
    rng = random.Random(seed)
    table = synthetic_table(space)
    for key in table.entries:
        ms = rng.uniform(0.01, 0.2)
        table.entries[key] = {"ms": ms, "p10": ms, "p90": ms, "n": 1}
    table.entries[overhead_key(space)] = {"ms": OVERHEAD, "p10": OVERHEAD, "p90": OVERHEAD, "n": 1}
    table.calibration = dict(CALIBRATION)
    return table


def live_ops_by_closure(graph, kept):
    """Ops on an input-to-output path, from the transitive closure of the kept edges (independent of ``BlockGraph``)."""
    size = graph.output + 1
    reach = [[i == j for j in range(size)] for i in range(size)]
    for e, (src, dst) in enumerate(graph.edges):
        if kept[e]:
            reach[src][dst] = True
    for k in range(size):
        for i in range(size):
            if reach[i][k]:
                for j in range(size):
                    reach[i][j] = reach[i][j] or reach[k][j]
    return [n for n in range(1, graph.n_ops + 1) if reach[0][n] and reach[n][graph.output]]


def test_required_entries_are_the_parts_a_net_can_use():
    space = small_space()
    keys = required_keys(space)
    # three block shapes x (4 ops + an edge + the projection at widths 1..16), two reductions, stem, head
    assert len(keys) == len(set(keys)) == 3 * (4 + 1 + 16) + 2 + 2
    assert "cat16_1x1:c128-8:s1:h16w16" in keys and "sep_k5:c32-32:s1:h4w4" in keys and "reduce:c16-32:s2:h8w8" in keys
    table = synthetic_table(space)
    del table.entries["cat7_1x1:c112-16:s1:h8w8"]
    with pytest.raises(HwnasError, match="lacks 1 entry .*cat7_1x1.*hwnas profile --space dsonas-small"):
        latency_model(table, space)


@pytest.mark.parametrize("seed", range(4))
def test_predicted_latency_is_the_calibrated_sum_of_the_kept_parts(seed):
    space = small_space()
    table = random_table(space, seed)
    model = latency_model(table, space)
    assert isinstance(model, DagLatencyModel)
    arch = Arch.random(space, seed)
    graph, ms = space.graph, lambda key: table.entries[key]["ms"] - OVERHEAD
    total, ops = table.entries[stem_key(space)]["ms"] + ms(head_key(space)), 0
    total += ms("reduce:c8-16:s2:h16w16") + ms("reduce:c16-32:s2:h8w8")
    for layer, choice in zip(space.layers, arch.choices):
        kept = graph.decode(choice)
        live = live_ops_by_closure(graph, kept)
        for n in live:
            total += ms(f"{space.ops[(n - 1) % 4]}:c{layer.c_in}-{layer.c_in}:s1:h{layer.h}w{layer.h}")
        width = sum(1 for n in live if kept[graph.edges.index((n, graph.output))])
        if width:
            total += ms(f"cat{width}_1x1:c{width * layer.c_in}-{layer.c_in}:s1:h{layer.h}w{layer.h}")
        adds = graph_sums(space, kept)
        total += adds * ms(f"add:c{layer.c_in}-{layer.c_in}:s1:h{layer.h}w{layer.h}") / 8  # the entry times 8 adds
        ops += len(live) + (width > 0) + adds
    want = CALIBRATION["a"] * total + CALIBRATION["per_op_ms"] * ops + CALIBRATION["b"]
    assert model.predict(arch) == pytest.approx(want, rel=1e-12)
    assert model.masks_ms(space.masks(arch.choices)) == pytest.approx(want, rel=1e-12)
    assert model.fastest()[1] < model.predict(arch) < model.slowest()[1]


# -- the search method -------------------------------------------------------------------------------------
def dsonas_strategy(table=None, aim_share=0.5, **options):
    from hwnas.search import STRATEGIES
    from hwnas.search.budget import BudgetController

    torch.manual_seed(0)
    space = small_space()
    table = table or random_table(space)
    latency = latency_model(table, space)
    cls = STRATEGIES["dsonas"]
    supernet, lam = cls.build_supernet(space), cls.build_arch(space)
    optimizer = torch.optim.SGD([p for p in supernet.parameters() if p.requires_grad], lr=0.05, momentum=0.9, weight_decay=3e-4)
    fastest, full = latency.fastest()[1], latency.full()[1]  # the pruning starts from the full net
    budget = BudgetController("lagrangian", aim_ms=fastest + aim_share * (full - fastest))
    strategy = cls(supernet, lam, latency, budget, optimizer, {"pretrain_epochs": 0, **options}, torch.Generator().manual_seed(1))
    strategy.init_alpha()
    return strategy, table


def images(n=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def per_ms_weights_by_hand(space, table):
    """Each edge's gamma share from the table's entries: its target op's calibrated ms (or the projection's mean step) over the largest."""
    graph = space.graph
    a, c = CALIBRATION["a"], CALIBRATION["per_op_ms"]
    cal = lambda key: a * (table.entries[key]["ms"] - OVERHEAD) + c  # noqa: E731
    rows = []
    for layer in space.layers:
        ch, s = layer.c_in, layer.h
        step = (cal(f"cat16_1x1:c{16 * ch}-{ch}:s1:h{s}w{s}") - cal(f"cat1_1x1:c{ch}-{ch}:s1:h{s}w{s}")) / 15
        add = a * (table.entries[f"add:c{ch}-{ch}:s1:h{s}w{s}"]["ms"] - OVERHEAD) / 8 + c  # the entry times 8 adds
        rows.append(
            [
                max(step, 0.0) if dst == graph.output else add + cal(f"{space.ops[(dst - 1) % 4]}:c{ch}-{ch}:s1:h{s}w{s}")
                for _, dst in graph.edges
            ]
        )
    weights = torch.tensor(rows, dtype=torch.float64)
    return weights / weights.max()


def test_a_lambda_step_is_apg_nag_on_the_held_out_batch_with_gamma_per_ms():
    strategy, table = dsonas_strategy(gamma=0.3, lambda_lr=0.2, lambda_momentum=0.5, floor=0.0, adaptive="latency")  # no floor
    strategy.control()  # the full net is far over the aim: gamma at full strength
    assert strategy.gamma_now == 0.3
    with torch.no_grad():
        strategy.lam.uniform_(0.0, 0.05, generator=torch.Generator().manual_seed(2))  # near 0: the thresholds bite
    lam0 = strategy.lam.detach().clone().double()
    x, y = images(seed=5)
    weights_before = {k: v.clone() for k, v in strategy.supernet.state_dict().items()}
    # dL/dlambda computed here on a copy of the supernet, the step written out from eqs. 6-8
    import copy

    twin = copy.deepcopy(strategy.supernet)
    lam = lam0.float().clone().requires_grad_(True)
    grad = torch.autograd.grad(torch.nn.functional.cross_entropy(twin(x, lam), y), lam)[0].double()
    thresholds = 0.2 * 0.3 * per_ms_weights_by_hand(strategy.latency.space, table)
    z = lam0 - 0.2 * grad
    shrunk = torch.sign(z) * torch.clamp(z.abs() - thresholds, min=0)
    velocity = shrunk - lam0
    want = torch.clamp(shrunk + 0.5 * velocity, min=0)
    strategy.lambda_step(x, y)
    assert torch.allclose(strategy.lam.detach().double(), want, atol=1e-6)
    assert int((want == 0).sum()) > 0 and bool((strategy.lam >= 0).all())
    for key, value in strategy.supernet.state_dict().items():  # the lambda step changes no weight
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, weights_before[key]), key


def test_adaptive_block_weighs_every_edge_of_a_block_by_the_share_of_its_ms_still_kept():
    """Eq. 9 in ms: an emptied block gets no pressure, a whole block all of it, a partial block its kept share."""
    from hwnas.search.dsonas import masks_of

    strategy, _ = dsonas_strategy(gamma=0.3, lambda_lr=0.2, lambda_momentum=0.5, floor=0.0, adaptive="block")
    assert torch.equal(strategy.edge_weights(), torch.ones_like(strategy.lam))  # every block whole
    space, model = strategy.latency.space, strategy.latency
    full = [tuple([True] * len(space.graph.edges))] * len(space.layers)
    with torch.no_grad():
        strategy.lam[0] = 0.0  # block 0 empty
        strategy.lam[1, ::2] = 0.0  # block 1 partly pruned
    partial = masks_of(strategy.lam, space)[1]
    empty = tuple([False] * len(space.graph.edges))
    # block 1's kept share from whole-net predictions (its ms = the net with it minus the net without it)
    share = (model.masks_ms([full[0], partial, *full[2:]]) - model.masks_ms([full[0], empty, *full[2:]])) / (
        model.masks_ms(full) - model.masks_ms([full[0], empty, *full[2:]])
    )
    assert 0 < share < 1
    want = torch.ones_like(strategy.lam)
    want[0], want[1] = 0.0, share
    assert torch.allclose(strategy.edge_weights().double(), want.double(), atol=1e-6)
    # the lambda step thresholds with these weights
    strategy.control()
    assert strategy.gamma_now > 0  # still over the aim: the thresholds bite
    lam0 = strategy.lam.detach().clone().double()
    x, y = images(seed=5)
    import copy

    lam = lam0.float().clone().requires_grad_(True)
    grad = torch.autograd.grad(torch.nn.functional.cross_entropy(copy.deepcopy(strategy.supernet)(x, lam), y), lam)[0].double()
    z = lam0 - 0.2 * grad
    shrunk = torch.sign(z) * torch.clamp(z.abs() - 0.2 * strategy.gamma_now * want.double(), min=0)
    want_lam = torch.clamp(shrunk + 0.5 * (shrunk - lam0), min=0)
    strategy.lambda_step(x, y)
    assert torch.allclose(strategy.lam.detach().double(), want_lam, atol=1e-6)


def test_weight_steps_keep_lambda_and_bn_scales_fixed():
    strategy, _ = dsonas_strategy(pretrain_epochs=1)
    lam0 = strategy.lam.detach().clone()
    for seed in range(2):
        strategy.step(*images(seed=seed), arch_batches=None)
    assert torch.equal(strategy.lam.detach(), lam0)
    norms = [m for m in strategy.supernet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert any(not torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)  # the BN shifts do train


def test_gamma_follows_the_pruned_nets_distance_to_the_aim():
    strategy, _ = dsonas_strategy(gamma=0.2, settle_band=0.1)
    aim = strategy.budget.aim_ms
    for pruned, share in [(2.0 * aim, 1.0), (1.05 * aim, 0.5), (aim, 0.0), (0.5 * aim, 0.0)]:
        strategy.latency.masks_ms = lambda masks, ms=pruned: ms
        strategy.control()
        assert strategy.gamma_now == pytest.approx(0.2 * share)


def test_a_lambda_step_never_prunes_the_net_under_the_floor_and_undoes_only_what_it_must():
    from hwnas.search.dsonas import masks_of

    # the steps below are sized for the per-ms weights (they prune to under the floor in the 4th step)
    options = {"aim_share": 0.5, "gamma": 0.5, "lambda_lr": 0.3, "adaptive": "latency"}
    bare, held = (dsonas_strategy(floor=floor, **options)[0] for floor in (0.0, 0.9))
    aim, space = held.budget.aim_ms, held.latency.space
    for strategy in (bare, held):
        strategy.control()  # the full net: gamma at full strength
    for k in range(3):  # over the floor all along: the floor changes nothing
        bare.lambda_step(*images(seed=k))
        held.lambda_step(*images(seed=k))
        assert torch.equal(bare.lam, held.lam) and held.pruned_ms > aim
    before = held.lam.detach().clone()
    bare.lambda_step(*images(seed=3))
    held.lambda_step(*images(seed=3))
    assert bare.pruned_ms < 0.8 * aim  # the bare step prunes far under the floor (momentum, thresholds far over lambda)
    assert 0.9 * aim <= held.pruned_ms <= aim
    # undone: the edges the step zeroed, the least pushed first (largest lambda before + new velocity), no more than needed
    target = before + bare.apg.velocity
    zeroed = sorted(((before > 0) & (bare.lam == 0)).nonzero().tolist(), key=lambda be: -float(target[be[0], be[1]]))
    restored = [be for be in zeroed if held.lam[be[0], be[1]] > 0]
    assert restored == zeroed[: len(restored)] and 0 < len(restored) < len(zeroed)
    for b, e in restored:
        assert held.lam[b, e] == before[b, e] and held.apg.velocity[b, e] == 0
    one_fewer = bare.lam.detach().clone()
    for b, e in restored[:-1]:
        one_fewer[b, e] = before[b, e]
    assert held.latency.masks_ms(masks_of(one_fewer, space)) < 0.9 * aim
    for k in range(4, 6):  # gamma is 0 now; momentum alone never takes the net under the floor either
        held.lambda_step(*images(seed=k))
        assert held.pruned_ms >= 0.9 * aim
    arch, predicted, figures = held.derive(aim, spend=True)
    assert figures["derived_from"] == "final lambda" and 0.9 * aim <= predicted <= aim


def test_repair_removes_the_edge_of_least_lambda_per_ms_and_ends_under_the_limit():
    from hwnas.search.dsonas import masks_of, repair_to_limit

    strategy, _ = dsonas_strategy()
    space, model = strategy.latency.space, strategy.latency
    with torch.no_grad():
        strategy.lam.uniform_(0.5, 1.0, generator=torch.Generator().manual_seed(4))
        strategy.lam[torch.rand(strategy.lam.shape, generator=torch.Generator().manual_seed(5)) < 0.8] = 0.0
    lam = strategy.lam.detach()
    masks = masks_of(lam, space)
    start = model.predict(arch_of(space, masks))
    # one removal: the best by brute force over every kept edge, each priced with full-net predictions
    best = None
    for b, kept in enumerate(masks):
        for e in [e for e, k in enumerate(kept) if k]:
            trial = [list(m) for m in masks]
            trial[b][e] = False
            trial[b] = list(space.graph.canonical(trial[b]))
            saved = start - model.predict(arch_of(space, trial))
            lost = sum(float(lam[b, f]) for f in range(len(kept)) if kept[f] and not trial[b][f])
            if saved > 1e-9 and (best is None or lost / saved < best[0]):
                best = (lost / saved, arch_of(space, trial))
    repaired, removals, saved = repair_to_limit(model, masks, lam, start - 1e-6)
    assert removals == 1 and arch_of(space, repaired) == best[1]
    # down to a limit a fifth of the way from the fastest net: never over it
    limit = model.fastest()[1] + 0.2 * (start - model.fastest()[1])
    repaired, removals, saved = repair_to_limit(model, masks, lam, limit)
    assert model.predict(arch_of(space, repaired)) <= limit + 1e-9
    assert saved == pytest.approx(start - model.predict(arch_of(space, repaired)))


# -- a whole run ------------------------------------------------------------------------------------------
def dsonas_config(table_path, budget_ms, **overrides):
    from hwnas.search.loop import SearchConfig

    options = dict(
        method="dsonas",
        table=str(table_path),
        budget_ms=budget_ms,
        space="dsonas-small",
        space_args={"resolution": 16, "in_channels": 1, "num_classes": 10, "width_mult": 0.25},
        epochs=2,
        batch_size=16,
        steps_per_epoch=3,
        bn_batches=2,
        eval_images=64,
        method_options={"pretrain_epochs": 1, "gamma": 0.5},
    )
    options.update(overrides)
    return SearchConfig(**options)


@pytest.mark.slow  # long training or real timing: the whole suite (CI) runs it
def test_a_run_derives_under_the_aim_writes_its_folder_and_resumes_to_the_same_result(tmp_path):
    from hwnas.latency import LatencyTable
    from hwnas.run_folder import load_weights  # noqa: F401  (the loader export and train use)
    from hwnas.search.loop import SearchConfig, SearchRun
    from hwnas.search.synthetic import write_synthetic_table

    space = small_space()
    table_path = write_synthetic_table(space, tmp_path / "synthetic.json")
    model = latency_model(LatencyTable.load(table_path), space)
    fastest, slowest = model.fastest()[1], model.slowest()[1]
    budget = fastest + 0.5 * (slowest - fastest)
    straight = SearchRun(dsonas_config(table_path, budget), tmp_path / "straight", progress=False).run()

    class Interrupt(Exception):
        pass

    def stop(epoch: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        SearchRun(dsonas_config(table_path, budget), tmp_path / "resumed", progress=False).run(on_epoch_end=stop)
    resumed = SearchRun(SearchConfig.load(tmp_path / "resumed"), tmp_path / "resumed", progress=False).run(resume=True)
    assert {**straight, "table": None} == {**resumed, "table": None}
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert torch.equal(a["alpha"], b["alpha"]) and torch.equal(a["strategy"]["apg"]["velocity"], b["strategy"]["apg"]["velocity"])

    assert straight["predicted_ms"] <= straight["aim_ms"] + 1e-9
    arch = load_arch(str(tmp_path / "straight" / "arch.json"))
    assert arch.to_compact() == straight["arch"] and model.predict(arch) == pytest.approx(straight["predicted_ms"])
    child = space.build(arch.choices)
    child.load_state_dict(torch.load(tmp_path / "straight" / "child.pt", weights_only=True), strict=True)
    report = (tmp_path / "straight" / "report.md").read_text()
    assert "pruned at lambda = 0" in report and "edges kept" in report


def test_random_archs_in_a_latency_band_and_the_cli_on_a_dag_space(tmp_path, cli_runner):
    import json

    from hwnas.cli.main import cli
    from hwnas.search.random_archs import band_sampler

    space = small_space()
    table = random_table(space)
    table.save(tmp_path / "table.json")
    model = latency_model(table, space)
    fastest, slowest = model.fastest()[1], model.slowest()[1]
    low, high = fastest + 0.45 * (slowest - fastest), fastest + 0.5 * (slowest - fastest)
    archs = band_sampler(model, low, high).sample(3, seed=1)
    assert len({a.to_compact() for a in archs}) == 3 and all(low <= model.predict(a) <= high for a in archs)
    shown = cli_runner.invoke(cli, ["arch", "show", archs[0].to_compact(), "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)["layers"]
    assert sum(row["flops"] for row in rows) == space.cost(archs[0].choices).flops - space.fixed_cost().flops
    listed = cli_runner.invoke(cli, ["spaces", "dsonas-small", "--resolution", "16"])
    assert listed.exit_code == 0 and "128 searchable edges" in listed.output
    predicted = cli_runner.invoke(cli, ["predict", archs[1].to_compact(), "--table", str(tmp_path / "table.json"), "--json"])
    assert json.loads(predicted.output)["latency_ms"] == pytest.approx(model.predict(archs[1]))
    refused = cli_runner.invoke(
        cli,
        [
            "search",
            *flags(
                method="snas",
                space="dsonas-small",
                resolution=16,
                width_mult=0.25,
                table=str(tmp_path / "table.json"),
                latency=f"{high}ms",
                out=str(tmp_path / "run"),
            ),
        ],
    )
    assert refused.exit_code != 0 and "method snas searches chain spaces" in refused.output


def test_after_an_overshoot_the_derivation_starts_from_the_last_lambda_not_under_the_aim():
    strategy, _ = dsonas_strategy(aim_share=0.5)
    aim = strategy.budget.aim_ms
    strategy.control()  # all lambdas 1: the full net, over the aim, is kept as the last net not under it
    with torch.no_grad():
        strategy.lam.uniform_(0.1, 1.0, generator=torch.Generator().manual_seed(6))
        strategy.lam[:, :] *= torch.rand(strategy.lam.shape, generator=torch.Generator().manual_seed(7)) < 0.05
    strategy.control()
    assert strategy.pruned_ms < 0.5 * aim  # an overshoot far under the aim
    arch, predicted, figures = strategy.derive(aim, spend=True)
    assert figures["derived_from"] == "the last lambda not under the aim"
    # the repair removes one edge (and what it isolates) at a time: it stops just under the aim, not at the overshoot
    assert 0.95 * aim < predicted <= aim
    child = strategy.extract_child(arch)
    # each kept edge into an output carries a lambda > 0 into its projection columns (at_aim's where lambda is now 0)
    for block in child.searchable:
        columns = block.project[0].weight.abs().sum((0, 2, 3)).view(len(block.concat), -1).sum(1)
        assert bool((columns > 0).all())


@pytest.mark.parametrize("seed", range(2))
def test_the_slowest_net_is_a_local_maximum_slower_than_the_full_net_and_random_nets(seed):
    """The full net shares its partial sums, so a sparser net can be slower: ``slowest`` climbs from the full net."""
    space = small_space()
    table = random_table(space, seed)
    table.entries.update({k: {**v, "ms": 0.5} for k, v in table.entries.items() if k.startswith("add:")})  # adds that matter
    model = latency_model(table, space)
    arch, slowest = model.slowest()
    assert slowest == pytest.approx(model.predict(arch), rel=1e-12)
    assert slowest > model.full()[1]  # here the full net is not the slowest
    for index, kept in enumerate(space.masks(arch.choices)):
        ms = model.block_ms(index, kept)
        for e in range(len(kept)):
            flipped = list(kept)
            flipped[e] = not flipped[e]
            assert model.block_ms(index, flipped) <= ms + 1e-12
    assert max(model.predict(Arch.random(space, s)) for s in range(100)) < slowest


@pytest.mark.slow  # times 16 real nets (two validations): about a minute on 2 shared cores
def test_tables_validate_on_a_dsonas_table_shows_the_fitted_whole_net_model_beside_the_sum(cli_runner, tmp_path):
    """``hwnas tables fit`` stores a whole-net model in a dsonas-small table; ``tables validate`` scores it in its own column."""
    import json

    from hwnas.cli.main import cli
    from hwnas.latency.accuracy import error_metrics
    from hwnas.latency.table import LatencyTable
    from hwnas.search.synthetic import write_synthetic_table

    space = small_space()
    table = write_synthetic_table(space, tmp_path / "dsonas.json")
    additive = latency_model(LatencyTable.load(table), space)
    # whole nets that depart from the sum: nets running many adds are 1.5x slower than their parts say
    archs = [Arch.random(space, seed) for seed in range(40)]
    adds = [sum(key.startswith("add:") for key in space.run_parts(arch.choices)) for arch in archs]
    lines = [f"{arch.to_compact()},{additive.predict(arch) * (1.5 if n > 20 else 1.0)!r}" for arch, n in zip(archs, adds)]
    (tmp_path / "timings.csv").write_text("arch,ms\n" + "\n".join(lines) + "\n")
    fitted = cli_runner.invoke(cli, ["tables", "fit", str(table), "--timings", str(tmp_path / "timings.csv")])
    assert fitted.exit_code == 0, fitted.output
    assert LatencyTable.load(table).whole_net["kind"] == "trees"

    quick = ["--rounds", "2", "--min-time", "0", "--warmup-time", "0", "--no-progress"]
    result = cli_runner.invoke(cli, ["tables", "validate", str(table), "--n", "6", *quick])
    assert result.exit_code == 0, result.output
    header, *rows = [
        line for line in result.stdout.splitlines() if line.startswith(" " * 20) or line[:20].strip() in ("n", "mape")
    ]
    columns = [header[20 + 34 * i : 20 + 34 * (i + 1)].strip() for i in range((len(header) - 20) // 34)]
    assert columns[:3] == ["sum of entries", "calibrated (held out)", "whole-net model (held out)"], header
    shown = {row.split()[0]: row.split()[1:] for row in rows}
    # the column is the fitted model's predictions of the held-out half, scored against what validate measured
    stored = LatencyTable.load(table)
    held = stored.validation["points"][3:]
    model = latency_model(stored, space)
    figures = error_metrics([model.predict(Arch.from_compact(p["arch"])) for p in held], [p["measured_ms"] for p in held])
    line = error_metrics([model.additive_predict(Arch.from_compact(p["arch"])) for p in held], [p["measured_ms"] for p in held])
    assert figures != line  # the model is not the table's calibrated sum here
    assert shown["n"][2] == "3" and shown["mape"][2] == f"{figures['mape']:.1%}"
    assert stored.validation["whole_net"] == pytest.approx(figures, nan_ok=True)
    summary = json.loads(cli_runner.invoke(cli, ["tables", "validate", str(table), "--n", "6", *quick, "--json"]).stdout)
    assert summary["whole_net"]["n"] == 3  # --json says it too
