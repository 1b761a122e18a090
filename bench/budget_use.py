"""Does the search spend its budget, and does its supernet learn? Every method x budget x seed.

    python bench/budget_use.py --table TABLE [--data digits] [--seeds 2] [--epochs 3 --steps-per-epoch 50 --batch-size 16]

For each method of the registry, the budgets at the space's fastest net + 25 / 50 / 75 % of
its range to the slowest (so every budget is meaningful on any table), and each seed: one
search with the README demo's short settings (``--margin 0.1``), then one row of figures
from its ``result.json`` and ``history.jsonl``: the aim, the final E[lat], the most probable
arch, the derived arch and the share of the aim the fill added, the final multiplier, the
supernet's and the child's validation accuracy. The summary line counts the runs whose
derived arch lies in [0.85, 1.0] x aim and those whose supernet beat ``--min-acc``.

Runs go to ``--out`` (one folder per run, reused: a finished run is read back, not rerun).
Prints a Markdown table, and with ``--json`` the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import bench_cli


def run_one(method: str, budget_ms: float, seed: int, args: argparse.Namespace, folder: Path) -> dict:
    from hwnas.files import read_jsonl
    from hwnas.search.loop import SearchConfig, SearchRun

    if not (folder / "result.json").is_file():
        config = SearchConfig(
            method=method,
            table=args.table,
            budget_ms=budget_ms,
            space=args.space,
            space_args=args.space_args,
            data=args.data,
            margin=0.1,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size,
            seed=seed,
        )
        started = time.perf_counter()
        SearchRun(config, folder, progress=False).run()
        (folder / "wall_s.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    result = json.loads((folder / "result.json").read_text())
    history = read_jsonl(folder / "history.jsonl")
    return {
        "method": method,
        "seed": seed,
        "budget_ms": budget_ms,
        "aim_ms": result["aim_ms"],
        "expected_ms": result["expected_ms"],
        "argmax_ms": result["argmax_ms"],
        "derived_ms": result["predicted_ms"],
        "derived_share": result["derived_share_of_aim"],
        "fill_share": result["fill_share_of_aim"],
        "multiplier": result["multiplier"],
        "supernet_acc": result["supernet_val_acc"],
        "child_acc": result["child_val_acc"],
        "layers_fixed": history[-1].get("layers_fixed", 0),
        "wall_s": float((folder / "wall_s.txt").read_text()) if (folder / "wall_s.txt").is_file() else None,
    }


def main() -> int:
    parser = bench_cli.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--methods", nargs="*", help="default: every method of the registry")
    parser.add_argument("--fractions", nargs="*", type=float, default=[0.25, 0.5, 0.75])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--min-acc", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--out", type=Path, default=Path("runs/budget_use"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from hwnas.data import natural_space_args
    from hwnas.latency import LatencyTable, latency_model
    from hwnas.search import STRATEGIES
    from hwnas.spaces import get_space

    args.space_args = natural_space_args(args.data)
    space = get_space(args.space, **args.space_args)
    model = latency_model(LatencyTable.load(args.table), space)
    fastest, slowest = model.fastest()[1], model.slowest()[1]
    methods = args.methods or [m for m, cls in STRATEGIES.items() if cls.supports(space)]
    rows = []
    for fraction in args.fractions:
        budget = fastest + fraction * (slowest - fastest)
        for method in methods:
            for seed in range(args.seeds):
                folder = args.out / f"{args.data.split(':')[0]}-{method}-f{fraction:g}-s{seed}"
                row = run_one(method, round(budget, 4), seed, args, folder)
                rows.append(dict(row, fraction=fraction))
                print(
                    f"{method} f{fraction:g} s{seed}: derived {row['derived_share']:.3f} x aim, argmax "
                    f"{row['argmax_ms'] / row['aim_ms']:.3f}, supernet {row['supernet_acc']:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"table {args.table}: fastest {fastest:.4g} ms, slowest {slowest:.4g} ms; data {args.data}; "
        f"{args.epochs} epochs x {args.steps_per_epoch} steps x batch {args.batch_size}, margin 0.1\n"
    )
    print(
        "| method | seed | budget ms | aim ms | E[lat] ms | argmax ms | derived ms | derived / aim | fill / aim | "
        "multiplier | fixed | supernet acc | child acc |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['seed']} | {r['budget_ms']:.4g} | {r['aim_ms']:.4g} | {r['expected_ms']:.4g} | "
            f"{r['argmax_ms']:.4g} | {r['derived_ms']:.4g} | {r['derived_share']:.3f} | {r['fill_share']:.3f} | "
            f"{r['multiplier']:.3g} | {r['layers_fixed']} | {r['supernet_acc']:.3f} | {r['child_acc']:.3f} |"
        )
    in_band = sum(0.85 <= r["derived_share"] <= 1.0 + 1e-9 for r in rows)
    learnt = sum(r["supernet_acc"] > args.min_acc for r in rows)
    print(
        f"\nderived in [0.85, 1.0] x aim: {in_band}/{len(rows)}; over the aim: "
        f"{sum(r['derived_share'] > 1 + 1e-9 for r in rows)}; supernet above {args.min_acc}: {learnt}/{len(rows)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(bench_cli.run(main))
