"""The DSO-NAS space (Zhang et al., ICLR 2019 submission, https://arxiv.org/abs/1811.01567): stages of completely connected blocks.

Each block holds M = 4 levels of N = 4 ops, separable conv 3x3 and 5x5, max pool and average
pool 3x3 (the paper's Sec. 3.2, from ENAS), every op connected to the block input and to
every op of the earlier levels; the block output is a 1x1 conv over the concatenation of all
ops, plus the block input (``hwnas.spaces.dag``). Convolutions are Conv-BN-ReLU: a separable
conv is depthwise k x k, pointwise 1x1, BN, ReLU. A reduction block, between stages, is the
sum of a 1x1 and a 3x3 conv (each Conv-BN-ReLU) with stride 2, doubling the channels.

Macro-structure, as in the paper's Fig. 3: below 128 pixels, the CIFAR net (stem 3x3 conv,
three stages of 8 blocks, channels 32 / 64 / 128); from 128 pixels, the ImageNet net (two
stride-2 stem convs, four stages of 2, 2, 13 and 6 blocks, channels 48 / 96 / 192 / 384). The
paper gives neither the CIFAR channels nor the ImageNet stem; these are this project's.
``--width-mult`` scales every channel count, strides adapt to small inputs as in the chain
spaces. ``dsonas-small`` is the same net with 2 blocks per stage (1, 1, 2, 1 on ImageNet):
the depth a CPU searches in minutes.
"""

from __future__ import annotations

from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces.blocks import Classifier, conv_bn
from hwnas.spaces.dag import BlockGraph, DagSpace

DSO_OPS = ("sep_k3", "sep_k5", "max_k3", "avg_k3")
CIFAR_CHANNELS, IMAGENET_CHANNELS = (32, 64, 128), (48, 96, 192, 384)
#: inputs from this size on get the ImageNet macro-structure
IMAGENET_FROM = 128


class SepConv(nn.Module):
    """Depthwise k x k, pointwise 1x1, BN, ReLU (Conv-BN-ReLU order, as the paper states)."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel, 1, kernel // 2, groups=channels, bias=False)
        self.pointwise = conv_bn(channels, channels, 1, activation=nn.ReLU)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class Reduction(nn.Module):
    """The paper's reduction block: 1x1 and 3x3 convs with stride 2, channels doubled, outputs summed."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, 1, stride, activation=nn.ReLU)
        self.conv3 = conv_bn(c_in, c_out, 3, stride, activation=nn.ReLU)

    def forward(self, x):
        return self.conv1(x) + self.conv3(x)


class DsoNasSpace(DagSpace):
    name = "dsonas"
    description = "DSO-NAS space: blocks of 4 levels x 4 ops (sep 3/5, max/avg pool), every edge searchable (ICLR 2019 sub.)"
    graph = BlockGraph(levels=4, width=4)
    ops = DSO_OPS
    #: searchable blocks per stage: CIFAR, ImageNet
    cifar_blocks: tuple[int, ...] = (8, 8, 8)
    imagenet_blocks: tuple[int, ...] = (2, 2, 13, 6)

    @property
    def imagenet(self) -> bool:
        return self.args.resolution >= IMAGENET_FROM

    def _stage_layout(self) -> list[tuple[int, int]]:
        channels, blocks = (IMAGENET_CHANNELS, self.imagenet_blocks) if self.imagenet else (CIFAR_CHANNELS, self.cifar_blocks)
        return [(self.width(c), b) for c, b in zip(channels, blocks)]

    def _published_strides(self) -> list[int]:
        """[stem (both stem convs on ImageNet), then each reduction]."""
        stages = len(self._stage_layout())
        return [4 if self.imagenet else 1] + [2] * (stages - 1)

    def _strides(self) -> list[int]:
        if not self.imagenet:
            return super()._strides()
        # the two stride-2 stem convs count as one stride 4 (224 -> 56), as the published net
        return [4] + super()._strides()[1:]

    def _stem_stride(self) -> int:
        return self._strides()[0]

    def build_stem(self) -> nn.Module:
        c = self.stem_out_channels
        if self.imagenet:
            return nn.Sequential(
                conv_bn(self.args.in_channels, c // 2, 3, 2, activation=nn.ReLU), conv_bn(c // 2, c, 3, 2, activation=nn.ReLU)
            )
        return conv_bn(self.args.in_channels, c, 3, 1, activation=nn.ReLU)

    def build_head(self) -> nn.Module:
        return Classifier(self.head_in_shape[0], self.args.num_classes)

    def build_op(self, op: str, channels: int) -> nn.Module:
        if op == "sep_k3":
            return SepConv(channels, 3)
        if op == "sep_k5":
            return SepConv(channels, 5)
        if op == "max_k3":
            return nn.MaxPool2d(3, 1, 1)
        if op == "avg_k3":
            return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        raise HwnasError(f"space {self.name!r} has no op {op!r}; ops: {', '.join(self.ops)}")

    def build_reduction(self, c_in: int, c_out: int, stride: int) -> nn.Module:
        return Reduction(c_in, c_out, stride)


class DsoNasSmallSpace(DsoNasSpace):
    name = "dsonas-small"
    description = "The DSO-NAS space with 2 blocks per stage (CPU scale)"
    cifar_blocks = (2, 2, 2)
    imagenet_blocks = (1, 1, 2, 1)
