"""The measurement protocol (DESIGN.md section 3): warm-up, repeats, median and spread, rounds.

One *round* of one item: warm up until both ``warmup_runs`` runs and ``warmup_s`` seconds have
passed, then time single runs until both ``min_runs`` and ``min_s`` are reached (``max_runs``
caps very fast items). Its value is the median; p10/p90 say how wide it was.

Items are measured in several rounds interleaved round-robin (item 1, item 2, ..., item 1,
item 2, ...), alternating direction, and an item's value is the median over its rounds (the
full warm-up happens in an item's first round of a run; later rounds warm up by count). On a
shared machine the load drifts by as much as the effects measured; interleaving makes a slow
minute hit every item alike instead of the few measured during it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwnas.errors import HwnasError


@dataclass(frozen=True)
class Protocol:
    """How long to warm up and to time each item, and in how many interleaved rounds."""

    warmup_runs: int = 10
    warmup_s: float = 0.2
    min_runs: int = 20
    min_s: float = 0.2
    rounds: int = 3
    max_runs: int = 100_000

    def __post_init__(self) -> None:
        if self.warmup_runs < 0 or self.warmup_s < 0 or self.min_s < 0:
            raise HwnasError("protocol: warm-up runs and times must be >= 0")
        if self.min_runs < 1 or self.rounds < 1:
            raise HwnasError(f"protocol: min_runs and rounds must be >= 1 (got {self.min_runs}, {self.rounds})")
        if self.max_runs < self.min_runs:
            raise HwnasError(f"protocol: max_runs {self.max_runs} < min_runs {self.min_runs}")

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Timing:
    """Latency of one item in ms: median, 10th and 90th percentile, and how many runs they rest on."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    n: int
    samples_ms: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        if not samples_ms:
            raise HwnasError("no timing samples")
        values = np.asarray(samples_ms, dtype=np.float64)
        p10, p50, p90 = np.percentile(values, [10, 50, 90])
        return cls(float(p50), float(p10), float(p90), len(values), [float(v) for v in values])

    def to_entry(self) -> dict[str, float]:
        """The latency-table form ``{"ms", "p10", "p90", "n"}``."""
        return {"ms": self.median_ms, "p10": self.p10_ms, "p90": self.p90_ms, "n": self.n}

    @classmethod
    def from_entry(cls, entry: dict) -> Timing:
        return cls(float(entry["ms"]), float(entry["p10"]), float(entry["p90"]), int(entry["n"]))


def combine_rounds(rounds: Sequence[Timing]) -> Timing:
    """One value from several rounds: the median of the round medians (and of their p10/p90).

    The median over rounds, not over pooled samples, so that one slow round (another process
    woke up) cannot move the value, however many samples it holds.
    """
    if not rounds:
        raise HwnasError("no rounds to combine")
    return Timing(
        statistics.median(t.median_ms for t in rounds),
        statistics.median(t.p10_ms for t in rounds),
        statistics.median(t.p90_ms for t in rounds),
        sum(t.n for t in rounds),
        [s for t in rounds for s in t.samples_ms],
    )


class Clock:
    """Times ``count`` runs of ``fn`` one by one; returns ms per run. Host clock: for synchronous work."""

    #: what a table records as ``meta["clock"]`` where the clock is the runtime's choice
    name = "wall"
    #: the clock read before and after each run, in ns
    now = staticmethod(time.perf_counter_ns)

    def time_runs(self, fn: Callable[[], object], count: int) -> list[float]:
        samples = []
        for _ in range(count):
            start = self.now()
            fn()
            samples.append((self.now() - start) / 1e6)
        return samples


class ThreadCpuClock(Clock):
    """Times runs by the calling thread's CPU time (``time.thread_time_ns``); ms per run.

    For work done entirely on the calling thread (a runtime at one thread that runs its ops
    inline). A run's wall time also holds the time the thread waited for a core while another
    process had it; on a shared machine a long-lived timing loop gets only its fair share of a
    core, so that wait can be as long as the run itself. The thread's CPU time leaves it out and
    keeps what the run costs on the core: what an undisturbed run takes (measured in
    docs/mobile.md). Wrong for work on other threads, which it does not see.
    """

    name = "thread_cpu"
    now = staticmethod(time.thread_time_ns)


def host_clock(inline: bool) -> Clock:
    """The clock of a CPU runtime: the calling thread's CPU time where it runs every op itself (``inline``), else the wall clock."""
    return ThreadCpuClock() if inline else Clock()


@dataclass
class Runner:
    """A prepared item: ``fn`` runs it once (inputs bound, session built); ``clock`` times it.

    ``info`` is what the runtime found out while preparing it that a table entry records
    beside its timing (ExecuTorch: whether the delegate took all of it).
    """

    fn: Callable[[], object]
    clock: Clock = field(default_factory=Clock)
    label: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def _as_runner(item: Runner | Callable[[], object]) -> Runner:
    if isinstance(item, Runner):
        return item
    if callable(item):
        return Runner(item)
    raise HwnasError(f"cannot measure {item!r}: expected a Runner or a zero-argument callable")


def measure_once(item: Runner | Callable[[], object], protocol: Protocol, warm_up_by_time: bool = True) -> Timing:
    """One round of one item: warm up, then time until the minimum count and time are reached.

    ``warm_up_by_time=False`` warms up by count only: for the later rounds of an item that was
    warmed up for ``warmup_s`` in its first round (its caches need refilling, its code paths
    and allocations are done).
    """
    runner = _as_runner(item)
    warmup_s = protocol.warmup_s if warm_up_by_time else 0.0
    start = time.perf_counter()
    done = 0
    while done < protocol.warmup_runs or time.perf_counter() - start < warmup_s:
        runner.fn()
        done += 1
    samples: list[float] = []
    batch = max(1, min(protocol.min_runs, 10))
    while len(samples) < protocol.min_runs or sum(samples) < protocol.min_s * 1e3:
        if len(samples) >= protocol.max_runs:
            break
        samples.extend(runner.clock.time_runs(runner.fn, batch))
    return Timing.from_samples(samples)


def measure_interleaved(
    items: Sequence[Runner | Callable[[], object]],
    rounds: int | None = None,
    protocol: Protocol | None = None,
    on_measured: Callable[[int, int, Timing], None] | None = None,
    rounds_done: Sequence[int] | None = None,
    measure_one: Callable[[Runner, bool], Timing] | None = None,
) -> list[Timing]:
    """Measure every item in ``rounds`` interleaved rounds; each item's value is its median over rounds.

    ``measure_one(runner, warm_up_by_time)`` measures one round of one item where the item does
    not run in this process (a phone's runner); by default ``measure_once`` with ``protocol``.

    ``rounds_done[i]`` rounds of item ``i`` were measured before (a resumed profile): it gets only
    the rest, and its result combines only the rounds measured here (the caller holds the old
    ones). ``on_measured(index, round, timing)`` is called after every single measurement, so a
    caller can save progress. Items with no rounds left get ``None`` in the result.
    """
    protocol = protocol or Protocol()
    rounds = protocol.rounds if rounds is None else rounds
    if rounds < 1:
        raise HwnasError(f"rounds must be >= 1, got {rounds}")
    runners = [_as_runner(item) for item in items]
    done = list(rounds_done) if rounds_done is not None else [0] * len(runners)
    if len(done) != len(runners):
        raise HwnasError("rounds_done must have one count per item")
    measured: list[list[Timing]] = [[] for _ in runners]
    for round_index in range(rounds):
        order = range(len(runners)) if round_index % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            if done[i] + len(measured[i]) > round_index:
                continue
            first = not measured[i]
            timing = measure_one(runners[i], first) if measure_one else measure_once(runners[i], protocol, first)
            measured[i].append(timing)
            if on_measured is not None:
                on_measured(i, round_index, timing)
    return [combine_rounds(timings) if timings else None for timings in measured]  # type: ignore[misc]
