"""Searches under a latency budget: differentiable (alpha) and one-shot (evolution over a trained supernet).

``STRATEGIES`` maps a method name to its strategy class; adding a method (SPOS, GreedyNAS,
DSO-NAS) is adding one module and one line here.
"""

from __future__ import annotations

from hwnas import lend_api_call
from hwnas.search.dsnas import DsnasStrategy
from hwnas.search.dsonas import DsoNasStrategy
from hwnas.search.greedynas import GreedyNasStrategy
from hwnas.search.proxyless import ProxylessStrategy
from hwnas.search.snas import SnasStrategy
from hwnas.search.spos import RandomSearchStrategy, SposStrategy
from hwnas.search.strategy import Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    ProxylessStrategy.name: ProxylessStrategy,
    SnasStrategy.name: SnasStrategy,
    DsnasStrategy.name: DsnasStrategy,
    SposStrategy.name: SposStrategy,
    GreedyNasStrategy.name: GreedyNasStrategy,
    RandomSearchStrategy.name: RandomSearchStrategy,
    DsoNasStrategy.name: DsoNasStrategy,
}

__all__ = ["STRATEGIES", "Strategy"]

lend_api_call(__name__)  # hwnas.search(...) is hwnas.api.search (docs/python_api.md)
