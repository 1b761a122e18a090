"""The ProxylessNAS MBConv space (and GreedyNAS's variant of it with an identity choice).

Stem 3x3 conv 32 s2, a fixed MBConv1 k3 to 16 channels, 21 searchable layers in six stages,
1x1 conv to 1280, global pool, linear: the layout of ProxylessNAS-Mobile.
"""

from __future__ import annotations

import re

from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces.base import SKIP_OPS, ChainSpace, LayerSpec, adapt_strides, conv_out
from hwnas.spaces.blocks import Classifier, MBConv, Zero, conv_bn

#: (output channels, blocks, stride of the first block), ProxylessNAS-Mobile.
STAGES = ((32, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))
STEM_CHANNELS, FIRST_BLOCK_CHANNELS, HEAD_CHANNELS = 32, 16, 1280
MBCONV_OPS = ("mb3_k3", "mb3_k5", "mb3_k7", "mb6_k3", "mb6_k5", "mb6_k7")
_MBCONV_NAME = re.compile(r"mb(\d+)_k(\d+)")


def parse_mbconv(op: str) -> tuple[int, int]:
    """``mb6_k5`` -> (expand 6, kernel 5)."""
    match = _MBCONV_NAME.fullmatch(op)
    if match is None:
        raise HwnasError(f"not an MBConv op name: {op!r} (expected mb<expand>_k<kernel>, e.g. mb6_k5)")
    return int(match.group(1)), int(match.group(2))


class ProxylessSpace(ChainSpace):
    name = "proxyless"
    description = "ProxylessNAS MBConv space: 21 layers, MBConv {3,5,7} x {3,6} + zero (ICLR 2019)"
    #: the op that prunes a layer down to its shortcut
    skip_op = "zero"

    def _strides(self) -> list[int]:
        """[stem, first block of each stage], adapted to small inputs (see ``adapt_strides``)."""
        return adapt_strides(self.args.resolution, [2] + [stride for _, _, stride in STAGES])

    @property
    def stem_out_channels(self) -> int:
        return self.width(FIRST_BLOCK_CHANNELS)

    def _build_layers(self) -> list[LayerSpec]:
        stem_stride, *stage_strides = self._strides()
        size = conv_out(self.args.resolution, stem_stride)
        c_in = self.stem_out_channels
        layers = []
        for (channels, blocks, _), first_stride in zip(STAGES, stage_strides):
            c_out = self.width(channels)
            for block in range(blocks):
                stride = first_stride if block == 0 else 1
                shortcut = stride == 1 and c_in == c_out
                candidates = MBCONV_OPS + ((self.skip_op,) if shortcut else ())
                layers.append(LayerSpec(len(layers), c_in, c_out, stride, size, size, candidates, shortcut))
                size, c_in = conv_out(size, stride), c_out
        return layers

    def build_stem(self) -> nn.Module:
        stem_stride = self._strides()[0]
        stem = self.width(STEM_CHANNELS)
        return nn.Sequential(
            conv_bn(self.args.in_channels, stem, 3, stem_stride, activation=nn.ReLU6),
            MBConv(stem, self.stem_out_channels, stride=1, kernel=3, expand=1),
        )

    def build_head(self) -> nn.Module:
        c_last, head = self.layers[-1].c_out, self.width(HEAD_CHANNELS)
        return nn.Sequential(conv_bn(c_last, head, 1, activation=nn.ReLU6), Classifier(head, self.args.num_classes))

    def _build_op(self, layer: LayerSpec, op: str) -> nn.Module:
        if op in SKIP_OPS:
            return Zero()
        expand, kernel = parse_mbconv(op)
        return MBConv(layer.c_in, layer.c_out, layer.stride, kernel, expand, zero_init_last=layer.shortcut)


class ProxylessGreedySpace(ProxylessSpace):
    """GreedyNAS's space: the same 21 layers with ``identity`` as the seventh choice."""

    name = "proxyless-greedy"
    description = "GreedyNAS space: the ProxylessNAS layers, 6 MBConv + identity (CVPR 2020)"
    skip_op = "identity"
