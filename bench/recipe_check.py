"""Does a training recipe tell archs of one latency apart? Random nets of each band, several seeds, one recipe.

    python bench/recipe_check.py [--results docs/results.json] [--epochs 2 --train-images 4000 --val-images 3000]
                                 [--seeds 0,1] [--archs 5] [--work runs/recipe_check] [--workers 2]

``bench/search_quality.py`` compares searched nets with random nets of the same latency band,
all trained from scratch with one recipe. That comparison means something only where the recipe
separates archs of one band by more than seed noise; this script measures it for any recipe
before a 2-hour run is spent on it. It takes the random archs of every band of a
``search_quality`` results file (the same nets, so the figures line up), trains each with the
given recipe and every seed (``search_quality.train_job``: the same data subset, optimiser and
held-out images), and prints, per band, each arch's mean accuracy, a one-way analysis of variance
over archs (``search_quality.arch_spread``: F, p, the estimated std of the archs' true
accuracies), the pooled seed noise, and the gap between the bands' means (capacity: the
slower band's nets should win once the recipe trains them far enough). Run with the results
file's own recipe, it also prints this checkout's accuracy minus the file's for the same nets and
seeds, paired, with a 95 % interval: what a change of the training code did to the figures.
``--fractions`` draws the bands anew on the file's table, at other budgets (as ``search_quality``
draws its own: ``draw_band``), to ask where in the range capacity starts to tell nets apart.
Every training is cached in ``--work``, keyed like ``search_quality``'s, so a rerun only reports.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cli
import search_quality as sq  # noqa: E402  (a sibling script, not a package)
from scipy import stats  # noqa: E402


def main() -> int:
    parser = bench_cli.Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="docs/results.json", help="a search_quality results.json: its bands' random archs")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--val-images", type=int, default=3000, help="held-out images scored; 0: all of them")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--archs", type=int, default=5, help="random archs per band (the first ones of the file)")
    parser.add_argument(
        "--fractions",
        help="draw the bands anew at these shares of the range above the fastest net, on the file's table (e.g. 0.05,0.25)",
    )
    parser.add_argument("--work", default="runs/recipe_check")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    results = json.loads(Path(args.results).read_text())
    seeds = [int(s) for s in args.seeds.split(",")]
    base = sq.Plan()
    recipe = {**base.recipe, "epochs": args.epochs, "train_images": args.train_images, "val_images": args.val_images or None}
    plan = asdict(sq.Plan(data=results["plan"]["data"], space=results["plan"]["space"], recipe=recipe))
    work = Path(args.work)
    if args.fractions:
        from hwnas.latency import LatencyTable, latency_model
        from hwnas.spaces import get_space

        space = get_space(base.space, **sq.space_args(base))
        model = latency_model(LatencyTable.load(results["table"]), space)
        source = [sq.draw_band(model, float(f), base, args.archs) for f in args.fractions.split(",")]
    else:
        source = [band for band in results["budgets"] if band.get("space", base.space) == base.space]
    jobs = []
    for band in source:
        for arch in band["random"][: args.archs]:
            for seed in seeds:
                folder = work / sq.key("train", arch, seed, None, {"plan_recipe": recipe, "data": plan["data"]})
                jobs.append({"arch": arch, "seed": seed, "weights": None, "plan": plan, "folder": str(folder)})
    started = time.perf_counter()
    trained = sq.run_jobs(sq.train_job, jobs, args.workers, "trainings")
    wall_s = time.perf_counter() - started

    accs: dict[str, list[float]] = {}
    for job, result in zip(jobs, trained):
        accs.setdefault(job["arch"], []).append(result["val_acc"])
    bands = []
    for band in source:
        groups = [accs[arch] for arch in band["random"][: args.archs]]
        means = [statistics.fmean(g) for g in groups]
        bands.append(
            {
                "budget_ms": band["budget_ms"],
                "arch_means": means,
                "mean": statistics.fmean(means),
                "spread": sq.arch_spread(groups),
            }
        )
    # the results file's own recipe: its random nets again, seed by seed, with this checkout's code
    earlier = {(n["arch"], n["seed"]): n["acc"] for n in results["nets"] if n["kind"] == "random"}
    diffs = [r["val_acc"] - earlier[j["arch"], j["seed"]] for j, r in zip(jobs, trained) if (j["arch"], j["seed"]) in earlier]
    summary = {
        "recipe": recipe,
        "seeds": seeds,
        "data": plan["data"],
        "bands": bands,
        "seed_noise": sq.seed_noise(accs),
        "slow_minus_fast": bands[-1]["mean"] - bands[0]["mean"],
        "wall_s": wall_s,
    }
    if recipe == results["plan"]["recipe"] and len(diffs) > 1:
        mean, half = statistics.fmean(diffs), stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
        summary["against_results"] = {"commit": results["commit"], "pairs": len(diffs), "diff": mean, "half_width": half}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"recipe: {recipe['epochs']} epoch(s) x {recipe['train_images']} images, held-out {recipe['val_images'] or 'all'}; "
        f"seeds {args.seeds}; {len(jobs)} trainings, {wall_s / 60:.1f} min wall (cached ones count 0)"
    )
    for band in bands:
        spread = band["spread"]
        print(
            f"band {band['budget_ms']:.4f} ms: arch means {', '.join(f'{m:.4f}' for m in band['arch_means'])}; "
            f"F = {spread['f']:.2f}, p = {spread['p']:.3f}, std of true accuracies {spread['between_std']:.4f}"
        )
    noise = summary["seed_noise"]
    if "against_results" in summary:
        a = summary["against_results"]
        print(
            f"the same nets and seeds in {args.results} (commit {a['commit']}): this code's accuracy minus theirs "
            f"{a['diff']:+.4f} +- {a['half_width']:.4f} (mean of {a['pairs']} pairs, 95 % interval)"
        )
    print(
        f"seed noise {noise['std']:.4f} ({noise['df']} degrees of freedom); slow band - fast band {summary['slow_minus_fast']:+.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(bench_cli.run(main))
