"""ExecuTorch on this machine: its tables validated beside ONNX Runtime's, the profile's cost, in-process vs runner.

1. For each resolution, profiles ``proxyless`` with executorch (XNNPACK) and with onnxruntime in
   the same run (1 thread), validates both on the same N random archs, and prints for each the
   share of nets within +-10 %, Kendall's tau, MAPE (raw sum and calibrated, held out) and the
   noise floor (even vs odd rounds). The profile's wall time is printed with the CPU time it got
   and the load average, because on a shared machine wall time says more about the neighbours.
2. Times one ``.pte`` (a random net of the space) in this process and through the x86
   executor_runner (``bench/build_runner.sh``), interleaved over rounds, and prints the median
   of each, their ratio, and the round-to-round spread of each (its noise floor).

    python bench/mobile_numbers.py --resolutions 32 --n 10
    python bench/mobile_numbers.py --resolutions 32 224 --n 10 --json docs/mobile_numbers.json

Lowered programs are cached under $HWNAS_CACHE (default ~/.cache/hwnas): a second run profiles
without lowering again (set HWNAS_CACHE to an empty folder to time a first profile).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hwnas.arch import Arch
from hwnas.latency.android import parse_iterations
from hwnas.latency.executorch_program import lower
from hwnas.latency.profiler import profile_space
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import get_runtime
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import validate_table
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tables(resolution: int, n: int, rounds: int, folder: Path) -> dict:
    """Profile + validate with both runtimes; figures per runtime."""
    small = resolution <= 64
    space = get_space("proxyless", resolution=resolution, in_channels=1 if small else 3, num_classes=10 if small else 1000)
    figures = {}
    for name in ("executorch", "onnxruntime"):
        runtime = get_runtime(name, "cpu", 1, protocol=Protocol(rounds=rounds))
        path = folder / f"{name}_{resolution}.json"
        load_before, cpu_before, started = os.getloadavg()[0], _cpu_s(), time.perf_counter()
        profile_space(space, runtime, path, progress=False)
        wall, cpu = time.perf_counter() - started, _cpu_s() - cpu_before
        report = validate_table(LatencyTable.load(path), space, runtime, n, seed=0, progress=False)
        figures[name] = {
            "profile_wall_s": wall,
            "profile_cpu_s": cpu,
            "load_at_start": load_before,
            "load_at_end": os.getloadavg()[0],
            "entries": len(LatencyTable.load(path).entries),
            "raw": {k: report[k] for k in ("within_10", "kendall_tau", "mape")},
            "calibrated": {k: report["calibrated"][k] for k in ("within_10", "kendall_tau", "mape")},
            "noise_floor": {k: report.get("noise_floor", {}).get(k) for k in ("within_10", "kendall_tau", "mape")},
            "validate_wall_s": report["wall_s"],
        }
    return {"space": space.args.to_dict(), "n": n, "rounds": rounds, **figures}


def x86_runner() -> str:
    """The path of the x86 ``executor_runner`` that ``bench/build_runner.sh`` builds (cached) for this Python."""
    return (
        subprocess.run(
            [str(ROOT / "bench" / "build_runner.sh")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHON": sys.executable},
        )
        .stdout.strip()
        .splitlines()[-1]
    )


def runner_vs_in_process(resolution: int, rounds: int, runs: int) -> dict:
    """One .pte, in this process and through the x86 runner, interleaved; medians, ratio, spreads."""
    space = get_space("proxyless", resolution=resolution, in_channels=1, num_classes=10)
    model = Arch.random(space, seed=1).build().eval()
    shape = (1, *space.input_shape)
    with tempfile.TemporaryDirectory() as folder:
        pte = Path(folder) / "net.pte"
        pte.write_bytes(lower(model, shape).program)
        binary = x86_runner()
        runtime = get_runtime("executorch", "cpu", 1, protocol=Protocol(rounds=1))
        runner = runtime.prepare_pte(pte, shape)
        here, there = [], []
        for _ in range(rounds):
            with runtime.pinned():  # as the runtime times: torch at one thread
                for _ in range(10):
                    runner.fn()  # warm-up, as the runner's first 10 iterations are dropped
                here.append(statistics.median(runner.clock.time_runs(runner.fn, runs)))
            out = subprocess.run(
                ["taskset", "1", binary, f"--model_path={pte}", f"--num_executions={runs + 10}", "--cpu_threads=1"],
                capture_output=True,
                text=True,
                check=True,
            )
            there.append(statistics.median(parse_iterations(out.stdout + out.stderr)[10:]))

    def spread(values: list[float]) -> float:
        return (max(values) - min(values)) / statistics.median(values)

    return {
        "resolution": resolution,
        "in_process_ms": statistics.median(here),
        "runner_ms": statistics.median(there),
        "ratio_runner_over_in_process": statistics.median(there) / statistics.median(here),
        "round_spread_in_process": spread(here),
        "round_spread_runner": spread(there),
        "rounds": rounds,
        "runs_per_round": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32])
    parser.add_argument("--n", type=int, default=10, help="random archs validated end to end")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results: dict = {"uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), "tables": {}}
    with tempfile.TemporaryDirectory() as folder:
        for resolution in args.resolutions:
            results["tables"][resolution] = tables(resolution, args.n, args.rounds, Path(folder))
            print(json.dumps({resolution: results["tables"][resolution]}, indent=1), flush=True)
    results["runner_vs_in_process"] = runner_vs_in_process(args.resolutions[0], 7, 50)
    results["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({k: v for k, v in results.items() if k != "tables"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
