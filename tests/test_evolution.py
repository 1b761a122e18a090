"""Evolution and random search under a budget, against score functions whose optimum is known."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.search.evolution import EvolutionOptions, crossover, evolve, mutate, random_search


def random_problem(seed: int, layers: int = 12, columns: int = 6):
    """Per-layer latencies, legal columns (column 0 'zero' legal only on some layers), and a rejection sampler."""
    rng = np.random.default_rng(seed)
    table = rng.uniform(0.1, 1.0, size=(layers, columns))
    table[:, 0] = 0.0
    legal = [tuple(range(columns)) if rng.random() < 0.5 else tuple(range(1, columns)) for _ in range(layers)]
    fastest = sum(min(table[layer, c] for c in cols) for layer, cols in enumerate(legal))
    slowest = sum(max(table[layer, c] for c in cols) for layer, cols in enumerate(legal))
    aim = fastest + rng.uniform(0.3, 0.8) * (slowest - fastest)

    def latency(arch):
        return float(sum(table[layer, c] for layer, c in enumerate(arch)))

    def sample(generator):
        for _ in range(10_000):
            arch = tuple(int(generator.choice(cols)) for cols in legal)
            if latency(arch) <= aim:
                return arch
        raise AssertionError("no arch under the aim")

    return table, legal, latency, sample, aim


@pytest.mark.parametrize("seed", range(5))
def test_mutation_and_crossover_keep_archs_legal(seed):
    _, legal, _, sample, _ = random_problem(seed)
    rng = np.random.default_rng(seed)
    for _ in range(200):
        a, b = sample(rng), sample(rng)
        for child in (mutate(a, legal, 0.5, rng), crossover(a, b, rng)):
            assert all(c in cols for c, cols in zip(child, legal))
    # crossover takes every layer from one of the parents; mutation with p = 1 still stays legal
    a, b = sample(rng), sample(rng)
    assert all(c in (x, y) for c, x, y in zip(crossover(a, b, rng), a, b))
    assert mutate(a, legal, 1e-12, rng) == a


@pytest.mark.parametrize("seed", range(6))
def test_evolution_never_scores_or_returns_an_arch_over_the_aim(seed):
    table, legal, latency, sample, aim = random_problem(seed)
    scored = []

    def score(arch):
        assert latency(arch) <= aim + 1e-12, "an arch over the aim was scored"
        scored.append(arch)
        return float(np.sum(table[np.arange(len(arch)), arch]))  # slower is better: pushes against the aim

    options = EvolutionOptions(population=20, top_k=5, mutations=8, crossovers=8, generations=6)
    # archs over the aim in the initial population are dropped, not scored
    over = tuple(int(max(cols, key=lambda c: table[layer, c])) for layer, cols in enumerate(legal))
    outcome = evolve(legal, sample, score, latency, aim, options, seed=seed, initial=[over])
    assert outcome.latency_ms <= aim + 1e-12
    assert len(scored) == len(set(scored)), "an arch was scored twice"
    assert len(scored) == len(outcome.scored) <= options.evaluations
    assert all(ms <= aim + 1e-12 for ms, _ in outcome.scored)
    best = random_search(sample, score, latency, aim, 50, seed=seed)
    assert best.latency_ms <= aim + 1e-12


def matches(target):
    return lambda arch: float(sum(a == t for a, t in zip(arch, target)))


@pytest.mark.parametrize("seed", range(2))
def test_evolution_finds_a_known_optimum_and_beats_random_search_at_the_same_evaluations(seed):
    """Score: layers that agree with a hidden target arch under the aim. The optimum (all agree) is known."""
    _, legal, latency, sample, aim = random_problem(seed, layers=21, columns=7)
    target = sample(np.random.default_rng(seed + 100))
    options = EvolutionOptions()  # SPOS's sizes: 50 x 20
    evolved = evolve(legal, sample, matches(target), latency, aim, options, seed=seed)
    randomly = random_search(sample, matches(target), latency, aim, options.evaluations, seed=seed)
    assert evolved.columns == target and evolved.score == len(target)
    assert randomly.score < evolved.score - 5, "random search came within 5 layers of the optimum: the test has no power"
    assert len(randomly.scored) == options.evaluations
    # the history is monotone and ends at the outcome
    best = [row["best_score"] for row in evolved.history]
    assert best == sorted(best) and best[-1] == evolved.score


def test_the_first_population_is_seeded_from_the_given_archs():
    _, legal, latency, sample, aim = random_problem(0, layers=21, columns=7)
    target = sample(np.random.default_rng(7))
    options = EvolutionOptions(population=10, top_k=3, mutations=3, crossovers=3, generations=1)
    outcome = evolve(legal, sample, matches(target), latency, aim, options, seed=0, initial=[target])
    assert outcome.columns == target


def test_bad_options_are_refused():
    with pytest.raises(HwnasError, match="exceed the population"):
        EvolutionOptions(population=10, mutations=8, crossovers=8)
    with pytest.raises(HwnasError, match="mutation probability"):
        EvolutionOptions(mutation_prob=0.0)
    with pytest.raises(HwnasError, match="generations must be at least 1"):
        EvolutionOptions(generations=0)
