"""ExecuTorch in process, by the thread's CPU time and by the wall clock, against the x86 executor_runner, interleaved.

For each of a few random proxyless nets (32x32, 1 channel, 10 classes, width 1.0; or 224x224, 3
channels, 1000 classes with ``--resolution 224``) lowered to a
``.pte``, each round times the program in this process by the runtime's clock (the thread's CPU
time at one thread), by the wall clock (what the runtime did before), and through
``executor_runner --cpu_threads=1`` (``bench/build_runner.sh``), and reads the run-queue wait of
this thread during the wall-clock timing (its share of that time) from
``/proc/thread-self/schedstat``. It prints each
round, then per net the median ratio of each in-process figure to the runner's, their range
over rounds, and each figure's round-to-round spread (its noise floor).

    python bench/executorch_clock.py --nets 3 --rounds 5
    python bench/executorch_clock.py --nets 2 --rounds 5 --resolution 224

On a machine shared with other busy processes, the wall clock's figure holds the time the timing
loop waited for a core (docs/mobile.md, "Measured").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mobile_numbers import x86_runner

from hwnas.arch import Arch
from hwnas.latency.android import parse_iterations
from hwnas.latency.executorch_program import lower
from hwnas.latency.protocol import Clock, Protocol, Runner, measure_once
from hwnas.latency.runtimes import get_runtime
from hwnas.spaces import get_space


def _waited_ms() -> float:
    return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=32, choices=(32, 224))
    args = parser.parse_args(argv)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime at the start: {uptime}", flush=True)
    binary = x86_runner()
    small = args.resolution == 32
    space = get_space("proxyless", resolution=args.resolution, in_channels=1 if small else 3, num_classes=10 if small else 1000)
    shape = (1, *space.input_shape)
    runtime = get_runtime("executorch", "cpu", 1)
    protocol = Protocol()
    print(f"runtime clock: {runtime.meta()['clock']}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        ptes, runners = [], []
        for seed in range(1, args.nets + 1):
            pte = Path(folder) / f"net{seed}.pte"
            pte.write_bytes(lower(Arch.random(space, seed=seed).build().eval(), shape).program)
            ptes.append(pte)
            runners.append(runtime.prepare_pte(pte, shape))
        figures = {(i, kind): [] for i in range(args.nets) for kind in ("cpu", "wall", "runner")}
        with runtime.pinned():  # torch at one thread, as the runtime times (runtime.measure)
            for round_index in range(args.rounds):
                line = []
                for i, (pte, runner) in enumerate(zip(ptes, runners)):
                    figures[(i, "cpu")].append(measure_once(runner, protocol).median_ms)
                    before, started = _waited_ms(), time.perf_counter()
                    wall = measure_once(Runner(runner.fn, Clock()), protocol)
                    waited = (_waited_ms() - before) / ((time.perf_counter() - started) * 1e3)  # share of the time
                    figures[(i, "wall")].append(wall.median_ms)
                    out = subprocess.run(
                        [binary, f"--model_path={pte}", "--num_executions=60", "--cpu_threads=1"],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    figures[(i, "runner")].append(statistics.median(parse_iterations(out.stdout + out.stderr)[10:]))
                    line.append(
                        f"net{i + 1}: cpu {figures[(i, 'cpu')][-1]:.3f} wall {wall.median_ms:.3f} "
                        f"(waited {waited:.0%} of it) runner {figures[(i, 'runner')][-1]:.3f}"
                    )
                print(f"round {round_index}: " + " | ".join(line) + f" | load {os.getloadavg()[0]:.1f}", flush=True)
    for i in range(args.nets):
        runner_ms = figures[(i, "runner")]
        for kind in ("cpu", "wall"):
            ratios = [a / b for a, b in zip(figures[(i, kind)], runner_ms)]
            print(f"net{i + 1} {kind}/runner: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")
        spreads = {k: (max(v) - min(v)) / statistics.median(v) for (j, k), v in figures.items() if j == i}
        print(f"net{i + 1} round spread: " + ", ".join(f"{k} {v:.1%}" for k, v in spreads.items()))
    print(f"uptime at the end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
