"""The latency budget: parsing ``--latency``, the aim under it, and the loss term that holds the derived net there.

The budget is a hard limit on the *derived* net. Table predictions err, so the search aims at
``budget * (1 - margin)``; the margin defaults to the table's validated p90 relative error.
The aim lies within the space: never under its fastest net, never over its slowest.

Loss forms (``--latency-loss``):

* ``lagrangian`` (default): ``CE + lambda * (E[lat] / aim - 1)``. E[lat] carries the gradient
  to alpha (it is differentiable); the multiplier ``lambda`` is set by a feedback controller
  whose measurement is not E[lat] but the predicted latency of what will be derived, the
  most probable arch (``BudgetController.update``). See its docstring for the design.
* ``mul-log`` (ProxylessNAS's default form): ``coef * CE * (E[lat] / aim) ** beta``, coef 0.2,
  beta 0.3. The reference writes ``(log E[lat] / log T) ** beta`` with latencies in ms, a
  ratio that depends on the unit, is negative under 1 ms and undefined at 1 ms; ``E / aim``
  is the same shape made unit-free (1 at the aim, rising with E), so it works at any budget.
  Its slope at the aim is ``beta / aim`` where the reference's is ``beta / (aim ln T)``, 4.4x
  weaker at the paper's 80 ms.
* ``add-linear`` (ProxylessNAS): ``CE + coef * (E[lat] - aim) / aim`` with coef 0.1.

The two paper forms have a fixed strength: they hold nothing at the aim, and the derivation
(``hwnas.search.derive``) spends what they leave unused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

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
    if not math.isfinite(value):
        raise HwnasError(f"latency budget {text!r} is too large to be a time")
    if value <= 0:
        raise HwnasError(f"latency budget must be a positive time, got {text!r}")
    return value


@dataclass(frozen=True)
class Target:
    """Budget, margin and the aim the search steers to: within the space, from its fastest to its slowest net."""

    budget_ms: float
    margin: float
    aim_ms: float
    fastest_ms: float
    slowest_ms: float
    margin_source: str

    @property
    def aim_clamped(self) -> bool:
        return self.clamp_note() is not None

    def clamp_note(self) -> str | None:
        """Why the aim is not ``budget x (1 - margin)``, in words; None when it is."""
        wanted = self.budget_ms * (1 - self.margin)
        if wanted < self.fastest_ms - 1e-12:
            return (
                f"budget x (1 - margin {self.margin:.1%}) = {wanted:.4g} ms is under the fastest "
                f"net ({self.fastest_ms:.4g} ms): the search aims at the fastest net, a margin of "
                f"{1 - self.aim_ms / self.budget_ms:.1%} only"
            )
        if wanted > self.slowest_ms + 1e-12:
            return (
                f"budget x (1 - margin {self.margin:.1%}) = {wanted:.4g} ms is over the slowest net "
                f"({self.slowest_ms:.4g} ms): the search aims at the slowest net, {self.aim_ms / self.budget_ms:.1%} "
                f"of the budget"
            )
        return None


def make_target(budget_ms: float, fastest_ms: float, slowest_ms: float, margin: float | None, table_p90: float | None) -> Target:
    """Check the budget against the space before any training and work out the aim.

    A budget under the fastest net can never be met: refused with the fastest latency. When
    ``budget * (1 - margin)`` falls under the fastest net, the aim is the fastest net itself
    (the budget is still met; the report says the margin could not be kept in full); when it
    lies over the slowest net, the aim is the slowest net (no arch can spend more).
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
    aim = min(max(budget_ms * (1 - margin), fastest_ms), slowest_ms)
    return Target(budget_ms, float(margin), aim, fastest_ms, slowest_ms, source)


class BudgetController:
    """The latency term of the loss and, for the Lagrangian, the controller of its multiplier.

    **What is fed back.** The search derives the most probable arch (argmax per layer, then
    repair and fill, ``hwnas.search.derive``), so the controller measures that arch's
    predicted latency, ``x = argmax_ms / aim - 1``, after every arch step. Feeding back
    E[lat] instead holds the *mean* of the distribution at the aim while the argmax can sit
    anywhere: in the README demo it left more than half of the budget unused (docs/DESIGN.md,
    section 8).

    **The design: a bounded PI controller with conditional integration.** ``lambda = I + gain *
    x`` with ``I <- I + rate * x``, both clipped to ``[-bound, bound]`` (``[0, bound]`` when
    ``one_sided``). Adam on alpha moves each entry by about its step size whatever the size
    of its gradient, so alpha's velocity follows only the sign of the latency term once that
    term dominates: an integral-only multiplier is then a double integrator that swings
    further each cycle (E[lat] 1.59 -> 0.995 -> 0.33 -> 1.97 -> 0.22 -> 2.33 ms over 130
    latency-only steps). The proportional term reverses the push as soon as the argmax
    crosses the aim, the integral removes the steady offset against the task gradient, and
    the bound keeps it from winding up. Integration also stops while the aim lies outside
    ``reachable`` (the fastest / slowest arch still possible, e.g. with layers fixed by
    DSNAS's early stop): an error nothing can remove must not drive lambda to its bound.
    ``docs/search.md`` has the measurements behind the choice.
    """

    #: how many recent errors ``settled`` averages
    WINDOW = 20

    def __init__(
        self,
        form: str,
        aim_ms: float,
        rate: float = 0.5,
        coef: float | None = None,
        beta: float = 0.3,
        one_sided: bool = False,
        gain: float = 10.0,
        bound: float = 50.0,
    ) -> None:
        if form not in LOSS_FORMS:
            raise HwnasError(f"unknown latency loss {form!r}; known: {', '.join(LOSS_FORMS)}")
        for name, value in (("multiplier rate", rate), ("multiplier gain", gain), ("multiplier bound", bound)):
            if not (math.isfinite(value) and value >= 0):
                raise HwnasError(f"{name} must be a finite number >= 0, got {value}")
        if not (math.isfinite(aim_ms) and aim_ms > 0):
            raise HwnasError(f"the latency aim must be a positive number of ms, got {aim_ms}")
        self.form, self.aim_ms, self.beta, self.one_sided = form, aim_ms, beta, one_sided
        self.rate, self.gain, self.bound = rate, gain, bound
        self.coef = coef if coef is not None else {"mul-log": 0.2, "add-linear": 0.1, "lagrangian": 0.0}[form]
        self.multiplier = 0.0
        self.integral = 0.0
        self.errors: list[float] = []

    def loss(self, ce: torch.Tensor, expected_ms: torch.Tensor) -> torch.Tensor:
        """The search loss: cross-entropy combined with the expected latency (both differentiable)."""
        ratio = expected_ms / self.aim_ms
        if self.form == "lagrangian":
            return ce + self.multiplier * (ratio - 1.0)
        if self.form == "add-linear":
            return ce + self.coef * (ratio - 1.0)
        return self.coef * ce * ratio.clamp_min(1e-6) ** self.beta

    def update(self, derived_ms: float, reachable: tuple[float, float] | None = None) -> None:
        """One controller step on the predicted latency of the arch that would be derived now.

        ``reachable``: the (fastest, slowest) latency still reachable; while the aim lies
        outside it, the integral holds. Every form records the error (see ``settled``).
        """
        error = derived_ms / self.aim_ms - 1.0
        self.errors = (self.errors + [error])[-self.WINDOW :]
        if self.form != "lagrangian":
            return
        low = 0.0 if self.one_sided else -self.bound
        stuck = reachable is not None and (
            (error < 0 and reachable[1] < self.aim_ms) or (error > 0 and reachable[0] > self.aim_ms)
        )
        if not stuck:
            self.integral = min(max(self.integral + self.rate * error, low), self.bound)
        self.multiplier = min(max(self.integral + self.gain * error, low), self.bound)

    def settled(self, tolerance: float) -> bool:
        """Whether the derived arch has stayed near the aim: the mean of the last errors within ``tolerance``."""
        return len(self.errors) >= self.WINDOW and abs(sum(self.errors) / len(self.errors)) <= tolerance

    def state_dict(self) -> dict[str, Any]:
        return {"multiplier": self.multiplier, "integral": self.integral, "errors": list(self.errors)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.multiplier = float(state["multiplier"])
        self.integral = float(state.get("integral", state["multiplier"]))
        self.errors = [float(e) for e in state.get("errors", [])]
