"""Differentiable searches under a latency budget.

``STRATEGIES`` maps a method name to its strategy class; adding a method (SPOS, GreedyNAS,
DSO-NAS) is adding one module and one line here.
"""

from __future__ import annotations

from hwnas.search.dsnas import DsnasStrategy
from hwnas.search.proxyless import ProxylessStrategy
from hwnas.search.snas import SnasStrategy
from hwnas.search.strategy import Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    ProxylessStrategy.name: ProxylessStrategy,
    SnasStrategy.name: SnasStrategy,
    DsnasStrategy.name: DsnasStrategy,
}

__all__ = ["STRATEGIES", "Strategy"]
