"""Arch: one op choice per searchable layer of a named space, with its JSON and one-line forms.

JSON: ``{"space": "proxyless", "space_args": {"resolution": 32, ...}, "choices": ["mb3_k3", ...]}``.

Compact: ``proxyless,resolution=32,num_classes=10:mb3_k3-mb6_k5-zero-...`` — the space, the
space options that differ from their defaults, a colon, the choices joined by ``-``. It fits
on one line and in a shell argument without quoting.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from hwnas.errors import HwnasError
from hwnas.files import parse_json, read_json, write_text_atomic
from hwnas.spaces import SPACES, Space, SpaceArgs, get_space, is_known_space

_ARG_TYPES = {name: f.type for name, f in SpaceArgs.__dataclass_fields__.items()}
_DEFAULT_ARGS = SpaceArgs().to_dict()


@dataclass(frozen=True)
class Arch:
    space: str
    choices: tuple[str, ...]
    space_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        object.__setattr__(self, "space_args", {**_DEFAULT_ARGS, **self.space_args})

    # -- the space it belongs to ----------------------------------------------------------
    # A space works on choices alone and knows nothing of Arch; Arch adds the space's name and options.
    @classmethod
    def of(cls, space: Space, choices: tuple[str, ...]) -> Arch:
        """The arch of ``space`` (its name and options) with ``choices``."""
        return cls(space.name, choices, space.args.to_dict())

    def build_space(self) -> Space:
        return get_space(self.space, **self.space_args)

    def validated(self) -> Arch:
        """Self, after checking against its space (length, legal op per layer)."""
        self.build_space().validate(self.choices)
        return self

    def choices_in(self, space: Space) -> tuple[str, ...]:
        """The choices, after checking that this is an arch of ``space`` (its name, then each choice)."""
        if self.space != space.name:
            raise HwnasError(f"arch is for space {self.space!r}, not {space.name!r}")
        space.validate(self.choices)
        return self.choices

    def build(self) -> nn.Module:
        """The net of this arch, freshly initialised."""
        return self.build_space().build(self.choices)

    @classmethod
    def random(cls, space: Space, seed: int | None = None) -> Arch:
        """A random arch of ``space`` (``space.random_choices``: a chain space draws each layer's op uniformly)."""
        return cls.of(space, space.random_choices(random.Random(seed)))

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "space_args": dict(self.space_args), "choices": list(self.choices)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> Arch:
        if not isinstance(data, dict):
            raise HwnasError(f"an arch must be a JSON object with 'space' and 'choices', got {type(data).__name__}")
        missing = [key for key in ("space", "choices") if key not in data]
        if missing:
            raise HwnasError(f"arch is missing {', '.join(repr(k) for k in missing)}")
        extra = set(data) - {"space", "space_args", "choices"}
        if extra:
            raise HwnasError(f"arch has unknown field(s) {', '.join(sorted(extra))}")
        choices = data["choices"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise HwnasError("arch 'choices' must be a list of op names (strings)")
        space_args = data.get("space_args", {})
        if not isinstance(space_args, dict):
            raise HwnasError("arch 'space_args' must be an object")
        return cls(str(data["space"]), tuple(choices), _checked_args(space_args))

    @classmethod
    def from_json(cls, text: str) -> Arch:
        return cls.from_dict(parse_json(text, "arch"))

    def save(self, path: str | Path) -> None:
        write_text_atomic(Path(path), self.to_json() + "\n")

    # -- compact one-line form ------------------------------------------------------------------
    def to_compact(self) -> str:
        args = [f"{k}={v}" for k, v in self.space_args.items() if v != _DEFAULT_ARGS[k]]
        body = SPACES[self.space].format_choices(self.choices) if self.space in SPACES else "-".join(self.choices)
        return ",".join([self.space, *args]) + ":" + body

    @classmethod
    def from_compact(cls, text: str) -> Arch:
        head, sep, body = text.strip().partition(":")
        if not sep or not body:
            raise HwnasError(f"not a compact arch {text!r}: expected SPACE[,key=value...]:op-op-...")
        space, *pairs = head.split(",")
        space_args: dict[str, Any] = {}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq:
                raise HwnasError(f"compact arch: space option {pair!r} is not key=value")
            space_args[key] = value
        choices = SPACES[space].parse_choices(body) if space in SPACES else tuple(body.split("-"))
        return cls(space, choices, _checked_args(space_args))

    def __str__(self) -> str:
        return self.to_compact()


def _checked_args(space_args: dict[str, Any]) -> dict[str, Any]:
    """Space options converted to their types; unknown names and bad values are errors."""
    checked = {}
    for key, value in space_args.items():
        if key not in _ARG_TYPES:
            raise HwnasError(f"unknown space option {key!r}; known: {', '.join(_ARG_TYPES)}")
        whole = _ARG_TYPES[key] not in (float, "float")
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise HwnasError(f"space option {key}={value!r} is not a number")
        if whole and not number.is_integer():
            raise HwnasError(f"space option {key}={value!r} is not a whole number")
        checked[key] = int(number) if whole else number
    return checked


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a compact arch longer than a file name may be
        return False


def load_arch(source: str | Path) -> Arch:
    """An arch from a JSON file path or a compact string, validated against its space."""
    text = str(source)
    if _is_file(text):
        try:
            return _known_space(Arch.from_dict(read_json(text, "arch file"))).validated()
        except (HwnasError, OSError, UnicodeDecodeError) as error:
            raise HwnasError(f"{text}: {error}") from None
    if ":" in text and not text.lstrip().startswith("{"):
        arch = Arch.from_compact(text)
    elif text.lstrip().startswith("{"):
        arch = Arch.from_json(text)
    else:
        raise HwnasError(f"{text!r} is neither an arch file nor a compact arch (SPACE[,key=value...]:op-op-...)")
    return _known_space(arch).validated()


def _known_space(arch: Arch) -> Arch:
    if not is_known_space(arch.space):
        raise HwnasError(
            f"unknown space {arch.space!r}; known: {', '.join(SPACES)}; an arch of a space file's space needs that "
            "file: pass --space FILE.toml (a run folder and a table keep a copy of theirs)"
        )
    return arch
