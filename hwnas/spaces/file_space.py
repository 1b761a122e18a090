"""A chain space built from a space file (``hwnas.spaces.space_file``): the built-in chain spaces and yours.

The layers follow the file: the stem, then each stage's layers (the first with the stage's
stride, the rest with stride 1), then the head. An MBConv layer with stride 1 and C_in == C_out
adds its input (the shortcut), and only there are the skip ops (``zero``, ``identity``) legal:
a stage's shared candidate list drops them at the layer that changes the shape, as the
ProxylessNAS space does at the first block of each stage; a per-layer list that puts one
where the shape changes is an error. ShuffleNet layers have no shortcut (SPOS, DSNAS).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces.base import SKIP_OPS, ChainSpace, LayerSpec, SpaceArgs, adapt_strides, conv_out
from hwnas.spaces.blocks import Classifier, MBConv, ShuffleChoice, Zero, conv_bn
from hwnas.spaces.space_file import SpaceFile, parse_op

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class FileSpace(ChainSpace):
    """A chain space whose every shape and candidate comes from ``definition`` (a checked space file).

    A subclass sets ``definition``; ``name`` and ``description`` are the file's. ``builtin`` marks
    the spaces shipped with hwnas, known by name alone; a user's file is known by its content
    hash too, which tables and run folders record.
    """

    definition: ClassVar[SpaceFile]
    builtin: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "definition" in cls.__dict__:
            cls.name, cls.description = cls.definition.name, cls.definition.description

    def __init__(self, args: SpaceArgs | None = None) -> None:
        super().__init__(args or SpaceArgs(**self.definition.defaults))
        self.layers  # noqa: B018 -- the shape checks run now, before a command writes anything

    def _fail(self, path: tuple, problem: str) -> HwnasError:
        changed = {k: v for k, v in self.args.to_dict().items() if v != self.definition.defaults[k]}
        at = f" (at {', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else ""
        return self.definition.error(path, problem + at)

    def _strides(self) -> list[int]:
        """[stem, first layer of each stage]; with ``adapt_strides`` the small-input rule of ``adapt_strides``."""
        spec = self.definition
        strides = [spec.stem.stride] + [stage.stride for stage in spec.stages]
        return adapt_strides(self.args.resolution, strides) if spec.adapt_strides else strides

    @property
    def stem_out_channels(self) -> int:
        stem = self.definition.stem
        return self.width(stem.block[1] if stem.block else stem.channels)

    def _shrink(self, size: int, stride: int, path: tuple) -> int:
        if stride > size:
            raise self._fail(
                path,
                f"stride {stride} on a {size}x{size} feature map leaves less than 1x1; use stride 1 here, "
                "a larger resolution, or adapt_strides = true",
            )
        return conv_out(size, stride)

    def _build_layers(self) -> list[LayerSpec]:
        spec = self.definition
        stem_stride, *stage_strides = self._strides()
        size = self._shrink(self.args.resolution, stem_stride, ("stem", "stride"))
        c_in = self.stem_out_channels
        layers: list[LayerSpec] = []
        for i, (stage, first_stride) in enumerate(zip(spec.stages, stage_strides)):
            c_out = self.width(stage.channels)
            field = ("stages", i, "layers" if stage.per_layer else "ops")
            for block, ops in enumerate(stage.layers):
                stride = first_stride if block == 0 else 1
                if block == 0:
                    self._shrink(size, stride, ("stages", i, "stride"))
                same_shape = stride == 1 and c_in == c_out
                shuffle = parse_op(ops[0])[0] == "shuffle"  # a layer's ops are all shuffle ops or none (space_file)
                shortcut = same_shape and not shuffle
                candidates = ops if shortcut else tuple(op for op in ops if op not in SKIP_OPS)
                if stage.per_layer and candidates != ops:
                    skip = next(op for op in ops if op in SKIP_OPS)
                    raise self._fail(
                        field,
                        f"layer {block}: {skip!r} needs the same input and output shape, but this layer maps "
                        f"{c_in}x{size}x{size} to {c_out}x{conv_out(size, stride)}x{conv_out(size, stride)}; remove it from this layer",
                    )
                if not candidates:
                    raise self._fail(
                        field,
                        f"layer {block} changes the shape ({c_in}->{c_out} channels, stride {stride}), so its skip ops "
                        "are dropped and no candidate is left; add an op such as mb3_k3",
                    )
                if shuffle:
                    self._check_shuffle(field, block, c_in, c_out, same_shape)
                layers.append(LayerSpec(len(layers), c_in, c_out, stride, size, size, candidates, shortcut))
                size, c_in = conv_out(size, stride), c_out
            listed = [op for op in stage.layers[0] if op in SKIP_OPS]
            if listed and not stage.per_layer and not any(op in SKIP_OPS for op in layers[-1].candidates):
                raise self._fail(
                    field,
                    f"{listed[0]!r} is legal at no layer of this stage: every layer changes the shape "
                    "(a skip op needs stride 1 and C_in == C_out); remove it or add repeats",
                )
        return layers

    def _check_shuffle(self, field: tuple, block: int, c_in: int, c_out: int, same_shape: bool) -> None:
        """A ShuffleNetV2 block splits its channels in two halves, and its first block concatenates two branches."""
        if c_in % 2 or c_out % 2:
            raise self._fail(
                field, f"layer {block}: shuffle ops need even channel counts, got {c_in}->{c_out}; use even channels"
            )
        if not same_shape and c_out <= c_in:
            raise self._fail(
                field,
                f"layer {block}: a shuffle block that changes the shape concatenates its input's {c_in} channels with a "
                f"branch, so it needs more than {c_in} output channels, got {c_out}; raise the stage's channels",
            )

    def build_stem(self) -> nn.Module:
        stem = self.definition.stem
        channels = self.width(stem.channels)
        conv = conv_bn(self.args.in_channels, channels, stem.kernel, self._strides()[0], activation=ACTIVATIONS[stem.activation])
        if stem.block is None:
            return conv
        _, expand, kernel = parse_op(stem.block[0])
        return nn.Sequential(conv, MBConv(channels, self.stem_out_channels, stride=1, kernel=kernel, expand=expand))

    def build_head(self) -> nn.Module:
        head = self.definition.head
        c_last, channels = self.layers[-1].c_out, self.width(head.channels)
        return nn.Sequential(
            conv_bn(c_last, channels, 1, activation=ACTIVATIONS[head.activation]),
            Classifier(channels, self.args.num_classes, bias=head.bias),
        )

    def _build_op(self, layer: LayerSpec, op: str) -> nn.Module:
        if op in SKIP_OPS:
            return Zero()
        family, expand, kernel = parse_op(op)
        if family == "mb":
            return MBConv(layer.c_in, layer.c_out, layer.stride, kernel, expand, zero_init_last=layer.shortcut)
        if op == "shuffle_x":
            return ShuffleChoice(layer.c_in, layer.c_out, layer.stride, kernel=3, xception=True)
        return ShuffleChoice(layer.c_in, layer.c_out, layer.stride, kernel=kernel)


def file_space_class(definition: SpaceFile, builtin: bool = False) -> type[FileSpace]:
    """A ``FileSpace`` subclass for ``definition``."""
    return type(f"FileSpace[{definition.name}]", (FileSpace,), {"definition": definition, "builtin": builtin})
