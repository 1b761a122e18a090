"""The SPOS / DSNAS ShuffleNetV2 space, from its space file ``builtin/shufflenet.toml``: 20 layers, four choice blocks each."""

from __future__ import annotations

from hwnas.spaces.file_space import FileSpace
from hwnas.spaces.space_file import builtin_space_file


class ShuffleNetSpace(FileSpace):
    definition = builtin_space_file("shufflenet")
    builtin = True
