"""Step time of a search in 2 processes (torchrun, Gloo) against 1 process at the same global batch, and the share of
communication.

    python bench/distributed_cost.py [--nproc 2 --method dsnas --batch-size 32 --steps 8 --rounds 2]

Three kinds, each in fresh processes with one torch thread per process, interleaved over ``--rounds``:

* ``one``: 1 process, global batch B;
* ``many``: ``--nproc`` processes under torchrun, global batch B (B / N per rank), DDP + batch norm over the global batch;
* ``shard``: 1 process at batch B / N: the computing one rank does, without any communication.

Time per step: an epoch of ``--steps`` search steps after a warm-up epoch (``SearchRun.train_epoch``), divided by the
steps. The speed-up is ``one / many``; the communication share of a step, ``1 - shard / many`` (what a rank spends
waiting for and exchanging gradients, batch statistics and arch gradients). On a machine whose cores are shared with
other work these are noisy: the README gives dated figures with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_cli

ROOT = Path(__file__).resolve().parent.parent


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    from hwnas.distributed import launched
    from hwnas.latency import LatencyModel, LatencyTable
    from hwnas.search.loop import SearchConfig, SearchRun
    from hwnas.search.synthetic import write_synthetic_table
    from hwnas.spaces import get_space

    space_args = {"resolution": args.resolution, "in_channels": 1, "num_classes": 10, "width_mult": args.width_mult}
    with tempfile.TemporaryDirectory() as folder, launched("cpu") as dist:
        table = Path(folder) / "table.json"
        space = get_space("proxyless", **space_args)
        write_synthetic_table(space, table)
        model = LatencyModel(LatencyTable.load(table), space)
        budget = (model.fastest()[1] + model.slowest()[1]) / 2
        options = {} if args.method == "snas" else {"warmup_epochs": 0}
        config = SearchConfig(
            method=args.method,
            table=str(table),
            budget_ms=budget,
            space_args=space_args,
            epochs=2,
            batch_size=args.batch,
            steps_per_epoch=args.steps,
            method_options=options,
        )
        run = SearchRun(config, Path(folder) / "run", progress=False, dist=dist)
        run.start_fresh()
        run.train_epoch(0)  # warm-up
        if dist.active:
            torch.distributed.barrier()
        started = time.perf_counter()
        run.train_epoch(1)
        seconds = (time.perf_counter() - started) / args.steps
        if dist.is_main:
            print(json.dumps({"step_s": seconds}))


def measure(kind: str, args: argparse.Namespace) -> float:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    batch = args.batch_size // args.nproc if kind == "shard" else args.batch_size
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.nproc)]
        if kind == "many"
        else [sys.executable]
    )
    command = [
        *launcher,
        __file__,
        "--worker",
        "--batch",
        str(batch),
        "--method",
        args.method,
        "--steps",
        str(args.steps),
        "--resolution",
        str(args.resolution),
        "--width-mult",
        str(args.width_mult),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["step_s"]


def main() -> None:
    parser = bench_cli.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--method", default="dsnas", choices=["dsnas", "proxyless", "snas"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.batch_size % args.nproc:
        raise SystemExit(f"--batch-size {args.batch_size} does not split over --nproc {args.nproc}")
    times: dict[str, list[float]] = {"one": [], "many": [], "shard": []}
    for _ in range(args.rounds):
        for kind in times:
            times[kind].append(measure(kind, args))
    median = {kind: statistics.median(values) for kind, values in times.items()}
    result = {
        "method": args.method,
        "nproc": args.nproc,
        "global_batch": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "resolution": args.resolution,
        "width_mult": args.width_mult,
        "cpus": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "step_s": median,
        "speedup": median["one"] / median["many"],
        "communication_share": 1 - median["shard"] / median["many"],
    }
    print(json.dumps(result, indent=2))
    print(
        f"{args.nproc} processes: {median['many'] * 1e3:.0f} ms/step against 1 process {median['one'] * 1e3:.0f} ms/step "
        f"(x{result['speedup']:.2f}); one rank's compute alone {median['shard'] * 1e3:.0f} ms: communication and waiting "
        f"{100 * result['communication_share']:.0f} % of a step",
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(bench_cli.run(main))
