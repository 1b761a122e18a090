"""The building blocks of the chain spaces: conv-BN-activation, MBConv, ShuffleNetV2 choice blocks.

Every block is an ordinary ``nn.Module`` whose output shape follows from its constructor
arguments alone, so the same module serves the child net, the supernet and the profiler.
"""

from __future__ import annotations

import torch
from torch import nn


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never losing more than 10 %.

    The MobileNet rule, used by ProxylessNAS and timm for width multipliers.
    """
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, activation: type[nn.Module] | None = None
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm (+ activation): the unit every block is made of."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """MobileNetV2 inverted bottleneck: 1x1 expand -> kxk depthwise -> 1x1 linear projection.

    ReLU6 after the first two convs, none after the projection (ProxylessNAS). With
    ``expand == 1`` the expansion conv is left out, as in ProxylessNAS's first block. The
    residual is not part of the block: the layer that holds it adds the shortcut, so a
    mixed op can put the shortcut outside its candidates (ProxylessNAS's MixedEdge).

    ``zero_init_last`` starts the projection's BN scale at 0, so a block on a shortcut begins
    as the identity (Goyal et al. 2017, timm's ``zero_init_last``). ProxylessNAS initialises
    it to 1; in a supernet each of a layer's seven choices then adds its own unit-variance
    term to the shortcut, and which one changes every step: a uniformly sampled proxyless
    supernet stayed at 0.09-0.16 train accuracy on digits after 400 steps of batch 64.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expand: int, zero_init_last: bool = False) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(c_in, hidden, 1, activation=nn.ReLU6))
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, activation=nn.ReLU6))
        layers.append(conv_bn(hidden, c_out, 1))
        self.body = nn.Sequential(*layers)
        if zero_init_last:
            nn.init.zeros_(self.body[-1][1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def split_channels(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ShuffleNetV2's channel split after a shuffle of two groups: even channels, odd channels.

    Equivalent to SPOS's reshape/permute ``channel_shuffle``; strided slices export to ONNX
    as two Slice nodes.
    """
    return x[:, 0::2], x[:, 1::2]


class ShuffleChoice(nn.Module):
    """A ShuffleNetV2 block (SPOS / DSNAS choice block): a main branch beside a pass-through half.

    Inside a stage (``project == False``, stride 1, C_in == C_out) the input is shuffled and
    split; one half passes untouched, the other goes through the main branch. The first
    block of a stage (``project == True``) sends the whole input through the main branch and
    through a projection branch (depthwise k x k with the block's stride, then 1x1), and the
    two are concatenated. The main branch is ``pw -> dw k x k -> pw`` (Choice_k) or, for
    ``xception``, three ``dw 3x3 -> pw`` pairs (Choice_x).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, xception: bool = False) -> None:
        super().__init__()
        self.project = stride != 1 or c_in != c_out
        branch_in = c_in if self.project else c_in // 2
        branch_out = c_out - branch_in
        mid = c_out // 2
        if xception:
            kernel = 3
            self.main = nn.Sequential(
                conv_bn(branch_in, branch_in, 3, stride, groups=branch_in),
                conv_bn(branch_in, mid, 1, activation=nn.ReLU),
                conv_bn(mid, mid, 3, groups=mid),
                conv_bn(mid, mid, 1, activation=nn.ReLU),
                conv_bn(mid, mid, 3, groups=mid),
                conv_bn(mid, branch_out, 1, activation=nn.ReLU),
            )
        else:
            self.main = nn.Sequential(
                conv_bn(branch_in, mid, 1, activation=nn.ReLU),
                conv_bn(mid, mid, kernel, stride, groups=mid),
                conv_bn(mid, branch_out, 1, activation=nn.ReLU),
            )
        self.projection = (
            nn.Sequential(
                conv_bn(c_in, c_in, kernel, stride, groups=c_in),
                conv_bn(c_in, c_in, 1, activation=nn.ReLU),
            )
            if self.project
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            return torch.cat((self.projection(x), self.main(x)), 1)
        passed, branch = split_channels(x)
        return torch.cat((passed, self.main(branch)), 1)


class Zero(nn.Module):
    """The candidate that contributes nothing: with the layer's shortcut, the layer is the identity.

    Only the supernet ever runs it (a child net replaces the whole layer by ``nn.Identity``).
    The output has the input's shape, which is why it is legal only where stride is 1 and
    C_in == C_out.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class Classifier(nn.Module):
    """The shared head tail: global average pool, flatten, linear."""

    def __init__(self, channels: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(x), 1))
