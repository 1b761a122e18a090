"""The DSO-NAS supernet: the completely connected net of a DAG space, every edge scaled by its lambda.

``forward(x, lam)`` takes one lambda vector per searchable block (``EdgeScales.alpha``); an
edge with lambda 0 is dropped and the ops it isolates are skipped (``DagBlock.forward``), so
the supernet computes exactly what the pruned net computes. BatchNorm scales are fixed to 1
(not trained), as in the paper's pre-training and search stages, so that a BN scale cannot
take over the role of lambda.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.spaces.dag import DagBlock, DagNet, DagSpace


class EdgeScales(nn.Module):
    """lambda [blocks, edges], initialised to 1; named ``alpha`` as every method's architecture parameters."""

    def __init__(self, space: DagSpace) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(len(space.layers), len(space.graph.edges)))


class EdgeSupernet(nn.Module):
    """stem -> every block completely connected (reductions between) -> head; ``forward(x, lam)``."""

    def __init__(self, space: DagSpace) -> None:
        super().__init__()
        if not isinstance(space, DagSpace):
            raise HwnasError(f"space {space.name!r} is not a DAG-block space: DSO-NAS searches the edges of dsonas spaces")
        self.space = space
        self.net: DagNet = space.build(space.full_choices())
        for module in self.net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor, lam: torch.Tensor | list[torch.Tensor] | None) -> torch.Tensor:
        """``lam[b]``: the scales of block ``b``'s edges (None: every edge at 1)."""
        if lam is not None and len(lam) != len(self.net.searchable):
            raise HwnasError(f"supernet has {len(self.net.searchable)} blocks, got {len(lam)} lambda rows")
        return self.net(x, None if lam is None else list(lam))

    def child_state_dict(self, arch: Arch, lam: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The state dict of ``space.build(arch.choices)`` from the supernet's weights.

        The built net runs every edge at scale 1 (``DagBlock``). Where that can be exact, the
        edge's lambda (``lam[b]``, None: 1) is folded into the child's weights: an edge into the
        block output scales its slice of the concatenation, so its lambda multiplies those
        input columns of the 1x1 projection. An edge into an op shares its sum with others and
        has no weight of its own: it runs at 1 in the child (the paper retrains the pruned net).
        """
        child = self.space.build(arch.choices_in(self.space))
        source = self.net.state_dict()
        state: dict[str, torch.Tensor] = {}
        searchable = 0
        for index, (full, small) in enumerate(zip(self.net.blocks, child.blocks)):
            prefix = f"blocks.{index}."
            if not isinstance(small, DagBlock):
                state.update({prefix + k: v.clone() for k, v in full.state_dict().items()})
                continue
            assert isinstance(full, DagBlock)
            for key in small.state_dict():
                value = source[prefix + key]
                if key == "project.0.weight":
                    slots = [full.concat.index(e) for e in small.concat]
                    columns = torch.cat([torch.arange(s * full.channels, (s + 1) * full.channels) for s in slots])
                    value = value.index_select(1, columns)
                    if lam is not None:
                        scale = lam[searchable].detach()[small.concat].to(value.dtype)
                        value = value * scale.repeat_interleave(full.channels).view(1, -1, 1, 1)
                state[prefix + key] = value.clone()
            searchable += 1
        for name in ("stem", "head"):
            state.update({k: v.clone() for k, v in source.items() if k.startswith(name + ".")})
        return state

    def extract_child(self, arch: Arch, lam: torch.Tensor | None = None) -> DagNet:
        """The net of ``arch`` with the supernet's weights, lambdas folded where exact (``child_state_dict``)."""
        child = self.space.build(arch.choices_in(self.space))
        child.load_state_dict(self.child_state_dict(arch, lam), strict=True)
        return child
