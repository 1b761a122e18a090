"""The SPOS / DSNAS ShuffleNetV2 space: 20 layers, four choice blocks each (4^20 architectures)."""

from __future__ import annotations

from torch import nn

from hwnas.spaces.base import ChainSpace, LayerSpec, adapt_strides, conv_out
from hwnas.spaces.blocks import Classifier, ShuffleChoice, conv_bn

#: (output channels, blocks); the first block of every stage has stride 2.
STAGES = ((64, 4), (160, 4), (320, 8), (640, 4))
STEM_CHANNELS, HEAD_CHANNELS = 16, 1024
SHUFFLE_OPS = ("shuffle_k3", "shuffle_k5", "shuffle_k7", "shuffle_x")


class ShuffleNetSpace(ChainSpace):
    name = "shufflenet"
    description = "SPOS/DSNAS ShuffleNetV2 space: 20 layers, Choice_3/5/7/x (ECCV 2020, CVPR 2020)"

    def _strides(self) -> list[int]:
        return adapt_strides(self.args.resolution, [2] * (1 + len(STAGES)))

    @property
    def stem_out_channels(self) -> int:
        return self.width(STEM_CHANNELS)

    def _build_layers(self) -> list[LayerSpec]:
        stem_stride, *stage_strides = self._strides()
        size = conv_out(self.args.resolution, stem_stride)
        c_in = self.stem_out_channels
        layers = []
        for (channels, blocks), first_stride in zip(STAGES, stage_strides):
            c_out = self.width(channels)
            for block in range(blocks):
                stride = first_stride if block == 0 else 1
                layers.append(LayerSpec(len(layers), c_in, c_out, stride, size, size, SHUFFLE_OPS, False))
                size, c_in = conv_out(size, stride), c_out
        return layers

    def build_stem(self) -> nn.Module:
        return conv_bn(self.args.in_channels, self.stem_out_channels, 3, self._strides()[0], activation=nn.ReLU)

    def build_head(self) -> nn.Module:
        c_last, head = self.layers[-1].c_out, self.width(HEAD_CHANNELS)
        # SPOS's classifier has no bias
        return nn.Sequential(conv_bn(c_last, head, 1, activation=nn.ReLU), Classifier(head, self.args.num_classes, bias=False))

    def _build_op(self, layer: LayerSpec, op: str) -> nn.Module:
        if op == "shuffle_x":
            return ShuffleChoice(layer.c_in, layer.c_out, layer.stride, kernel=3, xception=True)
        return ShuffleChoice(layer.c_in, layer.c_out, layer.stride, kernel=int(op.removeprefix("shuffle_k")))
