"""A space file: a chain search space written in TOML, read with the standard library's ``tomllib``.

The file gives the input, the classes, the width multiplier, the stem, the stages and the
head; ``docs/space_files.md`` lists every field and its default. This module only reads and
checks the file (syntax, keys, types, op names, value ranges) into a ``SpaceFile``; the checks
that depend on shapes (a skip op where shapes differ, a stride that leaves less than one pixel)
run where the layers are built (``hwnas.spaces.file_space``), because ``--resolution`` and
``--width-mult`` change the shapes. Every error names the file, the field, its TOML line where
one is known, and the fix.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError

#: the ops a space file may list: ``mb{e}_k{k}``, ``shuffle_k{3,5,7}``, ``shuffle_x``, the skip ops
EXPANSIONS, MB_KERNELS, SHUFFLE_KERNELS = range(1, 9), (3, 5, 7, 9), (3, 5, 7)
OPS_HELP = "mb<e>_k<k> (e 1-8, k 3/5/7/9), shuffle_k3, shuffle_k5, shuffle_k7, shuffle_x, identity, zero"
ACTIVATIONS = ("relu", "relu6")
_MB = re.compile(r"mb(\d+)_k(\d+)")
_SHUFFLE = re.compile(r"shuffle_k(\d+)")
_NAME = re.compile(r"[a-z][a-z0-9_.-]*")

#: (key, default; ``REQUIRED`` where there is none) per table of the file, in the order the docs list them
REQUIRED = object()
TOP_KEYS = {
    "name": REQUIRED,
    "description": None,
    "resolution": 224,
    "in_channels": 3,
    "num_classes": 1000,
    "width_mult": 1.0,
    "adapt_strides": False,
    "stem": REQUIRED,
    "stages": REQUIRED,
    "head": REQUIRED,
}
STEM_KEYS = {"channels": REQUIRED, "kernel": 3, "stride": 2, "activation": "relu6", "block": None}
STEM_BLOCK_KEYS = {"op": REQUIRED, "channels": REQUIRED}
STAGE_KEYS = {"channels": REQUIRED, "repeats": 1, "stride": 1, "ops": None, "layers": None}
HEAD_KEYS = {"channels": REQUIRED, "activation": "relu6", "bias": True}


def parse_op(op: str) -> tuple[str, int, int]:
    """``mb6_k5`` -> ("mb", 6, 5); ``shuffle_k3`` -> ("shuffle", 0, 3); ``shuffle_x`` -> ("shuffle", 0, 0); skips -> ("skip", 0, 0).

    An unknown name, an expansion outside 1-8 or a kernel outside the allowed ones is an error
    saying which part is wrong.
    """
    if op in ("zero", "identity"):
        return "skip", 0, 0
    if op == "shuffle_x":
        return "shuffle", 0, 0
    match = _MB.fullmatch(op)
    if match:
        expand, kernel = int(match.group(1)), int(match.group(2))
        if expand not in EXPANSIONS:
            raise HwnasError(f"op {op!r}: expansion {expand} is outside 1-8; use mb1_k{kernel} to mb8_k{kernel}")
        if kernel not in MB_KERNELS:
            raise HwnasError(f"op {op!r}: kernel {kernel} is not one of 3, 5, 7, 9; use e.g. mb{expand}_k3")
        return "mb", expand, kernel
    match = _SHUFFLE.fullmatch(op)
    if match:
        kernel = int(match.group(1))
        if kernel not in SHUFFLE_KERNELS:
            raise HwnasError(f"op {op!r}: a shuffle kernel is 3, 5 or 7, not {kernel}; use shuffle_k3, shuffle_k5 or shuffle_k7")
        return "shuffle", 0, kernel
    raise HwnasError(f"unknown op {op!r}; the ops are {OPS_HELP}")


@dataclass(frozen=True)
class StemDef:
    channels: int
    kernel: int = 3
    stride: int = 2
    activation: str = "relu6"
    #: an optional fixed MBConv after the stem conv (ProxylessNAS's MBConv1 k3 to 16 channels): (op, channels)
    block: tuple[str, int] | None = None


@dataclass(frozen=True)
class StageDef:
    channels: int
    stride: int
    #: the candidate ops of each layer; one list shared by every layer unless ``per_layer``
    layers: tuple[tuple[str, ...], ...]
    per_layer: bool


@dataclass(frozen=True)
class HeadDef:
    channels: int
    activation: str = "relu6"
    bias: bool = True


@dataclass(frozen=True)
class SpaceFile:
    """A checked space file: what it defines, its text, where it came from and its content hash."""

    name: str
    description: str
    #: the space options the file sets (resolution, in_channels, num_classes, width_mult); commands may override them
    defaults: dict[str, Any]
    adapt_strides: bool
    stem: StemDef
    stages: tuple[StageDef, ...]
    head: HeadDef
    text: str = field(repr=False)
    source: str
    sha256: str
    #: TOML line of each field, by its path (``("stages", 1, "ops")``), where the text has one
    lines: dict[tuple, int] = field(default_factory=dict, repr=False, compare=False)

    def where(self, *path: Any) -> str:
        """``FILE: stages[1].ops (line 14)``: how an error names a field."""
        return _where(self.source, path, self.lines)

    def error(self, path: tuple, problem: str) -> HwnasError:
        return HwnasError(f"{self.where(*path)}: {problem}")


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_space_file(path: str | Path) -> SpaceFile:
    """Read and check the space file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HwnasError(f"space file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise HwnasError(f"space file {path} cannot be read: {error}") from None
    return parse_space_file(text, str(path))


def parse_space_file(text: str, source: str = "space file") -> SpaceFile:
    """Check the TOML ``text`` (from ``source``, named in errors) and return what it defines."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise HwnasError(f"{source}: not valid TOML: {error}; fix the syntax there (key = value, [table], [[stages]])") from None
    lines = _key_lines(text)

    def fail(path: tuple, problem: str) -> HwnasError:
        return HwnasError(f"{_where(source, path, lines)}: {problem}")

    _check_keys(data, TOP_KEYS, (), "the file", fail)
    name = _string(data, "name", (), fail)
    if not _NAME.fullmatch(name):
        raise fail(
            ("name",), f"{name!r} is not a space name; use lower-case letters, digits, '_', '-', '.' (starting with a letter)"
        )
    description = data.get("description", f"space file {name}")
    if not isinstance(description, str):
        raise fail(("description",), "must be a string")
    defaults = {
        "resolution": _int(data, "resolution", (), fail, TOP_KEYS, what="a positive whole number of pixels, e.g. 64"),
        "in_channels": _int(data, "in_channels", (), fail, TOP_KEYS, what="a positive whole number, e.g. 3"),
        "num_classes": _int(data, "num_classes", (), fail, TOP_KEYS, what="a positive whole number, e.g. 10"),
        "width_mult": _number(data, "width_mult", (), fail, TOP_KEYS),
    }
    if defaults["resolution"] < 8:
        raise fail(("resolution",), f"{defaults['resolution']} is too small: resolution must be at least 8 pixels")
    adapt = data.get("adapt_strides", TOP_KEYS["adapt_strides"])
    if not isinstance(adapt, bool):
        raise fail(("adapt_strides",), "must be true or false")
    stem = _stem(_table(data, "stem", (), fail), fail)
    stages_data = data["stages"]
    if not isinstance(stages_data, list) or not all(isinstance(s, dict) for s in stages_data):
        raise fail(("stages",), "must be an array of tables: one [[stages]] section per stage")
    if not stages_data:
        raise fail(("stages",), "has no stage; add at least one [[stages]] section")
    stages = tuple(_stage(stage, (("stages", i)), fail) for i, stage in enumerate(stages_data))
    head_data = _table(data, "head", (), fail)
    _check_keys(head_data, HEAD_KEYS, ("head",), "[head]", fail)
    head = HeadDef(
        _int(head_data, "channels", ("head",), fail, HEAD_KEYS, what="a positive whole number, e.g. 1280"),
        _activation(head_data, ("head",), fail),
        _bool(head_data, "bias", ("head",), fail, HEAD_KEYS),
    )
    return SpaceFile(name, description, defaults, adapt, stem, stages, head, text, source, sha256_of(text), lines)


# -- the parts ------------------------------------------------------------------------------------------------------
def _stem(data: dict, fail: Any) -> StemDef:
    at = ("stem",)
    _check_keys(data, STEM_KEYS, at, "[stem]", fail)
    kernel = _int(data, "kernel", at, fail, STEM_KEYS, what="an odd kernel size, 1-9")
    if kernel % 2 == 0 or kernel > 9:
        raise fail((*at, "kernel"), f"{kernel} is not an odd kernel size 1-9; use 3")
    block = None
    if "block" in data:
        block_data = _table(data, "block", at, fail)
        _check_keys(block_data, STEM_BLOCK_KEYS, (*at, "block"), "[stem.block]", fail)
        op = _string(block_data, "op", (*at, "block"), fail)
        try:
            family, _, _ = parse_op(op)
        except HwnasError as error:
            raise fail((*at, "block", "op"), str(error)) from None
        if family != "mb":
            raise fail((*at, "block", "op"), f"the stem's fixed block is an MBConv (mb<e>_k<k>), not {op!r}")
        block = (op, _int(block_data, "channels", (*at, "block"), fail, STEM_BLOCK_KEYS, what="a positive whole number"))
    return StemDef(
        _int(data, "channels", at, fail, STEM_KEYS, what="a positive whole number, e.g. 16"),
        kernel,
        _int(data, "stride", at, fail, STEM_KEYS, what="a positive whole number (1 or 2)"),
        _activation(data, at, fail),
        block,
    )


def _stage(data: dict, at: tuple, fail: Any) -> StageDef:
    label = f"[[stages]] number {at[1] + 1}"
    _check_keys(data, STAGE_KEYS, at, label, fail)
    channels = _int(data, "channels", at, fail, STAGE_KEYS, what="a positive whole number, e.g. 24")
    stride = _int(data, "stride", at, fail, STAGE_KEYS, what="a positive whole number (1 or 2)")
    has_ops, has_layers = "ops" in data, "layers" in data
    if has_ops == has_layers:
        raise fail(
            at,
            "give either ops = [...] (one candidate list for every layer of the stage) or layers = [[...], ...] "
            "(one list per layer)" + (", not both" if has_ops else ""),
        )
    if has_ops:
        repeats = _int(data, "repeats", at, fail, STAGE_KEYS, what="a positive whole number of layers, e.g. 2")
        ops = _op_list(data["ops"], (*at, "ops"), fail)
        return StageDef(channels, stride, (ops,) * repeats, per_layer=False)
    layers = data["layers"]
    if not isinstance(layers, list) or not layers:
        raise fail(
            (*at, "layers"), 'must be a non-empty list of candidate lists, one per layer, e.g. [["mb3_k3"], ["mb6_k5", "zero"]]'
        )
    per_layer = tuple(_op_list(ops, (*at, "layers"), fail, f"layer {i}: ") for i, ops in enumerate(layers))
    if "repeats" in data:
        repeats = _int(data, "repeats", at, fail, STAGE_KEYS, what="a positive whole number of layers")
        if repeats != len(per_layer):
            raise fail(
                (*at, "repeats"), f"is {repeats} but layers lists {len(per_layer)} layers; leave repeats out or make them agree"
            )
    return StageDef(channels, stride, per_layer, per_layer=True)


def _op_list(value: Any, at: tuple, fail: Any, prefix: str = "") -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(op, str) for op in value):
        raise fail(at, f'{prefix}must be a list of op names, e.g. ["mb3_k3", "mb6_k5", "zero"]')
    if not value:
        raise fail(at, f"{prefix}the candidate list is empty; list at least one op ({OPS_HELP})")
    families = set()
    for op in value:
        try:
            families.add(parse_op(op)[0])
        except HwnasError as error:
            raise fail(at, f"{prefix}{error}") from None
    duplicates = sorted({op for op in value if value.count(op) > 1})
    if duplicates:
        raise fail(at, f"{prefix}{', '.join(duplicates)} listed twice; list each op once")
    if "shuffle" in families and len(families) > 1:
        raise fail(
            at,
            f"{prefix}shuffle ops cannot share a layer with MBConv or skip ops (a ShuffleNet block has no shortcut to "
            "skip through, an MBConv layer has one); put them in separate stages",
        )
    return tuple(value)


# -- typed fields ---------------------------------------------------------------------------------------------------
def _table(data: dict, key: str, at: tuple, fail: Any) -> dict:
    value = data[key]
    if not isinstance(value, dict):
        raise fail((*at, key), f"must be a table: a [{'.'.join([*map(str, at), key])}] section")
    return value


def _check_keys(data: dict, known: dict[str, Any], at: tuple, label: str, fail: Any) -> None:
    unknown = [key for key in data if key not in known]
    if unknown:
        raise fail(
            (*at, unknown[0]),
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in {label}; "
            f"the keys are {', '.join(known)}",
        )
    missing = [key for key, default in known.items() if default is REQUIRED and key not in data]
    if missing:
        sections = {"stem": "a [stem] section", "head": "a [head] section", "stages": "a [[stages]] section per stage"}
        raise fail(at, f"{label} lacks {', '.join(map(repr, missing))}; add {sections.get(missing[0], f'{missing[0]} = ...')}")


def _string(data: dict, key: str, at: tuple, fail: Any) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise fail((*at, key), f"must be a string, got {value!r}")
    return value


def _int(data: dict, key: str, at: tuple, fail: Any, known: dict[str, Any], what: str) -> int:
    value = data.get(key, known[key])
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise fail((*at, key), f"{value!r} is not valid: {key} must be {what}")
    return value


def _number(data: dict, key: str, at: tuple, fail: Any, known: dict[str, Any]) -> float:
    value = data.get(key, known[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.05 <= value <= 4:
        raise fail((*at, key), f"{value!r} is not valid: {key} must be a number in [0.05, 4], e.g. 1.0")
    return float(value)


def _bool(data: dict, key: str, at: tuple, fail: Any, known: dict[str, Any]) -> bool:
    value = data.get(key, known[key])
    if not isinstance(value, bool):
        raise fail((*at, key), f"must be true or false, got {value!r}")
    return value


def _activation(data: dict, at: tuple, fail: Any) -> str:
    value = data.get("activation", "relu6")
    if value not in ACTIVATIONS:
        raise fail((*at, "activation"), f"{value!r} is not an activation; use {' or '.join(map(repr, ACTIVATIONS))}")
    return value


# -- where a field is -----------------------------------------------------------------------------------------------
def _where(source: str, path: tuple, lines: dict[tuple, int]) -> str:
    name = ".".join(f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "[")
    line, parent = None, tuple(path)
    while line is None and parent:  # a field the scan did not place: its table's header
        line, parent = lines.get(parent), parent[:-1]
    return f"{source}: {name or 'top level'}" + (f" (line {line})" if line else "")


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def _key_lines(text: str) -> dict[tuple, int]:
    """The line of each ``key = ...`` and ``[table]`` header, by its path; arrays of tables get their index.

    A light scan of the text (tomllib keeps no positions); a field it cannot place just has no line.
    """
    lines: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}
    current: tuple = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            parts = tuple(p.strip().strip("\"'") for p in header.group(2).split("."))
            if header.group(1) == "[[":
                index = counts.get(parts, 0)
                counts[parts] = index + 1
                current = (*parts, index)
            else:
                current = _under_arrays(parts, counts)
            lines.setdefault(current, number)
            continue
        key = _KEY.match(line)
        if key and not line.lstrip().startswith("#"):
            parts = tuple(p.strip().strip("\"'") for p in key.group(1).split("."))
            lines.setdefault((*current, *parts), number)
    return lines


def _under_arrays(parts: tuple, counts: dict[tuple, int]) -> tuple:
    """``[stages.x]`` inside the latest ``[[stages]]``: put the array index in the path."""
    for size in range(len(parts), 0, -1):
        if parts[:size] in counts:
            return (*parts[:size], counts[parts[:size]] - 1, *parts[size:])
    return parts


#: the space files of the built-in chain spaces, shipped inside the package
BUILTIN_DIR = Path(__file__).parent / "builtin"


def builtin_space_file(name: str) -> SpaceFile:
    """The shipped space file of the built-in space ``name``."""
    return read_space_file(BUILTIN_DIR / f"{name}.toml")
