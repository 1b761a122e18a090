"""The supernet of a cell space (``nb201``): every op on every edge of every cell, the edges' choices shared by all cells.

NB201's 15 cells share one cell structure, so one ``PathChoice`` per edge (6 in all) picks
the paths of that edge in every cell, as DARTS-style searches over NB201 do; each cell keeps
its own weights. ``forward(x, choices)`` has the chain ``Supernet``'s signature, so the
chain methods (ProxylessNAS, SNAS, DSNAS, SPOS, GreedyNAS, random) search the 6 edges as
their 6 layers. ``none`` contributes nothing (its multiplier gets no gradient), as a skip
op in the chain ``MixedOp``; ``skip_connect`` passes its input on, times its multiplier.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.search.supernet import PathChoice
from hwnas.spaces.nb201 import CELLS_PER_STAGE, EDGES, NB201_OPS, Nb201Net, Nb201Space, ResidualReduction, build_edge_op


class SharedEdge(nn.Module):
    """One edge across all cells: ``ops[name][cell]``, every op but ``none``."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({op: nn.ModuleList(build_edge_op(op, c) for c in channels) for op in NB201_OPS if op != "none"})


class CellSupernet(nn.Module):
    """stem -> cells of mixed edges and the reductions -> head; ``forward(x, choices)``, one choice per edge."""

    def __init__(self, space: Nb201Space) -> None:
        super().__init__()
        self.space = space
        stages = space.stages()
        channels = [c for c, _ in stages for _ in range(CELLS_PER_STAGE)]
        self.stem = space.build_stem()
        self.layers = nn.ModuleList(SharedEdge(channels) for _ in EDGES)
        self.reductions = nn.ModuleList(ResidualReduction(stages[s - 1][0], stages[s][0]) for s in range(1, len(stages)))
        self.head = space.build_head()

    def _edge(self, edge: int, cell: int, x: torch.Tensor, choice: PathChoice) -> torch.Tensor | None:
        names = self.space.candidates
        if choice.multipliers is not None and choice.multipliers.shape != (len(choice.columns),):
            raise HwnasError(f"{len(choice.columns)} paths need as many multipliers, got shape {tuple(choice.multipliers.shape)}")
        out = None
        for i, column in enumerate(choice.columns):
            name = names[column]
            if name == "none":
                continue
            path = self.layers[edge].ops[name][cell](x)
            if column in choice.detached:
                path = path.detach()
            if choice.multipliers is not None:
                path = path * choice.multipliers[i]
            out = path if out is None else out + path
        return out

    def forward(self, x: torch.Tensor, choices: list[PathChoice]) -> torch.Tensor:
        if len(choices) != len(EDGES):
            raise HwnasError(f"supernet has {len(EDGES)} edges, got {len(choices)} path choices")
        x = self.stem(x)
        cell = 0
        for stage in range(len(self.space.stages())):
            if stage:
                x = self.reductions[stage - 1](x)
            for _ in range(CELLS_PER_STAGE):
                nodes = {0: x}
                for node in (1, 2, 3):
                    total = None
                    for e, (src, dst) in enumerate(EDGES):
                        if dst == node:
                            value = self._edge(e, cell, nodes[src], choices[e])
                            if value is not None:
                                total = value if total is None else total + value
                    nodes[node] = x * 0.0 if total is None else total  # NB201's none: x.mul(0.), an op of the input
                x, cell = nodes[3], cell + 1
        return self.head(x)

    def arch_choices(self, arch: Arch) -> list[PathChoice]:
        columns = self.space.candidates
        return [PathChoice.single(columns.index(op)) for op in arch.choices_in(self.space)]

    def child_state_dict(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The state dict of ``space.build(arch.choices)`` from the shared weights (only the edges the child keeps)."""
        child: Nb201Net = self.space.build(arch.choices_in(self.space))
        source = self.state_dict()
        state = {k: v.clone() for k, v in source.items() if k.startswith(("stem.", "head."))}
        cell = reduction = 0
        for index, block in enumerate(child.blocks):
            prefix = f"blocks.{index}."
            if isinstance(block, ResidualReduction):
                for key in block.state_dict():
                    state[prefix + key] = source[f"reductions.{reduction}.{key}"].clone()
                reduction += 1
                continue
            for e in block.kept:
                op = arch.choices[e]
                for key in block.edges[str(e)].state_dict():
                    state[f"{prefix}edges.{e}.{key}"] = source[f"layers.{e}.ops.{op}.{cell}.{key}"].clone()
            cell += 1
        return state

    def extract_child(self, arch: Arch) -> Nb201Net:
        child = self.space.build(arch.choices_in(self.space))
        child.load_state_dict(self.child_state_dict(arch), strict=True)
        return child
