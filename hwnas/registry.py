"""A registry: the only list of the names of one kind (methods, spaces, runtimes, data sets); a name registered twice is an error."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from hwnas.errors import HwnasError

T = TypeVar("T")


class Registry(dict[str, T]):
    """``name -> item`` in registration order, each item under its ``name`` attribute; refuses a name it already holds."""

    def __init__(self, kind: str, items: Iterable[T] = ()) -> None:
        super().__init__()
        self.kind = kind
        for item in items:
            self.register(item)

    def register(self, item: T, name: str | None = None) -> T:
        """Add ``item`` under ``name`` (default: ``item.name``) and return it, so it also serves as a class decorator."""
        self[item.name if name is None else name] = item  # type: ignore[attr-defined]
        return item

    def __setitem__(self, name: str, item: T) -> None:
        if name in self:
            raise HwnasError(
                f"{self.kind} {name!r} is registered twice ({self[name]!r} and {item!r}); give one of them another name"
            )
        super().__setitem__(name, item)

    def update(self, other: Mapping[str, T] | Iterable[tuple[str, T]] = (), **named: Any) -> None:
        for name, item in [*(other.items() if isinstance(other, Mapping) else other), *named.items()]:
            self[name] = item

    def setdefault(self, name: str, item: T) -> T:  # type: ignore[override]
        if name not in self:
            self[name] = item
        return self[name]
