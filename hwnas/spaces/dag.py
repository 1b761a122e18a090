"""DAG-block spaces: a chain of blocks, each a completely connected graph of M levels x N ops.

The space of DSO-NAS (``hwnas.spaces.dsonas``). Inside a block every op takes the sum of the
block input and of every op of the earlier levels, each through its own edge; the block
output is a 1x1 conv (+BN) over the concatenation of the ops that feed it, plus the block
input (identity where no op feeds the output). An architecture is the set of kept edges.

Node ids within a block: 0 is the block input, ``1 .. M*N`` the ops (level by level, op ``j``
of level ``i`` is ``1 + i*N + j``), ``M*N + 1`` the block output. Edges are numbered in a fixed
order (``BlockGraph.edges``): for each op in node order its in-edges (input first, then earlier
ops in node order), then the output's in-edges. An arch choice per block is the edge mask as
a fixed-width lowercase hex number, bit ``e`` for edge ``e``.

An op is *live* when a path of kept edges runs from the block input through it to the block
output; every other op is isolated and removed, with its edges. The latency and the cost of an
arch count live parts only, and ``canonical`` drops the edges of isolated ops, so two masks that
build the same net have one canonical form.

A built net runs every kept edge at scale 1 (DSO-NAS's lambdas are search variables: the paper
prunes, then retrains the pruned net). An op's input is the sum of its sources in edge order,
and ops whose sources begin alike share those partial sums (``BlockGraph.sums``): the level-3
ops of a dense block, for instance, extend the very sum their level-2 neighbours took. The
ONNX exporter would merge these equal sums anyway (common subexpressions); the net computes
them once itself, so eager PyTorch runs the adds the exported graph runs, and the latency
model counts those adds, not one per edge.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces.base import LayerSpec, OpSpec, Part, Space, adapt_strides, conv_out
from hwnas.spaces.cost import Cost


@dataclass(frozen=True)
class BlockGraph:
    """The completely connected block of ``levels`` x ``width`` ops and its edge numbering."""

    levels: int
    width: int

    @property
    def n_ops(self) -> int:
        return self.levels * self.width

    @property
    def output(self) -> int:
        return self.n_ops + 1

    def level(self, node: int) -> int:
        return (node - 1) // self.width

    def op_slot(self, node: int) -> int:
        """Which of the N ops of its level ``node`` is (the index into the space's op list)."""
        return (node - 1) % self.width

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        edges = []
        for node in range(1, self.n_ops + 1):
            edges.append((0, node))
            edges.extend((src, node) for src in range(1, 1 + self.level(node) * self.width))
        edges.extend((src, self.output) for src in range(1, self.n_ops + 1))
        return tuple(edges)

    @cached_property
    def in_edges(self) -> dict[int, tuple[int, ...]]:
        table: dict[int, list[int]] = {node: [] for node in range(1, self.output + 1)}
        for index, (_, dst) in enumerate(self.edges):
            table[dst].append(index)
        return {node: tuple(edges) for node, edges in table.items()}

    @cached_property
    def out_edges(self) -> dict[int, tuple[int, ...]]:
        table: dict[int, list[int]] = {node: [] for node in range(0, self.n_ops + 1)}
        for index, (src, _) in enumerate(self.edges):
            table[src].append(index)
        return {node: tuple(edges) for node, edges in table.items()}

    @property
    def hex_width(self) -> int:
        return math.ceil(len(self.edges) / 4)

    # -- masks ------------------------------------------------------------------------------
    def live_ops(self, kept: Sequence[bool]) -> list[int]:
        """Ops on a path of kept edges from the block input to the block output, in node order."""
        reached = {0}
        for node in range(1, self.n_ops + 1):
            if any(kept[e] and self.edges[e][0] in reached for e in self.in_edges[node]):
                reached.add(node)
        feeds = {self.output}
        for node in range(self.n_ops, 0, -1):
            if any(kept[e] and self.edges[e][1] in feeds for e in self.out_edges[node]):
                feeds.add(node)
        return [node for node in range(1, self.n_ops + 1) if node in reached and node in feeds]

    def canonical(self, kept: Sequence[bool]) -> tuple[bool, ...]:
        """``kept`` without the edges of isolated ops: only edges between live nodes (input, live ops, output)."""
        return self.pruned(kept)[1]

    def pruned(self, kept: Sequence[bool]) -> tuple[list[int], tuple[bool, ...]]:
        """``live_ops(kept)`` and ``canonical(kept)``, the live ops found once."""
        live = self.live_ops(kept)
        nodes = set(live) | {0, self.output}
        return live, tuple(bool(k) and src in nodes and dst in nodes for k, (src, dst) in zip(kept, self.edges))

    def sums(self, kept: Sequence[bool]) -> int:
        """The adds a built block runs: each distinct partial sum over its live ops' inputs, plus the residual add.

        Op ``n`` sums its kept sources ``s1, s2, ...`` in edge order as ``((s1 + s2) + s3) ...``;
        one add per distinct prefix of two or more sources, shared by every op whose sources
        begin with it (``DagBlock`` computes each such prefix once). A block with any edge into
        its output adds the input to the projection (one more add); an empty block adds nothing.
        """
        return self.sums_of(*self.pruned(kept))

    def sums_of(self, live: Sequence[int], canonical: Sequence[bool]) -> int:
        """``sums`` of a block already pruned (``pruned``: its live ops and canonical edges)."""
        prefixes = set()
        for node in live:
            sources = tuple(self.edges[e][0] for e in self.in_edges[node] if canonical[e])
            prefixes.update(sources[:end] for end in range(2, len(sources) + 1))
        return len(prefixes) + (1 if self.concat_edges(canonical) else 0)

    def concat_edges(self, kept: Sequence[bool]) -> list[int]:
        """The kept edges into the block output, in edge order (the concatenation's order)."""
        return [e for e in self.in_edges[self.output] if kept[e]]

    def encode(self, kept: Sequence[bool]) -> str:
        value = sum(1 << e for e, k in enumerate(kept) if k)
        return format(value, f"0{self.hex_width}x")

    def decode(self, text: str, where: str = "block") -> tuple[bool, ...]:
        if len(text) != self.hex_width or any(c not in "0123456789abcdef" for c in text):
            raise HwnasError(
                f"{where}: {text!r} is not an edge mask: expected {self.hex_width} lowercase hex digits "
                f"(bit e keeps edge e of the block's {len(self.edges)})"
            )
        value = int(text, 16)
        if value >> len(self.edges):
            raise HwnasError(f"{where}: edge mask {text!r} sets bits beyond the block's {len(self.edges)} edges")
        return tuple(bool(value >> e & 1) for e in range(len(self.edges)))


class DagBlock(nn.Module):
    """One block built with the given (canonical) edges: only live ops, a 1x1 projection as wide as its inputs.

    ``forward(x)`` runs the block as built: every edge at scale 1, each partial sum of op
    inputs computed once and shared (``BlockGraph.sums`` counts its adds).
    ``forward(x, scales)`` with a tensor over the built edges is the search's form: each edge's
    term is scaled by its lambda, edges whose scale is 0 are dropped and the ops they isolate
    are skipped, so the result is exactly the block built without them; the projection then
    uses the columns of its weight that belong to the live concatenation. At scales of 1 both
    forms add the same terms in the same order: the same values, to the bit.
    """

    def __init__(self, graph: BlockGraph, kept: Sequence[bool], channels: int, build_op: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.graph = graph
        self.channels = channels
        self.edge_ids = [e for e, k in enumerate(kept) if k]
        live = graph.live_ops(kept)
        self.ops = nn.ModuleDict({f"n{node}": build_op(graph.op_slot(node)) for node in live})
        self.concat = graph.concat_edges(kept)
        self.project = None
        if self.concat:
            self.project = nn.Sequential(
                nn.Conv2d(len(self.concat) * channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
            )

    def _run(self, x: torch.Tensor, scales: torch.Tensor | None, edges: list[int], concat: list[int]) -> torch.Tensor:
        """The block over ``edges`` (global edge ids); ``scales`` over ``self.edge_ids``, or None for every edge at 1."""
        position = {e: i for i, e in enumerate(self.edge_ids)}
        graph, wanted = self.graph, set(edges)
        values: dict[int, torch.Tensor] = {0: x}
        shared: dict[tuple[int, ...], torch.Tensor] = {}  # partial sums at scale 1, by their sources

        def term(e: int) -> torch.Tensor:
            value = values[graph.edges[e][0]]
            return value if scales is None else value * scales[position[e]]

        for node in range(1, graph.n_ops + 1):
            inputs = [e for e in graph.in_edges[node] if e in wanted]
            if not inputs:
                continue
            total, prefix = term(inputs[0]), (graph.edges[inputs[0]][0],)
            for e in inputs[1:]:
                if scales is not None:
                    total = total + term(e)
                    continue
                prefix += (graph.edges[e][0],)
                if prefix not in shared:
                    shared[prefix] = total + term(e)
                total = shared[prefix]
            values[node] = self.ops[f"n{node}"](total)
        if not concat:
            return x
        parts = [term(e) for e in concat]
        conv, norm = self.project
        weight = conv.weight
        if len(concat) != len(self.concat):
            slots = [self.concat.index(e) for e in concat]
            columns = torch.cat([torch.arange(s * self.channels, (s + 1) * self.channels) for s in slots])
            weight = weight.index_select(1, columns)
        return norm(F.conv2d(torch.cat(parts, 1), weight)) + x

    def forward(self, x: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
        if scales is None:
            return self._run(x, None, self.edge_ids, self.concat)
        if scales.shape != (len(self.edge_ids),):
            raise HwnasError(f"block has {len(self.edge_ids)} edges, got scales of shape {tuple(scales.shape)}")
        kept = [False] * len(self.graph.edges)
        for e, value in zip(self.edge_ids, scales.detach().tolist()):
            kept[e] = value != 0.0
        kept = self.graph.canonical(kept)
        edges = [e for e in self.edge_ids if kept[e]]
        return self._run(x, scales, edges, [e for e in self.concat if kept[e]])


class DagNet(nn.Module):
    """stem -> blocks (searchable ``DagBlock``s and fixed reductions, in order) -> head."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    @property
    def searchable(self) -> list[DagBlock]:
        return [block for block in self.blocks if isinstance(block, DagBlock)]

    def forward(self, x: torch.Tensor, scales: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.stem(x)
        index = 0
        for block in self.blocks:
            if isinstance(block, DagBlock):
                x = block(x, None if scales is None else scales[index])
                index += 1
            else:
                x = block(x)
        return self.head(x)


class DagSpace(Space):
    """Base of the DAG-block spaces: stages of searchable blocks with fixed reductions between them.

    A subclass gives ``graph``, ``ops`` (the N op names, one per slot of a level),
    ``_stage_layout`` and the builders of stem, head, reduction and op. An arch has one
    choice per searchable block: its edge mask (see the module docstring).
    """

    graph: BlockGraph
    ops: tuple[str, ...]

    # -- what a concrete space provides -------------------------------------------------
    def _stage_layout(self) -> list[tuple[int, int]]:
        """Per stage (channels, searchable blocks); a reduction (stride 2, channels of the next stage) sits between stages."""
        raise NotImplementedError

    def _stem_stride(self) -> int:
        raise NotImplementedError

    def build_op(self, op: str, channels: int) -> nn.Module:
        raise NotImplementedError

    def build_reduction(self, c_in: int, c_out: int, stride: int) -> nn.Module:
        raise NotImplementedError

    # -- layout -------------------------------------------------------------------------
    @cached_property
    def _plan(self) -> list[tuple[str, int, int, int, int]]:
        """Every block in order: (kind 'dag' or 'reduce', c_in, c_out, stride, input size)."""
        size = conv_out(self.args.resolution, self._stem_stride())
        plan = []
        layout = self._stage_layout()
        for stage, (channels, blocks) in enumerate(layout):
            if stage > 0:
                c_prev = layout[stage - 1][0]
                stride = self._reduction_strides()[stage - 1]
                plan.append(("reduce", c_prev, channels, stride, size))
                size = conv_out(size, stride)
            plan.extend(("dag", channels, channels, 1, size) for _ in range(blocks))
        return plan

    def _reduction_strides(self) -> list[int]:
        return self._strides()[1:]

    def _strides(self) -> list[int]:
        return adapt_strides(self.args.resolution, self._published_strides())

    def _published_strides(self) -> list[int]:
        raise NotImplementedError

    def _build_layers(self) -> list[LayerSpec]:
        blocks = [(c_in, c_out, stride, size) for kind, c_in, c_out, stride, size in self._plan if kind == "dag"]
        return [LayerSpec(i, c, c, 1, size, size, self.ops, True) for i, (c, _, _, size) in enumerate(blocks)]

    @property
    def stem_out_channels(self) -> int:
        return self._stage_layout()[0][0]

    @property
    def head_in_shape(self) -> tuple[int, int, int]:
        _, _, c_out, stride, size = self._plan[-1]
        return (c_out, conv_out(size, stride), conv_out(size, stride))

    # -- part keys ----------------------------------------------------------------------
    @staticmethod
    def op_key(op: str, channels: int, size: int) -> str:
        return OpSpec(op, channels, channels, 1, size, size).key

    @staticmethod
    def concat_key(width: int, channels: int, size: int) -> str:
        """The 1x1 projection over ``width`` concatenated op outputs."""
        return OpSpec(f"cat{width}_1x1", width * channels, channels, 1, size, size).key

    @staticmethod
    def add_key(channels: int, size: int) -> str:
        """One add of two tensors at a block's shape (a partial sum of op inputs, or the residual)."""
        return OpSpec("add", channels, channels, 1, size, size).key

    @staticmethod
    def reduction_key(c_in: int, c_out: int, stride: int, size: int) -> str:
        return OpSpec("reduce", c_in, c_out, stride, size, size).key

    def fixed_part_keys(self) -> list[str]:
        """The reductions, in order (the stem and head have keys of their own)."""
        return [
            self.reduction_key(c_in, c_out, stride, size) for kind, c_in, c_out, stride, size in self._plan if kind == "reduce"
        ]

    def block_parts(self, index: int, kept: Sequence[bool]) -> list[str]:
        """The keys block ``index`` runs with edges ``kept``: each live op, the projection at its width, each add."""
        layer = self.layers[index]
        live, canonical = self.graph.pruned(kept)
        keys = [self.op_key(self.ops[self.graph.op_slot(node)], layer.c_in, layer.h) for node in live]
        width = len(self.graph.concat_edges(canonical))
        if width:
            keys.append(self.concat_key(width, layer.c_in, layer.h))
        keys += [self.add_key(layer.c_in, layer.h)] * self.graph.sums_of(live, canonical)
        return keys

    def parts(self) -> list[Part]:
        """Every op and an add at every block shape, the projection at every concatenation width 1..M*N, the reductions."""
        unique: dict[str, Part] = {}
        shapes = dict.fromkeys((layer.c_in, layer.h) for layer in self.layers)
        for channels, size in shapes:
            key = self.add_key(channels, size)
            unique[key] = Part(key, AddChain, (channels, size, size), repeats=AddChain.adds)
            for op in self.ops:
                key = self.op_key(op, channels, size)
                unique[key] = Part(key, lambda op=op, c=channels: self.build_op(op, c), (channels, size, size))
            for width in range(1, self.graph.n_ops + 1):
                key = self.concat_key(width, channels, size)
                unique[key] = Part(key, lambda w=width, c=channels: _projection(w * c, c), (width * channels, size, size))
        for kind, c_in, c_out, stride, size in self._plan:
            if kind == "reduce":
                key = self.reduction_key(c_in, c_out, stride, size)
                unique[key] = Part(key, lambda a=c_in, b=c_out, s=stride: self.build_reduction(a, b, s), (c_in, size, size))
        return list(unique.values())

    def run_parts(self, choices: Sequence[str]) -> list[str]:
        return [key for index, kept in enumerate(self.masks(choices)) for key in self.block_parts(index, kept)]

    # -- choices: one edge mask per block -------------------------------------------------
    def masks(self, choices: Sequence[str]) -> list[tuple[bool, ...]]:
        """The edge mask of every searchable block (``choices`` validated)."""
        self.validate(choices)
        return [self.graph.decode(choice) for choice in choices]

    def choices_of(self, masks: Sequence[Sequence[bool]], canonical: bool = True) -> tuple[str, ...]:
        """The choices keeping edges ``masks`` (one per block), isolated ops' edges dropped unless ``canonical`` is False."""
        if len(masks) != len(self.layers):
            raise HwnasError(f"{len(masks)} edge masks for {len(self.layers)} blocks")
        return tuple(self.graph.encode(self.graph.canonical(kept) if canonical else kept) for kept in masks)

    def canonical(self, choices: Sequence[str]) -> tuple[str, ...]:
        """``choices`` with the edges of isolated ops removed: the same net, one spelling."""
        return self.choices_of(self.masks(choices))

    def full_choices(self) -> tuple[str, ...]:
        """Every edge kept: the supernet's net, the slowest."""
        return self.choices_of([[True] * len(self.graph.edges)] * len(self.layers))

    def empty_choices(self) -> tuple[str, ...]:
        """Every block the identity: the fastest net."""
        return self.choices_of([[False] * len(self.graph.edges)] * len(self.layers))

    def random_choices(self, rng: random.Random) -> tuple[str, ...]:
        """Each edge kept with one probability drawn per arch from [0.05, 0.95] (so random archs span the space's sizes), canonical."""
        keep = rng.uniform(0.05, 0.95)
        edges = len(self.graph.edges)
        return tuple(self.graph.encode(self.graph.canonical([rng.random() < keep for _ in range(edges)])) for _ in self.layers)

    def count_archs(self) -> float:
        return float(2 ** (len(self.graph.edges) * len(self.layers)))

    def validate(self, choices: Sequence[str]) -> None:
        self._check_length(choices, "blocks")
        for index, choice in enumerate(choices):
            self.graph.decode(choice, f"block {index}")

    # -- nets -----------------------------------------------------------------------------
    def build(self, choices: Sequence[str]) -> DagNet:
        """The net of ``choices``: each block with only its live ops and kept edges, the projection as wide as its inputs."""
        masks = self.masks(choices)
        blocks: list[nn.Module] = []
        index = 0
        for kind, c_in, c_out, stride, _ in self._plan:
            if kind == "reduce":
                blocks.append(self.build_reduction(c_in, c_out, stride))
            else:
                kept = self.graph.canonical(masks[index])
                blocks.append(DagBlock(self.graph, kept, c_in, lambda slot, c=c_in: self.build_op(self.ops[slot], c)))
                index += 1
        return DagNet(self.build_stem(), blocks, self.build_head())

    def fixed_cost(self) -> Cost:
        """Stem, head and the reductions."""
        return super().fixed_cost() + self._parts_cost(self.fixed_part_keys())

    def block_cost(self, index: int, kept: Sequence[bool]) -> Cost:
        """FLOPs and params of block ``index`` with edges ``kept`` (its live ops and projection)."""
        return self._parts_cost(self.block_parts(index, kept))

    def cost(self, choices: Sequence[str]) -> Cost:
        """FLOPs and params of the net of ``choices``: the fixed parts plus every part it runs."""
        return self.fixed_cost() + self._parts_cost(self.run_parts(choices))


class AddChain(nn.Module):
    """What a block's partial sums cost, timed alone: ``adds`` adds in a chain, each of the running sum and the input.

    One add alone is timed at less than half of what it costs in a net: beside the runtime's
    per-call cost (taken off once per entry) it is too small to time apart. A chain spreads
    that cost over ``adds`` (``Part.repeats``), as a block spreads it over its sums.
    """

    adds = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x
        for _ in range(self.adds):
            total = total + x
        return total


def _projection(c_in: int, c_out: int) -> nn.Module:
    """The block output's 1x1 conv + BN over a concatenation of ``c_in`` channels (as ``DagBlock`` builds it)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
