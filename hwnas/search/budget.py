"""The latency budget: parsing ``--latency``, the aim under it, and the loss term that holds E[lat] there.

The budget is a hard limit on the *derived* net. Table predictions err, so the search aims at
``budget * (1 - margin)``; the margin defaults to the table's validated p90 relative error.

Loss forms (``--latency-loss``):

* ``lagrangian`` (default): ``CE + lambda * (E[lat] / aim - 1)``; after every arch step
  ``lambda <- lambda + rate * (E[lat] / aim - 1)``: it rises while the expected latency is
  over the aim and falls while under, so no per-budget tuning is needed. By default it may
  fall below 0: the aim is then a target, and a loose budget is spent on bigger ops instead
  of being left unused (larger nets are the accurate ones). ``one_sided`` keeps it >= 0, so
  the budget is only a ceiling.
* ``mul-log`` (ProxylessNAS default): ``coef * CE * (log E[lat] / log aim) ** beta`` with
  coef 0.2, beta 0.3, latencies in ms as in the reference code. The ratio of logs only makes
  sense for an aim above 1 ms, so smaller aims are refused.
* ``add-linear`` (ProxylessNAS): ``CE + coef * (E[lat] - aim) / aim`` with coef 0.1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from hwnas.errors import HwnasError

LOSS_FORMS = ("lagrangian", "mul-log", "add-linear")
DEFAULT_MARGIN = 0.05
_UNITS_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_LATENCY = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|us|µs)?\s*")


def parse_latency(text: str) -> float:
    """``80ms``, ``80 ms``, ``0.08s``, ``80000us`` or a bare ``80`` (ms) -> 80.0 ms."""
    match = _LATENCY.fullmatch(str(text).lower())
    if match is None:
        raise HwnasError(
            f"cannot read latency budget {text!r}: give a number with an optional unit ms, s or us, e.g. 80ms, 0.08s, 80000us"
        )
    value = float(match.group(1)) * _UNITS_MS[match.group(2) or "ms"]
    if not math.isfinite(value) or value <= 0:
        raise HwnasError(f"latency budget must be a positive time, got {text!r}")
    return value


@dataclass(frozen=True)
class Target:
    """Budget, margin and the aim the search steers to; the aim never goes under the fastest net."""

    budget_ms: float
    margin: float
    aim_ms: float
    fastest_ms: float
    slowest_ms: float
    margin_source: str

    @property
    def aim_clamped(self) -> bool:
        return self.aim_ms > self.budget_ms * (1 - self.margin) + 1e-12

    def clamp_note(self) -> str | None:
        """What a clamped aim costs, in words; None when the full margin fits under the budget."""
        if not self.aim_clamped:
            return None
        return (f"budget x (1 - margin {self.margin:.1%}) = {self.budget_ms * (1 - self.margin):.4g} ms is under the fastest "
                f"net ({self.fastest_ms:.4g} ms): the search aims at the fastest net, a margin of "
                f"{1 - self.aim_ms / self.budget_ms:.1%} only")


def make_target(budget_ms: float, fastest_ms: float, slowest_ms: float, margin: float | None, table_p90: float | None) -> Target:
    """Check the budget against the space before any training and work out the aim.

    A budget under the fastest net can never be met: refused with the fastest latency. When
    ``budget * (1 - margin)`` falls under the fastest net, the aim is the fastest net itself
    (the budget is still met; the report says the margin could not be kept in full).
    """
    if budget_ms < fastest_ms:
        raise HwnasError(
            f"latency budget {budget_ms:.4g} ms is under the fastest net of this space on this table "
            f"({fastest_ms:.4g} ms); no architecture can meet it"
        )
    if margin is None:
        margin, source = (table_p90, "table p90 relative error") if table_p90 is not None else (DEFAULT_MARGIN, "default 5 %")
    else:
        source = "--margin"
    if not 0 <= margin < 1:
        raise HwnasError(f"--margin must be in [0, 1), got {margin}")
    aim = max(budget_ms * (1 - margin), fastest_ms)
    return Target(budget_ms, float(margin), aim, fastest_ms, slowest_ms, source)


class BudgetController:
    """The latency term of the loss and, for the Lagrangian, its multiplier (state saved in checkpoints)."""

    def __init__(
        self, form: str, aim_ms: float, rate: float = 0.5, coef: float | None = None, beta: float = 0.3, one_sided: bool = False
    ) -> None:
        if form not in LOSS_FORMS:
            raise HwnasError(f"unknown latency loss {form!r}; known: {', '.join(LOSS_FORMS)}")
        if form == "mul-log" and aim_ms <= 1.0:
            raise HwnasError(
                f"--latency-loss mul-log needs an aim above 1 ms (log of the aim must be positive); the aim is {aim_ms:.4g} ms: "
                "use lagrangian or add-linear"
            )
        if rate < 0:
            raise HwnasError(f"--multiplier-rate must be >= 0, got {rate}")
        self.form, self.aim_ms, self.rate, self.beta, self.one_sided = form, aim_ms, rate, beta, one_sided
        self.coef = coef if coef is not None else {"mul-log": 0.2, "add-linear": 0.1, "lagrangian": 0.0}[form]
        self.multiplier = 0.0

    def loss(self, ce: torch.Tensor, expected_ms: torch.Tensor) -> torch.Tensor:
        """The search loss: cross-entropy combined with the expected latency (both differentiable)."""
        if self.form == "lagrangian":
            return ce + self.multiplier * (expected_ms / self.aim_ms - 1.0)
        if self.form == "add-linear":
            return ce + self.coef * (expected_ms - self.aim_ms) / self.aim_ms
        ratio = torch.log(expected_ms) / math.log(self.aim_ms)
        return self.coef * ce * ratio.clamp_min(1e-6) ** self.beta

    def update(self, expected_ms: float) -> None:
        """One dual ascent step of the Lagrangian multiplier (other forms have none)."""
        if self.form == "lagrangian":
            self.multiplier += self.rate * (expected_ms / self.aim_ms - 1.0)
            if self.one_sided:
                self.multiplier = max(0.0, self.multiplier)

    def state_dict(self) -> dict[str, float]:
        return {"multiplier": self.multiplier}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.multiplier = float(state["multiplier"])
