"""Turning probabilities into one architecture at the latency limit, never over it.

The arch probability is the product of the per-layer probabilities, so log-probabilities add
and every pass below scores a one-layer swap by the log-probability it gives up per
millisecond it moves:

1. **argmax**: the most probable candidate of every layer.
2. **repair**, while the arch is over the limit: the swap to a faster candidate that gives up
   the least log-probability per ms saved.
3. **fill**, while slack is left: first every swap that *gains* log-probability and still
   fits (greedy repair can overshoot), then, with ``spend``, the swap to a slower candidate
   that gives up the least log-probability per ms gained, the mirror of the repair: larger
   nets under the budget are the accurate ones, and an arch that leaves half the budget
   unused is not the most accurate one under it. Without ``spend`` (``--one-sided``: the
   budget as a ceiling only) the arch keeps its slack.

The result is never over the limit: the fastest net is always reachable. The swaps are ranked
by the calibrated parts (``calibrated_ms``); each arch is checked with ``columns_ms``, the
model's prediction (the sum of those parts for a chain table; a whole-net model or a cell
space's unused ops can make it differ, and a fill swap that then goes over is undone), and the
result with ``predict`` at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency import LatencyModel

_EPS = 1e-9


@dataclass(frozen=True)
class Derivation:
    """The derived arch and how it came about (all latencies predicted, in ms)."""

    arch: Arch
    predicted_ms: float
    #: the most probable arch, before repair and fill
    argmax_ms: float
    #: swaps the repair made, and the ms it saved
    repair_swaps: int
    repair_ms: float
    #: swaps to slower candidates the fill made to spend slack, and the ms they added
    fill_swaps: int
    fill_ms: float

    def to_dict(self, aim_ms: float) -> dict:
        """The figures for ``result.json``, with each latency also as a share of the aim."""
        return {
            "argmax_ms": self.argmax_ms,
            "argmax_share_of_aim": self.argmax_ms / aim_ms,
            "repair_swaps": self.repair_swaps,
            "repair_ms": self.repair_ms,
            "fill_swaps": self.fill_swaps,
            "fill_ms": self.fill_ms,
            "fill_share_of_aim": self.fill_ms / aim_ms,
            "derived_share_of_aim": self.predicted_ms / aim_ms,
        }


def _best_swap(log_p: torch.Tensor, latency: torch.Tensor, choice: list[int], keep, score) -> tuple[int, int] | None:
    """The (layer, column) swap with the lowest ``score(logp_lost, ms_moved)`` among those ``keep`` admits."""
    rows = torch.arange(len(choice))
    current = torch.tensor(choice)
    lost = log_p[rows, current].unsqueeze(1) - log_p  # log-probability given up by each swap
    moved = latency - latency[rows, current].unsqueeze(1)  # ms each swap adds (negative: saves)
    admitted = keep(lost, moved) & torch.isfinite(log_p)
    if not bool(admitted.any()):
        return None
    scores = score(lost, moved).masked_fill(~admitted, float("inf"))
    flat = int(torch.argmin(scores))
    return flat // scores.shape[1], flat % scores.shape[1]


def derive_under_budget(probs: torch.Tensor, model: LatencyModel, limit_ms: float, spend: bool = True) -> Derivation:
    """The most probable arch (greedy) with ``model.predict(arch) <= limit_ms``, filled towards the limit with ``spend``."""
    _, fastest_ms = model.fastest()
    if limit_ms < fastest_ms - _EPS:
        raise HwnasError(f"latency limit {limit_ms:.4g} ms is under the fastest net ({fastest_ms:.4g} ms)")
    space = model.space
    log_p = torch.log(probs.detach().double().clamp_min(1e-300)).masked_fill(~model.mask, float("-inf"))
    latency = model.calibrated_ms  # what each candidate adds to the prediction
    choice = log_p.argmax(dim=1).tolist()
    argmax_ms = total = model.columns_ms(choice)

    repairs = 0
    while total > limit_ms + _EPS:
        swap = _best_swap(log_p, latency, choice, lambda lost, moved: moved < -_EPS, lambda lost, moved: lost / -moved)
        if swap is None:  # every layer at its fastest op: only possible if the model disagrees with itself
            raise HwnasError("internal error: the repair found no faster candidate above the fastest net")
        choice[swap[0]] = swap[1]
        total, repairs = model.columns_ms(choice), repairs + 1
    repaired_ms = total

    # a swap the table's parts say fits may not where the prediction is not their sum (a whole-net model, a cell
    # space's unused ops): it is undone and not tried again
    banned = torch.zeros_like(log_p, dtype=torch.bool)

    def fits(moved: torch.Tensor) -> torch.Tensor:
        return (total + moved <= limit_ms + _EPS) & ~banned

    def take(swap: tuple[int, int]) -> bool:
        nonlocal total
        before = choice[swap[0]]
        choice[swap[0]] = swap[1]
        ms = model.columns_ms(choice)
        if ms > limit_ms + _EPS:
            choice[swap[0]] = before
            banned[swap] = True
            return False
        total = ms
        return True

    while swap := _best_swap(log_p, latency, choice, lambda lost, moved: (lost < -_EPS) & fits(moved), lambda lost, moved: lost):
        take(swap)
    before_fill, fills = total, 0
    if spend:
        while swap := _best_swap(
            log_p, latency, choice, lambda lost, moved: (moved > _EPS) & fits(moved), lambda lost, moved: lost / moved
        ):
            fills += take(swap)
    columns = space.candidates
    arch = Arch(space.name, [columns[k] for k in choice], space.args.to_dict())
    predicted = model.predict(arch)
    if predicted > limit_ms + 1e-6:
        raise HwnasError(f"internal error: derived arch predicted {predicted:.6g} ms over the limit {limit_ms:.6g} ms")
    return Derivation(arch, predicted, argmax_ms, repairs, argmax_ms - repaired_ms, fills, total - before_fill)
