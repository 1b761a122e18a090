"""The supernet: every candidate op of every layer, weights shared across architectures.

Which paths run is an explicit argument of ``forward`` (one ``PathChoice`` per layer), never a
mode stored on the module: ProxylessNAS runs one path for weight steps and two gated paths for
arch steps, SNAS a Gumbel-weighted sum of all, DSNAS one path times a dummy 1. A later method
(SPOS, GreedyNAS, DSO-NAS) only builds different ``PathChoice`` lists.

Columns are indices into ``space.candidates`` (the column order of alpha and of the latency
tensor), so ``alpha[l, k]``, ``latency_ms[l, k]`` and ``PathChoice.columns`` agree everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.spaces import SKIP_OPS, ChainSpace, LayerSpec
from hwnas.spaces.base import ChildNet


@dataclass(frozen=True)
class PathChoice:
    """Which candidates of one layer run and how their outputs are combined.

    ``columns``: candidate columns to run. ``multipliers``: None (a single path, output as
    is) or a 1-D tensor, one factor per column (gates, Gumbel weights, DSNAS's dummy Z).
    ``detached``: columns whose output is used without a gradient to the op's weights (the
    inactive path of a ProxylessNAS arch step: only its gate needs dL/dg).
    """

    columns: tuple[int, ...]
    multipliers: torch.Tensor | None = None
    detached: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def single(cls, column: int, multiplier: torch.Tensor | None = None) -> PathChoice:
        return cls((column,), None if multiplier is None else multiplier.reshape(1))

    @classmethod
    def gated(cls, columns: tuple[int, ...], gates: torch.Tensor, active: int) -> PathChoice:
        return cls(tuple(columns), gates, frozenset(c for c in columns if c != active))

    @classmethod
    def weighted(cls, columns: tuple[int, ...], weights: torch.Tensor) -> PathChoice:
        return cls(tuple(columns), weights)


@torch.no_grad()
def nest_into(small: nn.Module, large: nn.Module) -> bool:
    """Make ``large`` compute what ``small`` computes, where ``small``'s tensors fit inside ``large``'s.

    Both must have the same parameter and buffer names, each tensor of ``small`` no larger in
    any dimension. A tensor of ``small`` is copied into the leading slice of ``large``'s
    (kernels centred); the rest of the output rows it fills is zeroed, so the extra inputs of
    ``large`` (more hidden channels, the outer ring of a bigger kernel) contribute nothing;
    extra output rows keep their random init. For MBConv and ShuffleNet's ``Choice_k`` blocks
    the two then give the same output, in training and eval mode. Returns False (and changes
    nothing) where the shapes do not nest, e.g. ``shuffle_x`` against ``shuffle_k3``.
    """
    pairs = []
    small_tensors = dict(small.named_parameters()) | dict(small.named_buffers())
    large_tensors = dict(large.named_parameters()) | dict(large.named_buffers())
    if small_tensors.keys() != large_tensors.keys():
        return False
    for name, source in small_tensors.items():
        target = large_tensors[name]
        if source.dim() != target.dim() or any(s > t for s, t in zip(source.shape, target.shape)):
            return False
        pairs.append((source, target))
    for source, target in pairs:
        if source.dim() == 0:
            target.copy_(source)
            continue
        if source.dim() > 1:
            target[: source.shape[0]].zero_()
        window = [slice(0, n) for n in source.shape[:2]] + [
            slice((t - s) // 2, (t - s) // 2 + s) for s, t in zip(source.shape[2:], target.shape[2:])
        ]
        target[tuple(window)] = source
    return True


class MixedOp(nn.Module):
    """All candidates of one layer; the layer's shortcut lies outside them (ProxylessNAS's MixedEdge).

    A skip candidate (``zero``/``identity``) contributes nothing, so it is never run: its
    output is zero and so is the gradient of its multiplier.

    The candidates start as one function: every one whose shapes contain the smallest
    candidate's (``nest_into``) is initialised to compute exactly what it computes, and they
    part as each is trained. With independent random inits, the path that changes every step
    hands the next layer unrelated features each time and the supernet learns far slower
    than any one child (see ``docs/search.md``). Only the initial values differ from the
    papers' (independent candidates); the ops, their weights and the updates are theirs.
    """

    def __init__(self, space: ChainSpace, layer: LayerSpec) -> None:
        super().__init__()
        columns = space.candidates
        self.shortcut = layer.shortcut
        self.names = {columns.index(op): op for op in layer.candidates}
        self.ops = nn.ModuleDict({op: space.build_op(layer.index, op) for op in layer.candidates if op not in SKIP_OPS})
        if self.ops:
            smallest = min(self.ops.values(), key=lambda op: sum(p.numel() for p in op.parameters()))
            for op in self.ops.values():
                if op is not smallest:
                    nest_into(smallest, op)

    def forward(self, x: torch.Tensor, choice: PathChoice) -> torch.Tensor:
        if choice.multipliers is not None and choice.multipliers.shape != (len(choice.columns),):
            raise HwnasError(f"{len(choice.columns)} paths need as many multipliers, got shape {tuple(choice.multipliers.shape)}")
        out: torch.Tensor | None = None
        for i, column in enumerate(choice.columns):
            name = self.names.get(column)
            if name is None:
                raise HwnasError(f"column {column} is not a candidate of this layer ({sorted(self.names)})")
            if name in SKIP_OPS:
                continue
            path = self.ops[name](x)
            if column in choice.detached:
                path = path.detach()
            if choice.multipliers is not None:
                path = path * choice.multipliers[i]
            out = path if out is None else out + path
        if out is None:  # only skip ops ran: the layer is its shortcut
            return x
        return out + x if self.shortcut else out


class Supernet(nn.Module):
    """stem -> one ``MixedOp`` per searchable layer -> head; ``forward(x, choices)``."""

    def __init__(self, space: ChainSpace) -> None:
        super().__init__()
        self.space = space
        self.stem = space.build_stem()
        self.layers = nn.ModuleList(MixedOp(space, layer) for layer in space.layers)
        self.head = space.build_head()

    def forward(self, x: torch.Tensor, choices: list[PathChoice]) -> torch.Tensor:
        if len(choices) != len(self.layers):
            raise HwnasError(f"supernet has {len(self.layers)} layers, got {len(choices)} path choices")
        x = self.stem(x)
        for layer, choice in zip(self.layers, choices):
            x = layer(x, choice)
        return self.head(x)

    def arch_choices(self, arch: Arch) -> list[PathChoice]:
        """The single-path choices of ``arch``: the supernet then computes exactly its child net."""
        columns = self.space.candidates
        return [PathChoice.single(columns.index(op)) for op in arch.choices_in(self.space)]

    def child_state_dict(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The state dict of ``space.build(arch.choices)`` filled with this supernet's shared weights."""
        choices = arch.choices_in(self.space)
        state: dict[str, torch.Tensor] = {}
        for prefix in ("stem", "head"):
            for key, value in getattr(self, prefix).state_dict().items():
                state[f"{prefix}.{key}"] = value.clone()
        for index, (layer, op) in enumerate(zip(self.layers, choices)):
            if op in SKIP_OPS:
                continue
            for key, value in layer.ops[op].state_dict().items():
                state[f"layers.{index}.op.{key}"] = value.clone()
        return state

    def extract_child(self, arch: Arch) -> ChildNet:
        """The child net of ``arch`` with inherited weights (loaded strictly: every key must match)."""
        child = self.space.build(arch.choices_in(self.space))
        child.load_state_dict(self.child_state_dict(arch), strict=True)
        return child


def legal_columns(mask: torch.Tensor) -> list[tuple[int, ...]]:
    """Per layer, the candidates (columns) a legality mask ``[layers, candidates]`` allows."""
    return [tuple(int(c) for c in torch.nonzero(row).flatten()) for row in mask]


class ArchParameters(nn.Module):
    """alpha [layers, candidates] with the legality mask; illegal entries get probability 0."""

    def __init__(self, space: ChainSpace) -> None:
        super().__init__()
        self.register_buffer("mask", space.candidate_mask())
        self.alpha = nn.Parameter(torch.zeros(self.mask.shape))

    def masked(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """``values`` (default alpha) with illegal entries at -inf, ready for softmax."""
        values = self.alpha if values is None else values
        return values.masked_fill(~self.mask, float("-inf"))

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.masked(), dim=1)

    def log_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.masked(), dim=1)

    def argmax_columns(self) -> list[int]:
        return self.masked().argmax(dim=1).tolist()

    def entropy(self) -> float:
        """Mean per-layer entropy of p in nats (0: decided; log K: uniform)."""
        probs = self.probs().detach()
        terms = torch.where(probs > 0, probs * probs.clamp_min(1e-30).log(), torch.zeros_like(probs))
        return float(-terms.sum(dim=1).mean())
