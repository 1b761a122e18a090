"""How many whole nets does a table's calibration need? The held-out error each count buys.

Times the space's fastest and slowest nets and a pool of random nets once (interleaved rounds,
as ``hwnas tables validate`` does), then, for each count k, fits the calibration on the anchors
plus k random nets of the pool (``--draws`` random choices of them) and scores it on the rest of
the pool: the error a profile that timed k random nets would have. It also prints the
leave-one-out p90 over the k nets (what ``hwnas profile`` stores as the search's default margin)
beside the true held-out p90, to show whether that estimate is fair.

    python bench/calibration_size.py --table TABLE [--pool 40] [--sizes 2,4,6,8,12,16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency.accuracy import error_metrics
from hwnas.latency.model import apply_calibration, count_ops
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import get_runtime
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import held_out_predictions, validate_table
from hwnas.spaces import get_space


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="a profiled table (its target is the machine measured)")
    parser.add_argument("--pool", type=int, default=40, help="random nets timed once")
    parser.add_argument("--sizes", default="2,4,6,8,12,16", help="counts of random nets to fit on")
    parser.add_argument("--draws", type=int, default=200, help="random choices of the fit nets per count")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated counts, got {args.sizes!r}")
    if args.pool < 4 or args.draws < 1 or args.rounds < 1 or not all(2 <= k <= args.pool - 2 for k in args.sizes):
        parser.error("--pool must be >= 4, --draws and --rounds >= 1, and every size in [2, pool - 2]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        table = LatencyTable.load(args.table)
    except HwnasError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    meta = table.meta
    space = get_space(meta["space"], **meta["space_args"])
    runtime = get_runtime(
        meta["runtime"], device=meta["device"], threads=meta.get("threads"), protocol=Protocol(rounds=args.rounds)
    )
    started = time.perf_counter()
    report = validate_table(table, space, runtime, args.pool, seed=args.seed, progress=sys.stderr.isatty())
    wall = time.perf_counter() - started
    points = report["points"]
    sums = [p["predicted_sum_ms"] for p in points]
    measured = [p["measured_ms"] for p in points]
    ops = [count_ops(Arch.from_compact(p["arch"])) for p in points]
    anchors = [(a["predicted_sum_ms"], count_ops(Arch.from_compact(a["arch"])), a["measured_ms"]) for a in report["anchors"]]
    floor = report.get("noise_floor", {}).get("mape")
    print(
        f"{meta['space']} {meta['space_args']} on {meta.get('device_name')} ({meta['runtime']}): {len(points)} random nets "
        f"and the fastest and slowest timed in {wall:.0f} s, {args.rounds} rounds; noise floor (even vs odd rounds) "
        f"{'n/a' if floor is None else f'{floor:.1%}'}; raw sum MAPE {report['mape']:.1%}"
    )
    print()
    print(
        "| random nets fitted | held-out MAPE | held-out p90 | held-out within ±10 % | leave-one-out p90 (what profile stores) |"
    )
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(args.seed)
    for k in args.sizes:
        rows = []
        for _ in range(args.draws):
            chosen = rng.choice(len(points), size=k, replace=False).tolist()
            rest = [i for i in range(len(points)) if i not in chosen]
            fit_sums = [sums[i] for i in chosen] + [a[0] for a in anchors]
            fit_ops = [ops[i] for i in chosen] + [a[1] for a in anchors]
            fit_measured = [measured[i] for i in chosen] + [a[2] for a in anchors]
            fit, _, loo_predictions = held_out_predictions(fit_sums, fit_ops, fit_measured, k, leave_one_out=True)
            figures = error_metrics([apply_calibration(fit, sums[i], ops[i]) for i in rest], [measured[i] for i in rest])
            loo = error_metrics(loo_predictions, fit_measured[:k])["p90_relative_error"]
            rows.append((figures["mape"], figures["p90_relative_error"], figures["within_10"], loo))
        mape, p90, within, loo = (statistics.fmean(column) for column in zip(*rows))
        print(f"| {k} | {mape:.1%} | {p90:.1%} | {within:.0%} | {loo:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
