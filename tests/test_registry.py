"""The registries (methods, spaces, runtimes, data sets) are the only lists of names: a name registered twice is an error."""

from __future__ import annotations

import pytest

from hwnas.data import DATA_SETS
from hwnas.errors import HwnasError
from hwnas.latency.runtimes import RUNTIMES
from hwnas.registry import Registry
from hwnas.search import STRATEGIES
from hwnas.spaces import SPACES

REGISTRIES = {"method": STRATEGIES, "space": SPACES, "runtime": RUNTIMES, "data set": DATA_SETS}


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_registered_item_sits_under_its_own_name(kind):
    registry = REGISTRIES[kind]
    assert isinstance(registry, Registry) and registry.kind == kind and len(registry) >= 3
    assert all(item.name == name for name, item in registry.items())


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_registering_a_name_twice_is_an_error(kind):
    registry = REGISTRIES[kind]
    before = dict(registry)
    name, item = next(iter(registry.items()))
    with pytest.raises(HwnasError, match=rf"{kind} '{name}' is registered twice"):
        registry.register(item)
    with pytest.raises(HwnasError, match="registered twice"):
        registry[name] = item
    with pytest.raises(HwnasError, match="registered twice"):
        registry.update({name: item})
    assert dict(registry) == before  # nothing replaced


def test_a_registry_keeps_order_and_takes_new_names():
    class Item:
        def __init__(self, name):
            self.name = name

    first, second = Item("a"), Item("b")
    registry = Registry("thing", [first])
    assert registry.register(second) is second and list(registry) == ["a", "b"]
    assert registry.setdefault("a", Item("a")) is first
    with pytest.raises(HwnasError, match="thing 'b' is registered twice"):
        Registry("thing", [first, second, Item("b")])
