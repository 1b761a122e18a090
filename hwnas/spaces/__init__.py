"""Search spaces. ``SPACES`` maps a space name to its class; adding a space is adding a module."""

from __future__ import annotations

from typing import Any

from hwnas.errors import HwnasError
from hwnas.spaces.base import SKIP_OPS, ChainSpace, LayerSpec, OpSpec, Part, Space, SpaceArgs
from hwnas.spaces.cost import Cost
from hwnas.spaces.dag import DagSpace
from hwnas.spaces.dsonas import DsoNasSmallSpace, DsoNasSpace
from hwnas.spaces.nb201 import Nb201Space
from hwnas.spaces.proxyless import ProxylessGreedySpace, ProxylessSpace
from hwnas.spaces.shufflenet import ShuffleNetSpace

SPACES: dict[str, type[Space]] = {
    ProxylessSpace.name: ProxylessSpace,
    ProxylessGreedySpace.name: ProxylessGreedySpace,
    ShuffleNetSpace.name: ShuffleNetSpace,
    DsoNasSpace.name: DsoNasSpace,
    DsoNasSmallSpace.name: DsoNasSmallSpace,
    Nb201Space.name: Nb201Space,
}


def get_space(name: str, **space_args: Any) -> Space:
    """The space ``name`` built with ``space_args`` (resolution, num_classes, in_channels, width_mult)."""
    if name not in SPACES:
        raise HwnasError(f"unknown space {name!r}; known: {', '.join(SPACES)}")
    unknown = set(space_args) - set(SpaceArgs.__dataclass_fields__)
    if unknown:
        raise HwnasError(
            f"unknown space option(s) {', '.join(sorted(unknown))}; known: {', '.join(SpaceArgs.__dataclass_fields__)}"
        )
    return SPACES[name](SpaceArgs(**space_args))


__all__ = [
    "SPACES",
    "SKIP_OPS",
    "ChainSpace",
    "Cost",
    "DagSpace",
    "LayerSpec",
    "OpSpec",
    "Part",
    "Space",
    "SpaceArgs",
    "get_space",
]
