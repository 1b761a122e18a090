"""hwnas: hardware-aware neural architecture search and deployment.

Profile candidate ops on the target, search under a latency budget with a
differentiable method, export the derived child net and check the budget on
the artifact itself.

As a library: ``hwnas.profile``, ``validate``, ``predict``, ``search``, ``train`` and ``export``
(``hwnas.api``, docs/python_api.md) take the commands' options and return result objects; errors
are ``hwnas.HwnasError``. Three of those names are also submodules (``hwnas.search``,
``hwnas.train``, ``hwnas.export``): as attributes of ``hwnas`` they are always the functions,
while ``from hwnas.search import ...`` still reads the submodule. The functions load on first use,
so ``import hwnas.spaces`` alone stays light.
"""

import importlib
import sys
import types
from typing import Any

from hwnas.errors import HwnasError

__version__ = "0.1.0"

#: the names ``hwnas`` lends from ``hwnas.api``
API = ("profile", "validate", "show_table", "predict", "search", "train", "export", "read_space")


class _Package(types.ModuleType):
    """The ``hwnas`` module: its API names read ``hwnas.api`` (importing a submodule of the same name sets the
    attribute to the module, which would hide the function)."""

    def __getattribute__(self, name: str) -> Any:
        if name in API:
            return getattr(importlib.import_module("hwnas.api"), name)
        return super().__getattribute__(name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *API})


sys.modules[__name__].__class__ = _Package

__all__ = ["HwnasError", "__version__", *API]
