"""Evolution under a latency budget, and random search with the same number of evaluations.

The search stage of the one-shot methods (SPOS, arXiv:1904.00420; GreedyNAS,
arXiv:2003.11236): once a supernet is trained, each candidate arch is scored with the
supernet's weights and the best one under the budget is kept. The rules are SPOS's
(``megvii-model/SinglePathOneShot``'s ``search.py``; mmrazor's ``EvolutionSearchLoop``):

* a first population of ``population`` archs (random under the aim, or given: GreedyNAS seeds
  it from its candidate pool);
* each generation scores every candidate not scored before (a cache keyed by the arch: no arch
  is scored twice), keeps the ``top_k`` best seen so far, and breeds the next population:
  ``mutations`` children of a random top arch whose every layer is redrawn with probability
  ``mutation_prob``, ``crossovers`` children whose every layer comes from one of two random top
  archs, and random archs to fill up to ``population``;
* a candidate over the aim is rejected before it is scored (so is one already scored or
  already in the population), and breeding stops after ``10 x`` the wanted number of tries, as
  in the reference;
* after ``generations`` generations the best scored arch is the result.

An arch is a tuple of candidate columns (``space.candidates`` indices), one per layer; only
columns legal at a layer (``zero`` only where the shortcut allows it) are ever drawn, so every
child of a legal parent is legal. Nothing here knows about torch: the score and the latency
are functions given by the caller (``hwnas.search.evaluator`` scores with supernet weights).

``random_search`` is the baseline the evolution must beat: the same random draws under the
aim, the same score, the same number of evaluations, no selection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from hwnas.errors import HwnasError

Columns = tuple[int, ...]


@dataclass(frozen=True)
class EvolutionOptions:
    """The evolution's sizes; the defaults are SPOS's."""

    population: int = 50
    top_k: int = 10
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1
    generations: int = 20

    def __post_init__(self) -> None:
        for name in ("population", "top_k", "generations"):
            if getattr(self, name) < 1:
                raise HwnasError(f"evolution {name} must be at least 1, got {getattr(self, name)}")
        for name in ("mutations", "crossovers"):
            if getattr(self, name) < 0:
                raise HwnasError(f"evolution {name} must be >= 0, got {getattr(self, name)}")
        if self.mutations + self.crossovers > self.population:
            raise HwnasError(
                f"{self.mutations} mutations + {self.crossovers} crossovers exceed the population of {self.population}"
            )
        if not 0.0 < self.mutation_prob <= 1.0:
            raise HwnasError(f"the mutation probability must lie in (0, 1], got {self.mutation_prob}")

    @classmethod
    def of(cls, options: dict[str, Any]) -> EvolutionOptions:
        """The evolution's sizes among a one-shot method's options (the rest are ignored)."""
        return cls(**{name: options[name] for name in cls.__dataclass_fields__})

    @property
    def evaluations(self) -> int:
        """The most archs the evolution scores (fewer where breeding finds no new arch)."""
        return self.population * self.generations


@dataclass
class SearchOutcome:
    """The best arch found, and what the search saw on the way (for the report and the plots)."""

    columns: Columns
    score: float
    latency_ms: float
    #: one row per generation (random search: one per ``population`` evaluations):
    #: generation, best score so far and its latency, archs scored so far
    history: list[dict[str, Any]] = field(default_factory=list)
    #: every scored arch's (predicted ms, score), in the order scored
    scored: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "score": self.score,
            "latency_ms": self.latency_ms,
            "history": self.history,
            "scored": [list(p) for p in self.scored],
        }


class Scorer:
    """Scores archs once each: ``score`` and the latency check, with a cache and a count."""

    def __init__(self, score: Callable[[Columns], float], latency_ms: Callable[[Columns], float], aim_ms: float) -> None:
        self.score_fn, self.latency_fn, self.aim_ms = score, latency_ms, aim_ms
        self.cache: dict[Columns, float] = {}
        self.scored: list[tuple[float, float]] = []

    def fits(self, columns: Columns) -> bool:
        return self.latency_fn(columns) <= self.aim_ms + 1e-9 * max(abs(self.aim_ms), 1.0)

    def take_new(self, columns: Columns, taken: set[Columns]) -> bool:
        """Whether ``columns`` is a candidate worth scoring: under the aim, not scored, not in ``taken`` (it joins it)."""
        if columns in taken or columns in self.cache or not self.fits(columns):
            return False
        taken.add(columns)
        return True

    def __call__(self, columns: Columns) -> float:
        if columns not in self.cache:
            if not self.fits(columns):
                raise HwnasError(
                    f"internal error: an arch at {self.latency_fn(columns):.4g} ms over the aim {self.aim_ms:.4g} ms was scored"
                )
            self.cache[columns] = float(self.score_fn(columns))
            self.scored.append((self.latency_fn(columns), self.cache[columns]))
        return self.cache[columns]

    def best(self) -> tuple[Columns, float]:
        columns = max(self.cache, key=lambda c: self.cache[c])
        return columns, self.cache[columns]


def mutate(parent: Columns, legal: Sequence[Sequence[int]], prob: float, rng: np.random.Generator) -> Columns:
    """``parent`` with each layer redrawn uniformly from its legal columns with probability ``prob``."""
    return tuple(int(rng.choice(legal[i])) if rng.random() < prob else c for i, c in enumerate(parent))


def crossover(a: Columns, b: Columns, rng: np.random.Generator) -> Columns:
    """Each layer from ``a`` or ``b`` with probability 1/2."""
    return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))


def _breed(make: Callable[[], Columns], wanted: int, accept: Callable[[Columns], bool]) -> list[Columns]:
    found: list[Columns] = []
    for _ in range(10 * wanted):
        if len(found) >= wanted:
            break
        candidate = make()
        if accept(candidate):
            found.append(candidate)
    return found


def evolve(
    legal: Sequence[Sequence[int]],
    sample: Callable[[np.random.Generator], Columns],
    score: Callable[[Columns], float],
    latency_ms: Callable[[Columns], float],
    aim_ms: float,
    options: EvolutionOptions = EvolutionOptions(),
    seed: int = 0,
    initial: Sequence[Columns] = (),
    progress: bool = False,
) -> SearchOutcome:
    """The best-scoring arch under ``aim_ms`` found by evolution (see the module docstring).

    ``legal[l]``: the columns allowed at layer l. ``sample(rng)``: a random arch under the aim
    (``hwnas.search.random_archs`` draws them uniformly). ``initial``: archs for the first
    population (those over the aim are dropped), topped up with random ones.
    """
    rng = np.random.default_rng(seed)
    scorer = Scorer(score, latency_ms, aim_ms)
    population = list(dict.fromkeys(tuple(c) for c in initial if scorer.fits(tuple(c))))[: options.population]
    population += _random_fill(sample, rng, options.population - len(population), set(population), scorer)
    if not population:
        raise HwnasError(f"no arch under the aim {aim_ms:.4g} ms to start the evolution from")
    history: list[dict[str, Any]] = []
    bar = tqdm(total=options.generations, desc="evolution", disable=not progress, leave=False)
    for generation in range(options.generations):
        for columns in population:
            scorer(columns)
        top = sorted(scorer.cache, key=lambda c: scorer.cache[c], reverse=True)[: options.top_k]
        best = top[0]
        history.append(
            {"generation": generation, "best_score": scorer.cache[best], "best_ms": latency_ms(best), "scored": len(scorer.cache)}
        )
        bar.update(1)
        bar.set_postfix(best=f"{scorer.cache[best]:.4f}", ms=f"{latency_ms(best):.3f}")
        if generation == options.generations - 1:
            break
        seen: set[Columns] = set()
        new = lambda candidate: scorer.take_new(candidate, seen)  # noqa: E731
        children = _breed(lambda: mutate(top[rng.integers(len(top))], legal, options.mutation_prob, rng), options.mutations, new)
        children += _breed(
            lambda: crossover(top[rng.integers(len(top))], top[rng.integers(len(top))], rng), options.crossovers, new
        )
        children += _random_fill(sample, rng, options.population - len(children), seen, scorer)
        population = children
    bar.close()
    columns, best_score = scorer.best()
    return SearchOutcome(columns, best_score, latency_ms(columns), history, scorer.scored)


def random_search(
    sample: Callable[[np.random.Generator], Columns],
    score: Callable[[Columns], float],
    latency_ms: Callable[[Columns], float],
    aim_ms: float,
    evaluations: int,
    seed: int = 0,
    report_every: int = 50,
    progress: bool = False,
) -> SearchOutcome:
    """The best of ``evaluations`` distinct random archs under ``aim_ms`` (fewer if the space has fewer)."""
    if evaluations < 1:
        raise HwnasError(f"random search needs at least 1 evaluation, got {evaluations}")
    rng = np.random.default_rng(seed)
    scorer = Scorer(score, latency_ms, aim_ms)
    history: list[dict[str, Any]] = []
    bar = tqdm(total=evaluations, desc="random search", disable=not progress, leave=False)
    misses = 0
    while len(scorer.cache) < evaluations and misses < 10 * evaluations:
        candidate = sample(rng)
        if candidate in scorer.cache or not scorer.fits(candidate):
            misses += 1
            continue
        scorer(candidate)
        bar.update(1)
        if len(scorer.cache) % report_every == 0 or len(scorer.cache) == evaluations:
            best, best_score = scorer.best()
            history.append(
                {"generation": len(history), "best_score": best_score, "best_ms": latency_ms(best), "scored": len(scorer.cache)}
            )
    bar.close()
    if not scorer.cache:
        raise HwnasError(f"no arch under the aim {aim_ms:.4g} ms to score")
    columns, best_score = scorer.best()
    return SearchOutcome(columns, best_score, latency_ms(columns), history, scorer.scored)


def _random_fill(
    sample: Callable[[np.random.Generator], Columns], rng: np.random.Generator, wanted: int, taken: set[Columns], scorer: Scorer
) -> list[Columns]:
    """Up to ``wanted`` random archs under the aim, none in ``taken`` or scored before; adds them to ``taken``."""
    return _breed(lambda: tuple(sample(rng)), max(wanted, 0), lambda candidate: scorer.take_new(candidate, taken))
