"""hwnas: hardware-aware neural architecture search and deployment.

Profile candidate ops on the target, search under a latency budget with a
differentiable method, export the derived child net and check the budget on
the artifact itself.

As a library: ``hwnas.profile``, ``validate``, ``show_table``, ``predict``, ``search``, ``train`` and
``export`` (``hwnas.api``, docs/python_api.md) take the commands' options and return result
objects; errors are ``hwnas.HwnasError``. ``hwnas.search``, ``hwnas.train`` and ``hwnas.export``
are also the submodules of those names: each such module is callable and calls the API function
(``ApiModule``), so both uses work. Everything loads on first use: ``import hwnas.spaces`` alone
stays light.
"""

import importlib
import inspect
import sys
import types
from typing import Any

from hwnas.errors import HwnasError

__version__ = "0.1.0"

#: the names ``hwnas`` lends from ``hwnas.api``
API = ("profile", "validate", "show_table", "predict", "search", "train", "export", "read_space")


class ApiModule(types.ModuleType):
    """A submodule whose name is also an API function's: calling the module calls ``hwnas.api.<name>``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._api_function()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._api_function())

    def _api_function(self) -> Any:
        return getattr(importlib.import_module("hwnas.api"), self.__name__.rpartition(".")[2])


def lend_api_call(module_name: str) -> None:
    """Make the module ``module_name`` (``hwnas.search``, ...) callable as the API function of its name."""
    sys.modules[module_name].__class__ = ApiModule


def __getattr__(name: str) -> Any:
    if name in ("search", "train", "export"):  # the submodule, callable as the function
        return importlib.import_module(f"hwnas.{name}")
    if name in API:
        return getattr(importlib.import_module("hwnas.api"), name)
    raise AttributeError(f"module 'hwnas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})


__all__ = ["HwnasError", "__version__", *API]
