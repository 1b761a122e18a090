"""The NAS-Bench-201 space (Dong and Yang, ICLR 2020, https://arxiv.org/abs/2001.00326): one cell, 6 edges, 5 ops.

The cell has 4 nodes; node ``j`` is the sum of one op per earlier node ``i < j`` (edge ``i -> j``),
node 0 is the cell input and node 3 its output. The 6 edges, in the NB201 string's order, are
``0->1, 0->2, 1->2, 0->3, 1->3, 2->3``; each runs one of ``none`` (no edge), ``skip_connect``,
``nor_conv_1x1``, ``nor_conv_3x3`` (ReLU-Conv-BN) or ``avg_pool_3x3``: 5^6 = 15,625 nets.
The macro skeleton is NB201's: a 3x3 conv + BN stem to 16 channels, 3 stages of 5 cells at
16 / 32 / 64 channels with a residual reduction block (ResNet basic block, stride 2) between
stages, then BN-ReLU, global pool and a linear layer. All 15 cells share the one cell
structure (each with its own weights), so an arch is 6 choices, one per edge, and the space is
a chain space over the edges: the differentiable methods search the 6 edges as 6 layers.

An arch's compact form is the NB201 string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``
(``format_choices`` / ``parse_choices``).

Deviation, on purpose: a built cell keeps only the ops that *feed the output* (on a path of
non-``none`` edges to node 3): NB201's reference code computes every edge, but an op whose
result is never used is removed by every graph runtime (ONNX export drops it), so the net
this project builds, exports and times runs the same ops. A node with no incoming edge is
``x * 0`` (NB201's ``none`` is ``x.mul(0.)``): 0, yet a function of the input, so that a net whose
cells connect nothing still exports with its input and can be timed.
NB201 is a 32x32 CIFAR space: give ``--resolution 32 --num-classes 10`` (the space options'
defaults are the ImageNet ones every space shares).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces.base import ChainSpace, LayerSpec, OpSpec, Part, conv_out
from hwnas.spaces.blocks import Classifier
from hwnas.spaces.cost import Cost
from hwnas.spaces.dag import AddChain

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (source node, target node) of each edge, in the NB201 string's order
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
CHANNELS, CELLS_PER_STAGE = (16, 32, 64), 5
#: ops that run nothing a table times: ``none`` drops the edge, ``skip_connect`` passes its input on
FREE_OPS = frozenset({"none", "skip_connect"})


def feeding_edges(choices: Sequence[str]) -> tuple[bool, ...]:
    """Per edge: not ``none`` and its target node reaches the cell output through edges that are not ``none``."""
    feeds = {3}
    for node in (2, 1):
        if any(choices[e] != "none" and src == node and dst in feeds for e, (src, dst) in enumerate(EDGES)):
            feeds.add(node)
    return tuple(op != "none" and dst in feeds for op, (_, dst) in zip(choices, EDGES))


def reached_nodes(choices: Sequence[str]) -> set[int]:
    """Nodes on a path of non-``none`` edges from the cell input (node 0 included)."""
    reached = {0}
    for node in (1, 2, 3):
        if any(choices[e] != "none" and dst == node and src in reached for e, (src, dst) in enumerate(EDGES)):
            reached.add(node)
    return reached


#: what an op computes in the cell's function (``op_roles``)
ROLES = ("live", "dead", "zero_in")


def op_roles(choices: Sequence[str]) -> tuple[str | None, ...]:
    """Per edge, ``None`` for ``none``, else ``zero_in`` when its source node is not reached from the input
    (it is fed zeros), ``dead`` when it is fed but its target reaches no output, ``live`` otherwise."""
    return _op_roles(choices, feeding_edges(choices), reached_nodes(choices))


def _op_roles(choices: Sequence[str], kept: Sequence[bool], reached: set[int]) -> tuple[str | None, ...]:
    """``op_roles`` from the cell's ``feeding_edges`` and ``reached_nodes``, where the caller has them."""
    return tuple(
        None if op == "none" else "zero_in" if src not in reached else "live" if kept[e] else "dead"
        for e, (op, (src, _)) in enumerate(zip(choices, EDGES))
    )


def canonical_choices(choices: Sequence[str]) -> tuple[str, ...]:
    """One representative of the cells that compute the same function: the cell's one symmetry.

    With no edge 1 -> 2 (``none``), nodes 1 and 2 are interchangeable: swapping them swaps
    edges 0->1 with 0->2 and 1->3 with 2->3. Of the two strings the smaller is returned.
    """
    choices = tuple(choices)
    if choices[2] != "none":
        return choices
    return min(choices, (choices[1], choices[0], choices[2], choices[3], choices[5], choices[4]))


def all_live(choices: Sequence[str]) -> bool:
    """Whether every edge that is not ``none`` lies on a path from the cell input to its output."""
    kept, reached = feeding_edges(choices), reached_nodes(choices)
    return all(op == "none" or (kept[e] and EDGES[e][0] in reached) for e, op in enumerate(choices))


class ReLUConvBN(nn.Sequential):
    """NB201's ``nor_conv``: ReLU, k x k conv (no bias, 'same' padding), BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)
        )


class ResidualReduction(nn.Module):
    """NB201's reduction block (ResNet basic block): two ReLU-Conv-BN 3x3 (the first with stride 2) plus avg-pool + 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


def build_edge_op(op: str, channels: int) -> nn.Module:
    """One edge's op at ``channels`` (``none`` has no module: the edge is absent)."""
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    raise HwnasError(f"no module for NB201 op {op!r}; ops: {', '.join(NB201_OPS)}")


class Cell(nn.Module):
    """The cell with the ops of ``choices`` that feed the output (``edges``: a module per kept edge, by edge index)."""

    def __init__(self, choices: Sequence[str], channels: int) -> None:
        super().__init__()
        kept = feeding_edges(choices)
        self.kept = [e for e in range(len(EDGES)) if kept[e]]
        self.edges = nn.ModuleDict({str(e): build_edge_op(choices[e], channels) for e in self.kept})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: dict[int, torch.Tensor] = {0: x}
        for node in (1, 2, 3):
            total = None
            for e in self.kept:
                src, dst = EDGES[e]
                if dst == node:
                    value = self.edges[str(e)](nodes[src])
                    total = value if total is None else total + value
            nodes[node] = x * 0.0 if total is None else total  # NB201's none: x.mul(0.), an op of the input
        return nodes[3]


class Nb201Net(nn.Module):
    """stem -> cells and reductions -> BN-ReLU -> classifier."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class Nb201Space(ChainSpace):
    name = "nb201"
    description = "NAS-Bench-201: one cell of 6 edges x 5 ops shared by 15 cells, ResNet reductions (ICLR 2020)"

    # -- layout: the 6 edges are the searchable layers --------------------------------------
    def _channels(self) -> tuple[int, ...]:
        return tuple(self.width(c) for c in CHANNELS)

    def stages(self) -> list[tuple[int, int]]:
        """(channels, input size) of each stage's cells."""
        size, out = self.args.resolution, []
        for stage, channels in enumerate(self._channels()):
            if stage:
                size = conv_out(size, 2)
            out.append((channels, size))
        return out

    def _build_layers(self) -> list[LayerSpec]:
        c, size = self.stages()[0]
        return [LayerSpec(e, c, c, 1, size, size, NB201_OPS, False) for e in range(len(EDGES))]

    @property
    def stem_out_channels(self) -> int:
        return self._channels()[0]

    @property
    def head_in_shape(self) -> tuple[int, int, int]:
        c, size = self.stages()[-1]
        return (c, size, size)

    def build_stem(self) -> nn.Module:
        c = self.stem_out_channels
        return nn.Sequential(nn.Conv2d(self.args.in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def build_head(self) -> nn.Module:
        c = self.head_in_shape[0]
        return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False), Classifier(c, self.args.num_classes))

    def _build_op(self, layer: LayerSpec, op: str) -> nn.Module:
        if op == "none":
            return nn.Identity()  # never run: the supernet and the cell skip a none edge
        return build_edge_op(op, layer.c_in)

    # -- compact form: the NB201 string -----------------------------------------------------
    @staticmethod
    def format_choices(choices: Sequence[str]) -> str:
        ops = [f"{op}~{src}" for op, (src, _) in zip(choices, EDGES)]
        return "|" + "|+|".join("|".join(ops[a:b]) for a, b in ((0, 1), (1, 3), (3, 6))) + "|"

    @staticmethod
    def parse_choices(text: str) -> tuple[str, ...]:
        """The 6 ops of an NB201 string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (the sources checked)."""
        nodes = text.strip().strip("|").split("|+|")
        tokens = [token.split("~") for node in nodes for token in node.split("|")]
        sources = [src for _, (src, _) in zip(range(len(EDGES)), EDGES)]
        if len(nodes) != 3 or len(tokens) != len(EDGES) or any(len(t) != 2 or t[1] != str(s) for t, s in zip(tokens, sources)):
            raise HwnasError(f"{text!r} is not an NB201 string: expected |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
        return tuple(op for op, _ in tokens)

    # -- nets -------------------------------------------------------------------------------
    def _blocks(self, cell) -> list[nn.Module]:
        blocks: list[nn.Module] = []
        stages = self.stages()
        for stage, (channels, _) in enumerate(stages):
            if stage:
                blocks.append(ResidualReduction(stages[stage - 1][0], channels))
            blocks.extend(cell(channels) for _ in range(CELLS_PER_STAGE))
        return blocks

    def build(self, choices: Sequence[str]) -> Nb201Net:
        self.validate(choices)
        return Nb201Net(self.build_stem(), self._blocks(lambda c: Cell(choices, c)), self.build_head())

    # -- table parts ------------------------------------------------------------------------
    def fixed_part_keys(self) -> list[str]:
        """The two reductions (stem and head have keys of their own)."""
        stages = self.stages()
        return [
            OpSpec("reduce", stages[s - 1][0], c, 2, stages[s - 1][1], stages[s - 1][1]).key
            for s, (c, _) in enumerate(stages)
            if s
        ]

    @staticmethod
    def op_key(op: str, channels: int, size: int) -> str:
        return OpSpec(op, channels, channels, 1, size, size).key

    def parts(self) -> list[Part]:
        """Per stage shape: each op that runs something and one add (timed as a chain); the reductions."""
        unique: list[Part] = []
        stages = self.stages()
        for channels, size in stages:
            for op in NB201_OPS:
                if op not in FREE_OPS:
                    key = self.op_key(op, channels, size)
                    unique.append(Part(key, lambda op=op, c=channels: build_edge_op(op, c), (channels, size, size)))
            key = self.op_key("add", channels, size)
            unique.append(Part(key, AddChain, (channels, size, size), repeats=AddChain.adds))
        for key, s in zip(self.fixed_part_keys(), range(1, len(stages))):
            (c_in, size), (c_out, _) = stages[s - 1], stages[s]
            unique.append(Part(key, lambda a=c_in, b=c_out: ResidualReduction(a, b), (c_in, size, size)))
        return unique

    def cell_parts(self, choices: Sequence[str], channels: int, size: int) -> list[str]:
        """What one cell runs: each feeding op that is not free, and (in-edges - 1) adds per node."""
        kept = feeding_edges(choices)
        keys = [self.op_key(op, channels, size) for op, k in zip(choices, kept) if k and op not in FREE_OPS]
        for node in (1, 2, 3):
            inputs = sum(1 for e, (_, dst) in enumerate(EDGES) if kept[e] and dst == node)
            keys += [self.op_key("add", channels, size)] * max(inputs - 1, 0)
        return keys

    def run_parts(self, choices: Sequence[str]) -> list[str]:
        self.validate(choices)
        keys: list[str] = []
        for channels, size in self.stages():
            keys += self.cell_parts(choices, channels, size) * CELLS_PER_STAGE
        return keys

    # -- costs ------------------------------------------------------------------------------
    def fixed_cost(self) -> Cost:
        return super().fixed_cost() + self._parts_cost(self.fixed_part_keys())

    def cost(self, choices: Sequence[str]) -> Cost:
        """FLOPs and params of the built net: the fixed parts plus every op it runs (adds cost no multiply-adds)."""
        return self.fixed_cost() + self._parts_cost(self.run_parts(choices))

    # -- what a whole-net latency model sees ---------------------------------------------------
    def graph_features(self, choices: Sequence[str]) -> dict[str, float]:
        """The cell's graph beyond its op counts: which edges feed the output, which are reached, paths and their convs.

        Besides the per-edge one-hots (the string itself), each op is counted by what it computes
        in the cell's *function* (``op_roles``): on a path from input to output (``live``), feeding
        no output (``dead``), or fed only zeros (``zero_in``, its source node unreached). A
        pipeline that builds every op of the string (NB201's reference code does) times the
        dead and zero-fed ops that this project's built net drops; how much of them a converter
        then removes is the device's business, learnt from its timings (docs/latency_devices.md).
        """
        kept, reached = feeding_edges(choices), reached_nodes(choices)
        roles = _op_roles(choices, kept, reached)
        features: dict[str, float] = {}
        for e, op in enumerate(choices):
            for name in NB201_OPS[1:]:
                features[f"edge{e}:{name}"] = float(op == name)
                features[f"feeds{e}:{name}"] = float(op == name and kept[e])
                features[f"live{e}:{name}"] = float(op == name and roles[e] == "live")
                features[f"zero_in{e}:{name}"] = float(op == name and roles[e] == "zero_in")
        for role in ROLES:
            for name in NB201_OPS[1:]:
                features[f"{role}:{name}"] = float(sum(1 for e, op in enumerate(choices) if op == name and roles[e] == role))
        paths = ((0, 3), (0, 1, 3), (0, 2, 3), (0, 1, 2, 3))
        index = {edge: e for e, edge in enumerate(EDGES)}
        convs = []
        for path in paths:
            edges = [index[pair] for pair in zip(path, path[1:])]
            if all(choices[e] != "none" for e in edges):
                convs.append(sum(choices[e].startswith("nor_conv") for e in edges))
        features["paths"] = float(len(convs))
        features["path_convs_max"] = float(max(convs, default=0))
        features["path_convs_min"] = float(min(convs, default=0))
        features["output_reached"] = float(3 in reached)
        features["nodes_feeding"] = float(
            sum(1 for node in (1, 2) if any(kept[e] for e, (_, d) in enumerate(EDGES) if d == node))
        )
        for node in (1, 2, 3):
            features[f"inputs{node}"] = float(sum(1 for e, (_, d) in enumerate(EDGES) if kept[e] and d == node))
        return features
