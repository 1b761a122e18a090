"""What every chain search space shares: layer and op specs, the child-net builder, costs.

A chain space is a fixed stem, an ordered list of searchable layers (one candidate op chosen
per layer) and a fixed head. A concrete space (``proxyless``, ``shufflenet``) only says which
layers exist and how to build one candidate op; everything else lives here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces.blocks import make_divisible
from hwnas.spaces.cost import Cost, count_cost

#: Ops that make a layer the identity (through its shortcut) and cost nothing at run time.
SKIP_OPS = frozenset({"zero", "identity"})


@dataclass(frozen=True)
class OpSpec:
    """One candidate op at one layer shape: the unit the profiler measures and the table keys.

    ``h`` and ``w`` are the op's input resolution. The canonical key reads
    ``mb6_k5:c40-80:s2:h28w28``.
    """

    op: str
    c_in: int
    c_out: int
    stride: int
    h: int
    w: int

    @property
    def key(self) -> str:
        return f"{self.op}:c{self.c_in}-{self.c_out}:s{self.stride}:h{self.h}w{self.w}"


@dataclass(frozen=True)
class LayerSpec:
    """A searchable layer: its input shape, output channels, stride and legal candidate ops.

    ``shortcut`` is true where the layer adds its input to the chosen op's output (MBConv
    layers with stride 1 and C_in == C_out); skip ops are legal only there.
    """

    index: int
    c_in: int
    c_out: int
    stride: int
    h: int
    w: int
    candidates: tuple[str, ...]
    shortcut: bool

    @property
    def out_hw(self) -> tuple[int, int]:
        return conv_out(self.h, self.stride), conv_out(self.w, self.stride)

    def op_spec(self, op: str) -> OpSpec:
        return OpSpec(op, self.c_in, self.c_out, self.stride, self.h, self.w)


def conv_out(size: int, stride: int) -> int:
    """Spatial size after an odd-kernel conv with 'same' padding: ceil(size / stride)."""
    return -(-size // stride)


def adapt_strides(resolution: int, strides: list[int], min_final: int = 2) -> list[int]:
    """Turn the earliest stride-2 steps into stride 1 until the last feature map is >= min_final.

    The rule for small inputs (28x28, 32x32): the published ImageNet strides would shrink the
    last stage below 2x2 pixels, so downsampling is removed from the front (stem first, then
    the first block of each stage, in order) and kept at the back, where features are
    semantic. At 224 nothing changes.
    """
    strides = list(strides)
    for i, stride in enumerate(strides):
        size = resolution
        for s in strides:
            size = conv_out(size, s)
        if size >= min_final:
            break
        if stride == 2:
            strides[i] = 1
    return strides


@dataclass(frozen=True)
class SpaceArgs:
    """The options every space takes; they fix every shape in it."""

    resolution: int = 224
    num_classes: int = 1000
    in_channels: int = 3
    width_mult: float = 1.0

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise HwnasError(f"resolution must be at least 8, got {self.resolution}")
        if self.num_classes < 1:
            raise HwnasError(f"num_classes must be at least 1, got {self.num_classes}")
        if self.in_channels < 1:
            raise HwnasError(f"in_channels must be at least 1, got {self.in_channels}")
        if not 0.05 <= self.width_mult <= 4:
            raise HwnasError(f"width_mult must be in [0.05, 4], got {self.width_mult}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Layer(nn.Module):
    """One chosen op of a child net, plus the shortcut where the layer has one."""

    def __init__(self, op: nn.Module, shortcut: bool) -> None:
        super().__init__()
        self.op = op
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.op(x)
        return out + x if self.shortcut else out


class ChildNet(nn.Module):
    """stem -> chosen layers -> head: an ordinary module that trains, scripts and exports."""

    def __init__(self, stem: nn.Module, layers: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.layers = nn.Sequential(*layers)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


@dataclass(frozen=True)
class Part:
    """A table entry a space's nets run: its key, how to build it alone, its input shape (C, H, W)."""

    key: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    #: copies of the part the built module runs in a chain: its entry, less the runtime's per-call cost, is divided by
    #: this (a part too small to time apart from that cost is timed as a chain: the DAG spaces' add)
    repeats: int = 1


class Space:
    """What every space shares: options, channel widths, stem and head, the fixed cost, the description.

    Two kinds exist: ``ChainSpace`` (one op chosen per layer) and ``hwnas.spaces.dag.DagSpace``
    (a set of kept edges per block). Both give ``random_choices``, ``validate``, ``build``,
    ``cost``, ``parts`` (what a table must hold) and ``run_parts`` (the parts a net runs).
    A net is named by its ``choices``, one string per searchable layer or block; a space knows
    nothing of ``hwnas.arch.Arch``, which pairs choices with the space's name and options.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, args: SpaceArgs | None = None) -> None:
        self.args = args or SpaceArgs()
        self._cost_cache: dict[Any, Cost] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args})"

    def width(self, channels: int) -> int:
        """A channel count of the published net scaled by ``width_mult``, a multiple of 8."""
        return channels if self.args.width_mult == 1.0 else make_divisible(channels * self.args.width_mult)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.args.in_channels, self.args.resolution, self.args.resolution)

    def build_stem(self) -> nn.Module:
        raise NotImplementedError

    def build_head(self) -> nn.Module:
        raise NotImplementedError

    @property
    def stem_out_channels(self) -> int:
        raise NotImplementedError

    @property
    def head_in_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def _build_layers(self) -> list[LayerSpec]:
        raise NotImplementedError

    @cached_property
    def layers(self) -> list[LayerSpec]:
        """The searchable layers (a chain space) or blocks (a DAG space), in order."""
        return self._build_layers()

    def random_choices(self, rng: random.Random) -> tuple[str, ...]:
        raise NotImplementedError

    def count_archs(self) -> float:
        """How many architectures the space holds."""
        raise NotImplementedError

    def parts(self) -> list[Part]:
        """Every searchable part a net of the space can run, once each: what a latency table must hold."""
        raise NotImplementedError

    def validate(self, choices: Sequence[str]) -> None:
        """Raise ``HwnasError`` unless ``choices`` name a net of this space (one legal choice per layer or block)."""
        raise NotImplementedError

    def build(self, choices: Sequence[str]) -> nn.Module:
        """The net of ``choices``."""
        raise NotImplementedError

    def cost(self, choices: Sequence[str]) -> Cost:
        """FLOPs and params of the net of ``choices``."""
        raise NotImplementedError

    def run_parts(self, choices: Sequence[str]) -> list[str]:
        """The keys of the searchable parts the net of ``choices`` runs (a key once per time it runs)."""
        raise NotImplementedError

    @staticmethod
    def format_choices(choices: Sequence[str]) -> str:
        """The choices in an arch's compact one-line form (``op-op-...``; a space may have a form of its own)."""
        return "-".join(choices)

    @staticmethod
    def parse_choices(text: str) -> tuple[str, ...]:
        """The inverse of ``format_choices``."""
        return tuple(text.split("-"))

    def count_ops(self, choices: Sequence[str]) -> int:
        """The parts the net of ``choices`` runs: the ``ops`` of a table's calibration."""
        return len(self.run_parts(choices))

    def _check_length(self, choices: Sequence[str], what: str) -> None:
        if isinstance(choices, str) or len(choices) != len(self.layers):
            count = 1 if isinstance(choices, str) else len(choices)
            raise HwnasError(f"arch has {count} choices but space {self.name!r} has {len(self.layers)} searchable {what}")

    def fixed_cost(self) -> Cost:
        """FLOPs and params of the stem plus the head."""
        with torch.device("meta"):
            stem, head = self.build_stem(), self.build_head()
        return count_cost(stem, self.input_shape) + count_cost(head, self.head_in_shape)

    def _part_cost(self, key: str) -> Cost:
        """FLOPs and params of the part ``key`` of ``parts()``, counted once on the meta device."""
        if key not in self._cost_cache:
            part = self._parts_by_key[key]
            with torch.device("meta"):
                module = part.build()
            self._cost_cache[key] = count_cost(module, part.input_shape)
        return self._cost_cache[key]

    def _parts_cost(self, keys: Sequence[str]) -> Cost:
        """FLOPs and params of the parts ``keys`` together (a key once per time it runs)."""
        total = Cost(0, 0)
        for key in keys:
            total = total + self._part_cost(key)
        return total

    @cached_property
    def _parts_by_key(self) -> dict[str, Part]:
        return {part.key: part for part in self.parts()}

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: args, stem/head shapes and every layer."""
        return {
            "space": self.name,
            "description": self.description,
            "space_args": self.args.to_dict(),
            "input_shape": list(self.input_shape),
            "stem_out_channels": self.stem_out_channels,
            "head_in_shape": list(self.head_in_shape),
            "layers": [
                {
                    "index": layer.index,
                    "input_shape": [layer.c_in, layer.h, layer.w],
                    "c_out": layer.c_out,
                    "stride": layer.stride,
                    "shortcut": layer.shortcut,
                    "candidates": list(layer.candidates),
                }
                for layer in self.layers
            ],
        }


class ChainSpace(Space):
    """Base of the chain spaces; a subclass sets ``name``, ``description`` and the builders below."""

    # -- what a concrete space provides -------------------------------------------------
    def _build_layers(self) -> list[LayerSpec]:
        raise NotImplementedError

    def _build_op(self, layer: LayerSpec, op: str) -> nn.Module:
        raise NotImplementedError

    @property
    def head_in_shape(self) -> tuple[int, int, int]:
        last = self.layers[-1]
        return (last.c_out, *last.out_hw)

    # -- shared -----------------------------------------------------------------------
    @property
    def candidates(self) -> list[str]:
        """Every op name the space uses, in a stable order (column order of latency tensors)."""
        seen: dict[str, None] = {}
        for layer in self.layers:
            seen.update(dict.fromkeys(layer.candidates))
        return list(seen)

    def candidate_mask(self) -> torch.Tensor:
        """Bool tensor [layers, len(candidates)]: True where the op is legal at that layer.

        Arch parameters and latency tensors are [layers, len(candidates)] matrices in
        ``candidates`` order; this mask says which entries exist.
        """
        columns = self.candidates
        mask = torch.zeros(len(self.layers), len(columns), dtype=torch.bool)
        for layer in self.layers:
            for op in layer.candidates:
                mask[layer.index, columns.index(op)] = True
        return mask

    def build_op(self, layer_index: int, op: str) -> nn.Module:
        """The candidate ``op`` of layer ``layer_index`` alone (skip ops give ``Zero``)."""
        layer = self.layers[layer_index]
        if op not in layer.candidates:
            raise HwnasError(f"layer {layer_index}: op {op!r} is not a candidate here; legal: {', '.join(layer.candidates)}")
        return self._build_op(layer, op)

    def build(self, choices: Sequence[str]) -> ChildNet:
        """The child net of ``choices``: only the chosen ops, skip layers as ``nn.Identity``."""
        self.validate(choices)
        layers: list[nn.Module] = []
        for layer, op in zip(self.layers, choices):
            if op in SKIP_OPS:
                layers.append(nn.Identity())
            else:
                layers.append(Layer(self._build_op(layer, op), layer.shortcut))
        return ChildNet(self.build_stem(), layers, self.build_head())

    def validate(self, choices: Sequence[str]) -> None:
        """Raise ``HwnasError`` naming the layer, the bad choice and the legal ones."""
        self._check_length(choices, "layers")
        offered = {op for layer in self.layers for op in layer.candidates}
        for layer, op in zip(self.layers, choices):
            if op not in layer.candidates:
                shape = f"{layer.c_in}->{layer.c_out} channels, stride {layer.stride}"
                why = ""
                if op not in offered:
                    why = f" (space {self.name!r} has no op {op!r})"
                elif op in SKIP_OPS and (layer.stride != 1 or layer.c_in != layer.c_out):
                    why = " (a skip op needs stride 1 and C_in == C_out)"
                raise HwnasError(
                    f"layer {layer.index} ({shape}): {op!r} is not allowed{why}; legal: {', '.join(layer.candidates)}"
                )

    def op_specs(self) -> list[OpSpec]:
        """The unique (op, shape) pairs of the space, skip ops excluded: what the profiler measures."""
        unique: dict[OpSpec, None] = {}
        for layer in self.layers:
            for op in layer.candidates:
                if op not in SKIP_OPS:
                    unique[layer.op_spec(op)] = None
        return list(unique)

    # -- costs (counted on the meta device: nothing is computed) ------------------------
    def op_cost(self, layer_index: int, op: str) -> Cost:
        """FLOPs (multiply-adds) and params of one candidate at one layer, shortcut add excluded."""
        layer = self.layers[layer_index]
        if op in SKIP_OPS:
            self.build_op(layer_index, op)  # validates that the op is legal here
            return Cost(0, 0)
        return self._spec_cost(layer.op_spec(op))

    def _spec_cost(self, spec: OpSpec) -> Cost:
        cache = self._cost_cache
        if spec not in cache:
            layer = next(layer for layer in self.layers if layer.op_spec(spec.op) == spec)
            with torch.device("meta"):
                module = self._build_op(layer, spec.op)
            cache[spec] = count_cost(module, (spec.c_in, spec.h, spec.w))
        return cache[spec]

    def cost(self, choices: Sequence[str]) -> Cost:
        """FLOPs and params of the whole child net of ``choices``."""
        self.validate(choices)
        total = self.fixed_cost()
        for i, op in enumerate(choices):
            total = total + self.op_cost(i, op)
        return total

    def random_choices(self, rng: random.Random) -> tuple[str, ...]:
        """Each layer's op drawn uniformly from its candidates."""
        return tuple(rng.choice(layer.candidates) for layer in self.layers)

    def count_archs(self) -> float:
        return float(math.prod(len(layer.candidates) for layer in self.layers))

    def parts(self) -> list[Part]:
        """Every unique candidate op at its layer's shape (skip ops excluded), built with the layer's shortcut."""
        unique: dict[str, Part] = {}
        for layer in self.layers:
            for op in layer.candidates:
                spec = layer.op_spec(op)
                if op in SKIP_OPS or spec.key in unique:
                    continue

                def build(layer: LayerSpec = layer, op: str = op) -> nn.Module:
                    return Layer(self.build_op(layer.index, op), layer.shortcut)

                unique[spec.key] = Part(spec.key, build, (spec.c_in, spec.h, spec.w))
        return list(unique.values())

    def run_parts(self, choices: Sequence[str]) -> list[str]:
        """The op spec key of every layer that runs an op (skips run nothing)."""
        return [layer.op_spec(op).key for layer, op in zip(self.layers, choices) if op not in SKIP_OPS]
