"""Random architectures within a latency band: the baseline every search must beat.

``sample_in_band`` draws archs **uniformly from the archs whose predicted latency lies in
[low, high]**: the distribution that "draw uniformly random archs and keep those in the band"
gives, the classic random-search baseline under a constraint (SPOS samples its candidates
that way). Drawing and rejecting cannot reach most bands, though: the latency of a uniform
arch concentrates around the space's mean, and not one of 200,000 uniform archs of the demo
table fell within 0.40-0.47 ms. So the draw goes through the counts instead.

The calibrated latency is a sum over layers (``LatencyModel.calibrated_ms``). On a grid of
``bins`` steps, a forward pass counts the archs of every partial sum, layer by layer; a draw
picks a final sum in the band with probability proportional to its count, then walks back
through the layers, picking each layer's candidate in proportion to the archs that complete
it. That is an exact uniform draw from the archs whose *rounded* sum lies in a band widened by
the largest rounding error, and accepting only those whose exact prediction lies in [low,
high] leaves an exact uniform draw from the band itself.
"""

from __future__ import annotations

import math
import random

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency import LatencyModel
from hwnas.spaces import DagSpace


class BandSampler:
    """Uniform draws from the archs of ``model.space`` whose predicted latency lies in [``low_ms``, ``high_ms``]."""

    def __init__(self, model: LatencyModel, low_ms: float, high_ms: float, bins: int = 4096) -> None:
        if not (math.isfinite(low_ms) and math.isfinite(high_ms)) or low_ms > high_ms:
            raise HwnasError(f"a latency band needs low <= high, got [{low_ms:.4g}, {high_ms:.4g}] ms")
        self.model, self.low_ms, self.high_ms = model, low_ms, high_ms
        fastest, slowest = model.fastest()[1], model.slowest()[1]
        if high_ms < fastest or low_ms > slowest:
            raise HwnasError(
                f"no arch of space {model.space.name} lies within [{low_ms:.4g}, {high_ms:.4g}] ms: "
                f"its nets span {fastest:.4g} - {slowest:.4g} ms on this table"
            )
        costs = model.calibrated_ms.numpy()
        legal = model.mask.numpy()
        if (costs[legal] < 0).any():
            raise HwnasError("the band sampler needs every candidate's calibrated latency >= 0")
        self.columns = [np.flatnonzero(row) for row in legal]
        self.step_ms = max(float(costs[legal].max()) * len(costs), 1e-12) / bins
        self.weights = [np.rint(costs[layer, cols] / self.step_ms).astype(np.int64) for layer, cols in enumerate(self.columns)]
        # counts[l][s]: archs of layers < l whose rounded parts sum to s steps (float64: 7^21 fits with room)
        size = int(sum(w.max() for w in self.weights)) + 1
        self.counts = [np.zeros(size)]
        self.counts[0][0] = 1.0
        for weights in self.weights:
            previous, current = self.counts[-1], np.zeros(size)
            for weight in weights:
                current[weight:] += previous[: size - weight]
            self.counts.append(current)
        # every part is off by at most half a step: widen the band by the sum of those errors
        slack = len(self.weights) / 2 + 1
        offset = model.calibrated_fixed_ms
        first = max(0, math.floor((low_ms - offset) / self.step_ms - slack))
        last = min(size - 1, math.ceil((high_ms - offset) / self.step_ms + slack))
        self.ends = np.arange(first, last + 1) if first <= last else np.arange(0)
        self.end_counts = self.counts[-1][self.ends] if len(self.ends) else np.zeros(0)
        if self.end_counts.sum() == 0:
            raise HwnasError(f"no arch of space {model.space.name} lies within [{low_ms:.4g}, {high_ms:.4g}] ms on this table")

    def uniform_share(self) -> float:
        """About how many of all the space's archs lie in the band (from the rounded counts): what rejection would accept."""
        return float(self.end_counts.sum() / self.counts[-1].sum())

    def draw_in_band(self, rng: np.random.Generator, max_draws: int = 100) -> list[int]:
        """One arch as candidate columns, uniform over the archs in the band (exact, checked).

        Where ``max_draws`` draws all miss (a band that holds a tiny share of the archs whose
        rounded sums fall in it, e.g. an aim clamped to the fastest net), the fastest net is
        returned if it lies in the band: the one arch always under an aim, never over it.
        """
        slack = 1e-9 * max(abs(self.high_ms), 1.0)  # an aim clamped to the fastest net is that net's sum, up to rounding
        for _ in range(max_draws):
            columns = self.draw_columns(rng)
            if self.low_ms - slack <= self.model.columns_ms(columns) <= self.high_ms + slack:
                return columns
        fastest = self.model.fastest_columns()
        if self.low_ms - slack <= self.model.columns_ms(fastest) <= self.high_ms + slack:
            return fastest
        raise HwnasError(f"no arch within [{self.low_ms:.4g}, {self.high_ms:.4g}] ms in {max_draws} draws; widen the band")

    def draw(self, rng: np.random.Generator) -> Arch:
        """One arch, uniform over the widened band (not yet checked against the exact band)."""
        names = self.model.space.candidates
        space = self.model.space
        return Arch(space.name, tuple(names[k] for k in self.draw_columns(rng)), space.args.to_dict())

    def draw_columns(self, rng: np.random.Generator) -> list[int]:
        """``draw``'s arch as candidate columns."""
        total = int(self.ends[rng.choice(len(self.ends), p=self.end_counts / self.end_counts.sum())])
        chosen: list[int] = []
        for layer in range(len(self.weights) - 1, -1, -1):
            weights, before = self.weights[layer], self.counts[layer]
            ways = np.array([before[total - w] if total - w >= 0 else 0.0 for w in weights])
            pick = rng.choice(len(weights), p=ways / ways.sum())
            chosen.append(int(self.columns[layer][pick]))
            total -= int(weights[pick])
        chosen.reverse()
        return chosen

    def sample(self, n: int, seed: int = 0, max_draws: int | None = None) -> list[Arch]:
        """``n`` distinct archs in the band, the same ones for the same seed."""
        if n < 1:
            raise HwnasError(f"the number of archs must be at least 1, got {n}")
        rng = np.random.default_rng(seed)
        found: dict[str, Arch] = {}
        limit = max_draws if max_draws is not None else 200 * n + 1000
        for _ in range(limit):
            arch = self.draw(rng)
            if self.low_ms <= self.model.predict(arch) <= self.high_ms:
                found.setdefault(arch.to_compact(), arch)
                if len(found) == n:
                    return list(found.values())
        raise HwnasError(
            f"found only {len(found)} distinct arch(s) within [{self.low_ms:.4g}, {self.high_ms:.4g}] ms in {limit} draws; "
            "widen the band"
        )


def sample_in_band(model: LatencyModel, low_ms: float, high_ms: float, n: int, seed: int = 0) -> list[Arch]:
    """``n`` distinct archs drawn uniformly from those whose predicted latency lies in [``low_ms``, ``high_ms``]."""
    return BandSampler(model, low_ms, high_ms).sample(n, seed)


class DagBandSampler:
    """Random archs of a DAG space (``dsonas``) whose predicted latency lies in [``low_ms``, ``high_ms``].

    Not uniform over the band (its archs cannot be counted layer by layer: a block's latency
    depends on which ops its edges leave live): each draw is ``DagSpace.random_choices`` (one
    keep probability per arch, from 0.05 to 0.95, every edge kept with it, isolated ops
    removed), the draws outside the band rejected. The keep probability spreads the draws over
    the space's latencies, so a band a few per cent wide is hit within a few hundred draws.
    """

    def __init__(self, model, low_ms: float, high_ms: float) -> None:
        if not (math.isfinite(low_ms) and math.isfinite(high_ms)) or low_ms > high_ms:
            raise HwnasError(f"a latency band needs low <= high, got [{low_ms:.4g}, {high_ms:.4g}] ms")
        fastest, slowest = model.fastest()[1], model.slowest()[1]
        if high_ms < fastest or low_ms > slowest:
            raise HwnasError(
                f"no arch of space {model.space.name} lies within [{low_ms:.4g}, {high_ms:.4g}] ms: "
                f"its nets span {fastest:.4g} - {slowest:.4g} ms on this table"
            )
        self.model, self.low_ms, self.high_ms = model, low_ms, high_ms

    def sample(self, n: int, seed: int = 0, max_draws: int | None = None) -> list[Arch]:
        """``n`` distinct archs in the band, the same ones for the same seed."""
        if n < 1:
            raise HwnasError(f"the number of archs must be at least 1, got {n}")
        rng, space = random.Random(seed), self.model.space
        found: dict[str, Arch] = {}
        limit = max_draws if max_draws is not None else 2000 * n
        for _ in range(limit):
            arch = Arch(space.name, space.random_choices(rng), space.args.to_dict())
            if self.low_ms <= self.model.predict(arch) <= self.high_ms:
                found.setdefault(arch.to_compact(), arch)
                if len(found) == n:
                    return list(found.values())
        raise HwnasError(
            f"found only {len(found)} distinct arch(s) within [{self.low_ms:.4g}, {self.high_ms:.4g}] ms in "
            f"{limit} draws; widen the band"
        )


def band_sampler(model, low_ms: float, high_ms: float):
    """The sampler of random archs in a latency band for the model's space: ``BandSampler`` (chain) or ``DagBandSampler``."""
    return DagBandSampler(model, low_ms, high_ms) if isinstance(model.space, DagSpace) else BandSampler(model, low_ms, high_ms)
