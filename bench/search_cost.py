"""Cost of one search step against one training step of a child net: wall time and peak memory.

    python bench/search_cost.py [--space proxyless --resolution 32 --batch-size 32 --steps 8 --rounds 2]

Every measurement runs in a fresh subprocess (one per kind and memory layout per round, kinds
and layouts interleaved so machine drift hits all alike) with one torch thread:

* **time**: median wall time of ``--steps`` steps after ``--warmup`` steps. Single-path steps
  (child, DSNAS, ProxylessNAS) vary with the sampled path, so the child is timed on the same
  number of uniformly random archs, rebuilt outside the clock: both sides average over the
  same distribution of nets.
* **layout**: each kind runs in each ``--layouts`` (default both): channels-last is what hwnas
  trains in on the CPU (``hwnas.distributed.layout``), contiguous is PyTorch's default; the
  last table gives channels-last's time and memory as a share of contiguous's.
* **memory**: ``ru_maxrss`` (peak resident set of the process, which is what torch's CPU
  allocator has no counter for) after the steps, minus ``ru_maxrss`` after imports and data
  set-up: the high-water mark added by the model, its optimiser state and the step's
  activations. It includes the supernet's extra weights, which is the honest cost of a search.

The latency table is synthetic (step cost does not depend on its values); the aim of the
single-path one-shot methods is the slowest net, so SPOS draws from the same uniform
distribution as the child. Seed 000 table 1 expects DSNAS ~ O(P) (one path), ProxylessNAS ~
O(2P) on arch steps, SNAS ~ O(nP); SPOS ~ O(P); GreedyNAS adds m = 10 forward passes on its
ranking images (here 4 x the batch) and trains k = 5 paths. DSO-NAS (``dsonas``) runs the
completely connected net of ``--dag-space`` twice per step (a weight step and a lambda step,
each forward and backward), timed against random pruned nets of that space (``dsonas-child``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import bench_cli

LAYOUT_NAMES = ("contiguous", "channels_last")
KINDS = ("child", "dsnas", "proxyless-weight", "proxyless-arch", "snas", "spos", "greedynas", "dsonas-child", "dsonas")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def measure(kind: str, layout: str, args: argparse.Namespace) -> dict:
    import torch

    memory_format = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}[layout]

    torch.set_num_threads(1)
    from hwnas.arch import Arch
    from hwnas.latency import latency_model
    from hwnas.search import STRATEGIES
    from hwnas.search.budget import BudgetController
    from hwnas.search.synthetic import synthetic_table
    from hwnas.spaces import get_space

    # DSO-NAS searches the edges of a DAG space (--dag-space), timed against random pruned nets of that space
    name = args.dag_space if kind.startswith("dsonas") else args.space
    space = get_space(name, resolution=args.resolution, in_channels=1, num_classes=10, width_mult=args.width_mult)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 1, args.resolution, args.resolution, generator=generator)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (args.batch_size,), generator=generator)
    # load the kernels' code pages before the baseline, so it is not counted as the step's memory
    warm = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU6())
    warm(torch.randn(2, 1, 8, 8)).sum().backward()
    del warm
    baseline = peak_rss_mb()
    times: list[float] = []
    total = args.warmup + args.steps
    if kind in ("child", "dsonas-child"):
        for index in range(total):
            child = Arch.random(space, seed=index).build().train().to(memory_format=memory_format)
            optimizer = torch.optim.SGD(child.parameters(), lr=0.01, momentum=0.9)
            started = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(child(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
    else:
        method = kind.split("-")[0]
        cls = STRATEGIES[method]
        latency = latency_model(synthetic_table(space), space)
        supernet, arch = cls.build_supernet(space).train().to(memory_format=memory_format), cls.build_arch(space)
        optimizer = torch.optim.SGD(supernet.parameters(), lr=0.01, momentum=0.9)
        budget = BudgetController("lagrangian", latency.slowest()[1])
        # DSO-NAS: one weight step and one lambda step (on another batch) per step, from the first
        options = {"pretrain_epochs": 0} if method == "dsonas" else {}
        strategy = cls(supernet, arch, latency, budget, optimizer, options, torch.Generator().manual_seed(1))
        # GreedyNAS ranks its m paths on held-out images: 4 batches' worth here (its default is up to 1,000)
        strategy.held_out_set = torch.utils.data.TensorDataset(
            torch.randn(4 * args.batch_size, 1, args.resolution, args.resolution, generator=generator).contiguous(
                memory_format=memory_format
            ),
            torch.randint(0, 10, (4 * args.batch_size,), generator=generator),
        )
        strategy.init_alpha()
        strategy.epoch_start(0, 10)
        for _ in range(total):
            started = time.perf_counter()
            if kind == "proxyless-arch":
                strategy.arch_step(images, labels)
            else:
                strategy.step(images, labels, (lambda: (images, labels)) if method == "dsonas" else None)
            times.append(time.perf_counter() - started)
    measured = times[args.warmup :]
    return {"kind": kind, "layout": layout, "step_s": statistics.median(measured), "peak_mb": peak_rss_mb() - baseline}


def main() -> None:
    parser = bench_cli.Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--dag-space", default="dsonas-small", help="Space of the dsonas kinds.")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--layouts", default=",".join(LAYOUT_NAMES), help="memory layouts, each timed side by side")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, layout = args.worker.split("@")
        print(json.dumps(measure(kind, layout, args)))
        return
    kinds, layouts = args.kinds.split(","), args.layouts.split(",")
    for name, given, known in (("kind", kinds, KINDS), ("layout", layouts, LAYOUT_NAMES)):
        if unknown := sorted(set(given) - set(known)):
            parser.error(f"unknown {name}(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    results: dict[tuple[str, str], list[dict]] = {(kind, layout): [] for kind in kinds for layout in layouts}
    passthrough = [
        f"--space={args.space}",
        f"--dag-space={args.dag_space}",
        f"--resolution={args.resolution}",
        f"--width-mult={args.width_mult}",
        f"--batch-size={args.batch_size}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
    ]
    for _ in range(args.rounds):
        for kind, layout in results:
            out = subprocess.run(
                [sys.executable, __file__, f"--worker={kind}@{layout}", *passthrough],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            results[kind, layout].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"space {args.space} (dsonas kinds: {args.dag_space}) r{args.resolution} w{args.width_mult}, batch {args.batch_size}, "
        f"1 thread, median of {args.steps} steps x {args.rounds} rounds (median over rounds)"
    )

    def median_of(kind: str, layout: str, field: str) -> float | None:
        runs = results.get((kind, layout))
        return statistics.median(r[field] for r in runs) if runs else None

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:8.2f}" if a and b else f"{'':>8}"

    for layout in layouts:
        print(f"\n{layout}\n{'step':<18} {'time ms':>9} {'x child':>8} {'peak MB':>9} {'x child':>8}")
        for kind in kinds:
            reference = "dsonas-child" if kind.startswith("dsonas") else "child"  # each against random nets of its own space
            step_s, peak = median_of(kind, layout, "step_s"), median_of(kind, layout, "peak_mb")
            child_s, child_mb = median_of(reference, layout, "step_s"), median_of(reference, layout, "peak_mb")
            print(f"{kind:<18} {1000 * step_s:9.1f} {ratio(step_s, child_s)} {peak:9.1f} {ratio(peak, child_mb)}")
    if set(LAYOUT_NAMES) <= set(layouts):
        print(f"\nchannels_last as a share of contiguous\n{'step':<18} {'time':>8} {'peak MB':>8}")
        for kind in kinds:
            time_share = ratio(median_of(kind, "channels_last", "step_s"), median_of(kind, "contiguous", "step_s"))
            memory_share = ratio(median_of(kind, "channels_last", "peak_mb"), median_of(kind, "contiguous", "peak_mb"))
            print(f"{kind:<18} {time_share} {memory_share}")


if __name__ == "__main__":
    sys.exit(bench_cli.run(main))
