"""Search spaces. ``SPACES`` maps a built-in space's name to its class; adding a space is adding a module.

A chain space can also come from a space file (``FILE.toml``, see ``space_file``): wherever a
space name is taken, a path ending in ``.toml`` is read, checked and registered under the
file's ``name``, so that archs of that space (which name it) build in this process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError
from hwnas.spaces.base import SKIP_OPS, ChainSpace, LayerSpec, OpSpec, Part, Space, SpaceArgs
from hwnas.spaces.cost import Cost
from hwnas.spaces.dag import DagSpace
from hwnas.spaces.dsonas import DsoNasSmallSpace, DsoNasSpace
from hwnas.spaces.file_space import FileSpace, file_space_class
from hwnas.spaces.nb201 import Nb201Space
from hwnas.spaces.proxyless import ProxylessGreedySpace, ProxylessSpace
from hwnas.spaces.shufflenet import ShuffleNetSpace
from hwnas.spaces.space_file import SpaceFile, parse_space_file, read_space_file

SPACES: dict[str, type[Space]] = {
    ProxylessSpace.name: ProxylessSpace,
    ProxylessGreedySpace.name: ProxylessGreedySpace,
    ShuffleNetSpace.name: ShuffleNetSpace,
    DsoNasSpace.name: DsoNasSpace,
    DsoNasSmallSpace.name: DsoNasSmallSpace,
    Nb201Space.name: Nb201Space,
}

#: the space files read in this process, by the name they give (the latest one read wins)
_FILE_SPACES: dict[str, type[FileSpace]] = {}


def is_space_file(name: str | Path) -> bool:
    """Whether ``name`` is a space file's path rather than a space's name: it ends in ``.toml``."""
    return str(name).endswith(".toml")


def register_space_file(definition: SpaceFile) -> type[FileSpace]:
    """Make the space of a checked space file known by its name; its shapes are checked at the file's own options."""
    if definition.name in SPACES:
        raise definition.error(("name",), f"{definition.name!r} is a built-in space's name; pick another name")
    space_class = file_space_class(definition)
    space_class()
    _FILE_SPACES[definition.name] = space_class
    return space_class


def load_space_file(path: str | Path) -> type[FileSpace]:
    """Read, check and register the space file at ``path``."""
    return register_space_file(read_space_file(path))


def space_from_text(text: str, source: str) -> type[FileSpace]:
    """Check and register a space file's ``text`` (the copy a table or a run folder keeps; ``source`` names it in errors)."""
    return register_space_file(parse_space_file(text, source))


def space_class(name: str | Path) -> type[Space]:
    """The class of a built-in space, of a space file's path, or of a space file read before (by its name)."""
    name = str(name)
    if name in SPACES:
        return SPACES[name]
    if is_space_file(name):
        return load_space_file(name)
    if name in _FILE_SPACES:
        return _FILE_SPACES[name]
    raise HwnasError(f"unknown space {name!r}; known: {', '.join(SPACES)}, or a space file (FILE.toml)")


def is_known_space(name: str) -> bool:
    """Whether an arch naming space ``name`` can be built here: a built-in space, or a space file read before."""
    return name in SPACES or name in _FILE_SPACES


def user_space_file(space: Space) -> SpaceFile | None:
    """The space file of a user's space (None for the built-in spaces, known by their name alone)."""
    if isinstance(space, FileSpace) and not space.builtin:
        return space.definition
    return None


def get_space(name: str | Path, **space_args: Any) -> Space:
    """The space ``name`` (a built-in name or a space file) built with ``space_args`` (resolution, num_classes,
    in_channels, width_mult); options left out take the space file's values, else ``SpaceArgs``'s defaults."""
    chosen = space_class(name)
    unknown = set(space_args) - set(SpaceArgs.__dataclass_fields__)
    if unknown:
        raise HwnasError(
            f"unknown space option(s) {', '.join(sorted(unknown))}; known: {', '.join(SpaceArgs.__dataclass_fields__)}"
        )
    defaults = chosen.definition.defaults if issubclass(chosen, FileSpace) else {}
    return chosen(SpaceArgs(**{**defaults, **space_args}))


__all__ = [
    "SPACES",
    "SKIP_OPS",
    "ChainSpace",
    "Cost",
    "DagSpace",
    "FileSpace",
    "LayerSpec",
    "OpSpec",
    "Part",
    "Space",
    "SpaceArgs",
    "SpaceFile",
    "get_space",
    "is_known_space",
    "is_space_file",
    "load_space_file",
    "register_space_file",
    "space_class",
    "space_from_text",
    "user_space_file",
]
