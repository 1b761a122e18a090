"""Turning probabilities into one architecture whose predicted latency is within the limit.

Argmax per layer first. If that is too slow, the repair swaps, one layer at a time, to the
faster candidate that gives up the least architecture log-probability per millisecond saved
(the arch probability is the product of the per-layer p, so log-probabilities add). Greedy
repair can overshoot, so a fill pass then takes back the swaps that gain the most
log-probability while the latency stays within the limit. The result is never over the limit:
the fastest net is always reachable, and the limit is checked against ``LatencyModel.predict``.
"""

from __future__ import annotations

import torch

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency import LatencyModel

_EPS = 1e-9


def derive_under_budget(probs: torch.Tensor, model: LatencyModel, limit_ms: float) -> Arch:
    """The most probable arch (greedy) with ``model.predict(arch) <= limit_ms``."""
    fastest, fastest_ms = model.fastest()
    if limit_ms < fastest_ms - _EPS:
        raise HwnasError(f"latency limit {limit_ms:.4g} ms is under the fastest net ({fastest_ms:.4g} ms)")
    space, mask = model.space, model.mask
    columns = space.candidates
    log_p = torch.log(probs.detach().double().clamp_min(1e-300)).masked_fill(~mask, float("-inf"))
    latency = model.calibrated_ms  # what each candidate adds to the prediction
    choice = log_p.argmax(dim=1).tolist()

    def predicted(current: list[int]) -> float:
        return model.predict(Arch(space.name, [columns[k] for k in current], space.args.to_dict()))

    total = predicted(choice)
    while total > limit_ms + _EPS:
        best: tuple[float, int, int] | None = None
        for layer, k in enumerate(choice):
            for j in torch.nonzero(mask[layer]).flatten().tolist():
                saved = float(latency[layer, k] - latency[layer, j])
                if saved <= 0:
                    continue
                cost = float(log_p[layer, k] - log_p[layer, j]) / saved
                if best is None or cost < best[0]:
                    best = (cost, layer, j)
        if best is None:  # every layer at its fastest op: only possible if the model disagrees with itself
            return fastest
        choice[best[1]] = best[2]
        total = predicted(choice)
    # fill: spend leftover slack on the swaps that regain the most log-probability
    while True:
        best_gain, best_swap = 0.0, None
        for layer, k in enumerate(choice):
            for j in torch.nonzero(mask[layer]).flatten().tolist():
                gain = float(log_p[layer, j] - log_p[layer, k])
                extra = float(latency[layer, j] - latency[layer, k])
                if gain > best_gain + _EPS and total + extra <= limit_ms + _EPS:
                    best_gain, best_swap = gain, (layer, j)
        if best_swap is None:
            break
        choice[best_swap[0]] = best_swap[1]
        total = predicted(choice)
        if total > limit_ms + _EPS:  # cannot happen: the calibrated parts add up; stay safe anyway
            raise HwnasError("internal error: fill pass went over the latency limit")
    arch = Arch(space.name, [columns[k] for k in choice], space.args.to_dict())
    return arch
