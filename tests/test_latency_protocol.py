"""The measurement protocol: counts, order of interleaved rounds, medians over rounds, real clocks."""

from __future__ import annotations

import resource
import time

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.latency.protocol import (
    Protocol,
    Runner,
    ThreadCpuClock,
    Timing,
    combine_rounds,
    measure_interleaved,
    measure_once,
)

INSTANT = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=1, min_s=0.0, rounds=2)


def test_protocol_rejects_nonsense():
    with pytest.raises(HwnasError, match="rounds"):
        Protocol(rounds=0)
    with pytest.raises(HwnasError, match="max_runs"):
        Protocol(min_runs=10, max_runs=5)


def test_measure_once_warms_up_then_reaches_min_runs_and_min_time():
    calls = []
    protocol = Protocol(warmup_runs=7, warmup_s=0.0, min_runs=25, min_s=0.0, rounds=1)
    timing = measure_once(lambda: calls.append(1), protocol)
    assert timing.n >= 25 and len(calls) == 7 + timing.n
    slow = measure_once(lambda: time.sleep(0.002), Protocol(warmup_runs=1, warmup_s=0.0, min_runs=2, min_s=0.03, rounds=1))
    assert sum(slow.samples_ms) >= 30 and slow.n >= 2


def test_real_clock_sees_a_known_sleep():
    timing = measure_once(lambda: time.sleep(0.003), Protocol(warmup_runs=1, warmup_s=0.0, min_runs=5, min_s=0.0, rounds=1))
    assert 3.0 <= timing.median_ms < 30.0
    assert timing.p10_ms <= timing.median_ms <= timing.p90_ms


def test_thread_cpu_clock_counts_work_on_the_thread_and_not_waiting():
    clock = ThreadCpuClock()
    assert max(clock.time_runs(lambda: time.sleep(0.02), 3)) < 5.0  # 20 ms asleep cost (almost) no CPU

    def thread_cpu_ms() -> float:  # an independent account of the same thread's CPU time
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        return (usage.ru_utime + usage.ru_stime) * 1e3

    before = thread_cpu_ms()
    samples = clock.time_runs(lambda: sum(range(300_000)), 20)
    spent = thread_cpu_ms() - before
    assert min(samples) > 0
    assert sum(samples) == pytest.approx(spent, rel=0.2, abs=5.0)


def test_rounds_are_interleaved_round_robin_alternating_direction():
    order: list[int] = []
    items = [Runner(lambda i=i: order.append(i)) for i in range(3)]
    protocol = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=1, min_s=0.0, rounds=3, max_runs=1)
    measure_interleaved(items, protocol=protocol)
    assert order == [0, 1, 2, 2, 1, 0, 0, 1, 2]  # one run per measurement: the visiting order itself


def test_rounds_done_are_skipped_and_callback_sees_every_measurement():
    counts = [0, 0, 0]
    items = [lambda i=i: counts.__setitem__(i, counts[i] + 1) for i in range(3)]
    seen = []
    results = measure_interleaved(
        items, rounds=3, protocol=INSTANT, on_measured=lambda i, r, t: seen.append((i, r)), rounds_done=[0, 2, 3]
    )
    assert sorted(seen) == [(0, 0), (0, 1), (0, 2), (1, 2)]
    assert results[2] is None and counts[2] == 0
    assert results[1].n == 1 and results[0].n == 3  # one round of item 1, three of item 0 (one run each)


def test_combine_rounds_takes_medians_over_rounds():
    rounds = [Timing(1.0, 0.9, 1.2, 10), Timing(5.0, 4.0, 6.0, 10), Timing(2.0, 1.5, 2.5, 10)]
    combined = combine_rounds(rounds)
    assert (combined.median_ms, combined.p10_ms, combined.p90_ms, combined.n) == (2.0, 1.5, 2.5, 30)


def test_timing_from_samples_matches_numpy_percentiles():
    samples = [3.0, 1.0, 2.0, 10.0, 4.0, 5.0, 6.0]
    timing = Timing.from_samples(samples)
    assert timing.median_ms == 4.0
    assert timing.p10_ms == pytest.approx(np.percentile(samples, 10))
    assert timing.p90_ms == pytest.approx(np.percentile(samples, 90))
    assert Timing.from_entry(timing.to_entry()).median_ms == 4.0
    with pytest.raises(HwnasError):
        Timing.from_samples([])
