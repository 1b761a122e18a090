"""Random archs within a latency band: exactly uniform over the band (checked by enumeration), and every band reachable."""

from __future__ import annotations

import itertools
import json
import math
import random
from types import SimpleNamespace

import numpy
import pytest
import torch

from hwnas.arch import Arch
from hwnas.cli.main import cli
from hwnas.errors import HwnasError
from hwnas.latency import LatencyModel
from hwnas.search.random_archs import BandSampler, sample_in_band
from hwnas.search.synthetic import synthetic_table, write_synthetic_table

from helpers import tiny_space


class EnumerableModel:
    """Four layers of up to four candidates with random latencies: few enough archs to list them all."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        space = tiny_space()
        self.space = SimpleNamespace(name=space.name, candidates=space.candidates[:4], args=space.args)
        self.mask = torch.tensor([[k == 0 or rng.random() < 0.8 for k in range(4)] for _ in range(4)])
        self.calibrated_ms = torch.tensor([[rng.uniform(0.05, 1.0) for _ in range(4)] for _ in range(4)], dtype=torch.float64)
        self.calibrated_ms[~self.mask] = 0
        self.calibrated_fixed_ms = 0.2

    def columns(self, arch: Arch) -> list[int]:
        return [self.space.candidates.index(op) for op in arch.choices]

    def predict(self, arch: Arch) -> float:
        return self.calibrated_fixed_ms + sum(float(self.calibrated_ms[layer, k]) for layer, k in enumerate(self.columns(arch)))

    def all_archs(self) -> list[Arch]:
        legal = [[k for k in range(4) if self.mask[layer, k]] for layer in range(4)]
        return [Arch(self.space.name, tuple(self.space.candidates[k] for k in combo)) for combo in itertools.product(*legal)]

    def fastest(self):
        return min(((a, self.predict(a)) for a in self.all_archs()), key=lambda pair: pair[1])

    def slowest(self):
        return max(((a, self.predict(a)) for a in self.all_archs()), key=lambda pair: pair[1])


@pytest.mark.parametrize("seed", range(3))
def test_draws_are_uniform_over_the_archs_of_the_band_by_enumeration(seed):
    model = EnumerableModel(seed)
    ordered = sorted(model.all_archs(), key=model.predict)
    # a band holding the middle third of the archs, its edges halfway between neighbours
    first, last = len(ordered) // 3, 2 * len(ordered) // 3
    low = (model.predict(ordered[first - 1]) + model.predict(ordered[first])) / 2
    high = (model.predict(ordered[last]) + model.predict(ordered[last + 1])) / 2
    inside = {tuple(a.choices) for a in ordered if low <= model.predict(a) <= high}
    sampler = BandSampler(model, low, high, bins=256)  # a coarse grid: the exact check must still make it uniform
    rng = numpy.random.default_rng(seed)
    counts: dict[str, int] = {}
    draws = 0
    while draws < 200 * len(inside):
        arch = sampler.draw(rng)
        if low <= model.predict(arch) <= high:
            counts[tuple(arch.choices)] = counts.get(tuple(arch.choices), 0) + 1
            draws += 1
    assert set(counts) == inside
    # each of the k archs is drawn ~ Binomial(draws, 1/k): within 5 standard deviations of draws / k
    expected = draws / len(inside)
    sigma = math.sqrt(draws * (1 / len(inside)) * (1 - 1 / len(inside)))
    assert max(abs(c - expected) for c in counts.values()) < 5 * sigma


def test_a_band_that_uniform_draws_never_reach():
    space = tiny_space()
    model = LatencyModel(synthetic_table(space), space)
    fastest, slowest = model.fastest()[1], model.slowest()[1]
    low, high = fastest + 0.05 * (slowest - fastest), fastest + 0.08 * (slowest - fastest)
    uniform_hits = sum(low <= model.predict(Arch.random(space, seed)) <= high for seed in range(5000))
    assert uniform_hits == 0
    archs = sample_in_band(model, low, high, n=8, seed=3)
    assert len({a.to_compact() for a in archs}) == 8
    assert all(low <= model.predict(a) <= high for a in archs)
    assert [a.to_compact() for a in sample_in_band(model, low, high, n=8, seed=3)] == [a.to_compact() for a in archs]
    assert [a.to_compact() for a in sample_in_band(model, low, high, n=8, seed=4)] != [a.to_compact() for a in archs]


def test_empty_and_impossible_bands_are_refused():
    space = tiny_space()
    model = LatencyModel(synthetic_table(space), space)
    fastest, slowest = model.fastest()[1], model.slowest()[1]
    with pytest.raises(HwnasError, match="span"):
        BandSampler(model, slowest * 1.1, slowest * 1.2)
    with pytest.raises(HwnasError, match="low <= high"):
        BandSampler(model, 2.0, 1.0)
    with pytest.raises(HwnasError, match="only 1 distinct"):  # only the fastest net lies this low
        sample_in_band(model, fastest * 0.9, fastest, n=2)


def test_cli_samples_within_the_band_of_the_aim(cli_runner, tmp_path):
    space = tiny_space()
    table = write_synthetic_table(space, tmp_path / "table.json")
    model = LatencyModel(synthetic_table(space), space)
    budget = model.fastest()[1] + 0.3 * (model.slowest()[1] - model.fastest()[1])
    result = cli_runner.invoke(
        cli,
        [
            "arch",
            "sample",
            "--table",
            str(table),
            "--latency",
            f"{budget}ms",
            "--margin",
            "0.1",
            "--band",
            "0.9",
            "1.0",
            "-n",
            "5",
            "--seed",
            "1",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 5
    for row in rows:
        arch = Arch.from_dict({k: row[k] for k in ("space", "space_args", "choices")})
        assert row["predicted_ms"] == pytest.approx(model.predict(arch))
        assert 0.9 * 0.9 * budget - 1e-9 <= row["predicted_ms"] <= 0.9 * budget + 1e-9
    text = cli_runner.invoke(
        cli, ["arch", "sample", "--table", str(table), "--latency", f"{budget}ms", "--margin", "0.1", "-n", "5", "--seed", "1"]
    )
    assert [line.split("  ")[1] for line in text.stdout.splitlines()] == [
        Arch.from_dict({k: row[k] for k in ("space", "space_args", "choices")}).to_compact() for row in rows
    ]
    for args, words in [
        (["--latency", "1ms"], "go together"),
        (["--table", str(table)], "go together"),
        (["--table", str(table), "--latency", f"{budget}ms", "--band", "1.0", "0.9"], "LO <= HI"),
        (["--table", str(table), "--latency", f"{budget}ms", "--space", "shufflenet"], "measured space proxyless"),
    ]:
        refused = cli_runner.invoke(cli, ["arch", "sample", *args])
        assert refused.exit_code == 2 and words in refused.output, (args, refused.output)


def test_a_band_at_the_fastest_net_gives_the_fastest_net():
    """An aim clamped to the fastest net: the draws miss the one-arch band, so the fastest net itself is returned."""
    space = tiny_space()
    model = LatencyModel(synthetic_table(space), space)
    fastest = model.fastest()[1]
    columns = BandSampler(model, 0.0, fastest).draw_in_band(numpy.random.default_rng(0), max_draws=1)
    assert columns == model.fastest_columns()
    with pytest.raises(HwnasError, match="no arch"):
        BandSampler(model, fastest * 1.0001, fastest * 1.0001).draw_in_band(numpy.random.default_rng(0), max_draws=3)
