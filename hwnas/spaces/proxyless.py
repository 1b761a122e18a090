"""The ProxylessNAS MBConv space (and GreedyNAS's variant of it with an identity choice), from their space files.

``builtin/proxyless.toml``: stem 3x3 conv 32 s2, a fixed MBConv1 k3 to 16 channels, 21 searchable
layers in six stages, 1x1 conv to 1280, global pool, linear: the layout of ProxylessNAS-Mobile.
``builtin/proxyless-greedy.toml``: the same layers with ``identity`` as the seventh choice.
"""

from __future__ import annotations

from hwnas.spaces.file_space import FileSpace
from hwnas.spaces.space_file import builtin_space_file


class ProxylessSpace(FileSpace):
    definition = builtin_space_file("proxyless")
    builtin = True


class ProxylessGreedySpace(ProxylessSpace):
    """GreedyNAS's space: the same 21 layers with ``identity`` as the seventh choice."""

    definition = builtin_space_file("proxyless-greedy")
