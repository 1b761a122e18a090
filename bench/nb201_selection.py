"""Selection against ground truth: hwnas's evolution against random search on NAS-Bench-201, no training.

The score of a net is its published 200-epoch CIFAR-10 validation accuracy
(``../shared/nb201/cifar10_accuracy.csv``, the cifar10-valid split, mean of 3 seeds); its latency is
the published one on the device (``latency/<device>.csv``), the budget that device's median
latency. For each number of scored archs K (10, 30, 100, 300) and 20 seeds, ``evolve`` (SPOS's
rules, ``hwnas.search.evolution``, population x generations = K) and ``random_search`` (K
distinct random archs under the budget) each return their best arch; the regret is the best
accuracy under the budget minus the found arch's. Evolution and random search with one seed draw the
same first archs, so their difference per seed is paired; its mean and standard error over
``--check-seeds`` seeds (200) say whether a 20-seed difference is more than chance.
Writes ``docs/nb201_selection.{md,json}``.
The weight-sharing searches need CIFAR-10 images, which are not available offline: only the
selection stage is measured here.

    python bench/nb201_selection.py [--data ../shared/nb201] [--seeds 20] [--check-seeds 200]
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from hwnas.files import write_json_atomic, write_text_atomic
from hwnas.search.evolution import EvolutionOptions, evolve, random_search
from hwnas.spaces.nb201 import NB201_OPS, Nb201Space

COUNTS = (10, 30, 100, 300)
DEVICES = ("pixel3", "raspi4")
#: population, generations, top_k, mutations, crossovers per K (population x generations = K). At 100 and 300
#: SPOS's proportions; at 10 and 30 few children, of the best one or two, the rest of each generation random:
#: with SPOS's proportions (5, 2, 2, 2, 2) the evolution fell 0.18 +- 0.07 (pixel3) and 0.20 +- 0.07 (raspi4)
#: points under random search at K = 10 over 200 seeds: five children bred from two of five random parents
#: are worth less than five more random draws (docs/nb201_selection.md)
SIZES = {10: (5, 2, 1, 2, 0), 30: (10, 3, 2, 4, 2), 100: (20, 5, 5, 8, 8), 300: (30, 10, 10, 12, 12)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "nb201"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--check-seeds", type=int, default=200, help="seeds of the paired difference's check (0: none)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = Path(args.data)
    rows = list(csv.DictReader((data / "cifar10_accuracy.csv").open()))
    index = {tuple(NB201_OPS.index(op) for op in Nb201Space.parse_choices(r["arch_str"])): i for i, r in enumerate(rows)}
    accuracy = np.array([float(r["valid_accuracy"]) for r in rows])
    legal = [tuple(range(len(NB201_OPS)))] * 6
    results: dict[str, dict] = {}
    for device in DEVICES:
        ms = np.array([float(r["ms"]) for r in csv.DictReader((data / "latency" / f"{device}.csv").open())])
        budget = float(np.median(ms))
        best = float(accuracy[ms <= budget].max())

        def score(columns, accuracy=accuracy):
            return accuracy[index[columns]]

        def latency(columns, ms=ms):
            return float(ms[index[columns]])

        def sample(rng):
            return tuple(int(c) for c in rng.integers(0, len(NB201_OPS), 6))

        per_count = {}
        for count in COUNTS:
            population, generations, top_k, mutations, crossovers = SIZES[count]
            options = EvolutionOptions(population, top_k, mutations, crossovers, 0.1, generations)
            found = {"evolution": [], "random": []}
            scored = {"evolution": [], "random": []}
            for seed in range(max(args.seeds, args.check_seeds)):
                outcome = evolve(legal, sample, score, latency, budget, options, seed=seed)
                found["evolution"].append(outcome.score)
                scored["evolution"].append(len(outcome.scored))
                outcome = random_search(sample, score, latency, budget, count, seed=seed)
                found["random"].append(outcome.score)
                scored["random"].append(len(outcome.scored))
            per_count[str(count)] = {
                method: {
                    "mean_accuracy": float(np.mean(values[: args.seeds])),
                    "mean_regret": float(best - np.mean(values[: args.seeds])),
                    "std": float(np.std(values[: args.seeds])),
                    "mean_scored": float(np.mean(scored[method][: args.seeds])),
                }
                for method, values in found.items()
            }
            if args.check_seeds:
                # the same seed draws the same first population as random search's first archs: a paired difference
                paired = np.array(found["evolution"][: args.check_seeds]) - np.array(found["random"][: args.check_seeds])
                per_count[str(count)]["paired_check"] = {
                    "seeds": args.check_seeds,
                    "mean": float(paired.mean()),
                    "standard_error": float(paired.std(ddof=1) / np.sqrt(len(paired))),
                }
        results[device] = {"budget_ms": budget, "best_under_budget": best, "counts": per_count}
        print(
            device,
            budget,
            best,
            {k: (v["evolution"]["mean_accuracy"], v["random"]["mean_accuracy"]) for k, v in per_count.items()},
        )
    write(Path(args.out), results, args, time.perf_counter() - started)
    return 0


def write(out: Path, results: dict, args, wall_s: float) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    info = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + ("+uncommitted" if dirty.strip() else ""),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "load": os.getloadavg(),
        "command": "python bench/nb201_selection.py"
        + (f" --seeds {args.seeds}" if args.seeds != 20 else "")
        + (f" --check-seeds {args.check_seeds}" if args.check_seeds != 200 else ""),
        "wall_s": wall_s,
    }
    write_json_atomic(out / "nb201_selection.json", {**info, "results": results, "sizes": SIZES})
    lines = [
        "# Selection against ground truth on NAS-Bench-201: evolution against random search",
        "",
        f"Made by `{info['command']}` on {info['date']}, commit {info['commit']}, {wall_s:.0f} s. Machine: {info['machine']}; "
        f"load {info['load'][0]:.2f}. Score: published CIFAR-10 validation accuracy (200 epochs, mean of 3 seeds); "
        f"latency: the published one on the device, budget its median; {args.seeds} seeds. Regret: the best accuracy "
        "under the budget minus the found arch's, in points. Evolution sizes (population, generations, top k, mutations, "
        f"crossovers) per K: {SIZES}. The weight-sharing searches need CIFAR-10 images, not available offline: only "
        "the selection is measured.",
        "",
        f"| device | budget ms | best | K | evolution acc (regret) | random acc (regret) | evolution - random | "
        f"the same over {args.check_seeds} seeds (± s.e.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for device, r in results.items():
        for count, c in r["counts"].items():
            e, q = c["evolution"], c["random"]
            lines.append(
                f"| {device} | {r['budget_ms']:.3f} | {r['best_under_budget']:.2f} | {count} | {e['mean_accuracy']:.2f} "
                f"({e['mean_regret']:.2f}) | {q['mean_accuracy']:.2f} ({q['mean_regret']:.2f}) | "
                f"{e['mean_accuracy'] - q['mean_accuracy']:+.2f} | "
                + (
                    f"{c['paired_check']['mean']:+.3f} ± {c['paired_check']['standard_error']:.3f} |"
                    if "paired_check" in c
                    else " |"
                )
            )
    goal = all(
        c["evolution"]["mean_accuracy"] >= c["random"]["mean_accuracy"] for r in results.values() for c in r["counts"].values()
    )
    close = {d: r["counts"]["300"]["evolution"]["mean_regret"] <= 0.3 for d, r in results.items()}
    checks = [(d, k, c["paired_check"]) for d, r in results.items() for k, c in r["counts"].items() if "paired_check" in c]
    lines += [
        "",
        f"Goal: evolution at or above random search at every K: {'met' if goal else 'not met'}; within 0.3 points of the "
        f"best at K = 300: " + ", ".join(f"{d} {'met' if ok else 'not met'}" for d, ok in close.items()) + ".",
        "",
    ]
    if checks:
        below = [f"{d} K = {k} ({c['mean']:+.3f} ± {c['standard_error']:.3f})" for d, k, c in checks if c["mean"] < 0]
        lines += [
            f"Paired over {checks[0][2]['seeds']} seeds (the last column), evolution minus random search is "
            + ("at or above 0 at every K." if not below else "below 0 at " + ", ".join(below) + ".")
            + " SPOS's proportions at K = 10, (5, 2, 2, 2, 2), measured -0.18 ± 0.07 (pixel3) and -0.20 ± 0.07 "
            "(raspi4) over 200 seeds before: children bred from two of five random parents are worth less than five "
            "more random draws, so at 10 and 30 the evolution breeds few children, of its best one or two archs.",
            "",
        ]
    write_text_atomic(out / "nb201_selection.md", "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
