"""Search quality: every method's derived nets against random nets of the same latency, all trained from scratch alike.

    python bench/search_quality.py [--quick] [--table TABLE] [--work DIR] [--out DIR] [--workers 2] [--methods M,...]

On Fashion-MNIST at 32x32 (Debian's ``dataset-fashion-mnist``), for the ``proxyless`` space, and
for DSO-NAS (which searches the edges of a DAG space) on ``dsonas-small`` at width 0.25, each
space with its own table, budgets and random nets (every row and net says its space):

1. **table**: ``--table`` (``--dag-table``), or one profiled and validated on this machine into the
   work folder (``table.json``, ``table-dsonas-small.json``);
2. **budgets**: the space's fastest net + 25 % and + 60 % of its range to the slowest;
3. **searches**: every method of the registry x budget x seed, with the search settings below;
4. **training**: each derived arch from scratch with one fixed recipe and the search's seed,
   and again from its inherited supernet weights (``hwnas train``'s fine-tune) with the
   same recipe; random archs drawn uniformly from the band [0.9, 1.0] x aim of each budget
   (``hwnas.search.random_archs``; on the DAG space random edge sets rejected outside the band,
   ``DagBandSampler``), each trained from scratch with the recipe and every seed:
   their spread over seeds is the seed noise, and a one-way analysis of variance per band says
   whether the recipe tells archs of one latency apart at all (if it does not, no search can
   beat random on it);
5. **ranking**: every chain supernet of the first seed scores all random archs of its space (inherited weights,
   BN recalibrated on training batches, accuracy on held-out images); Kendall's tau against
   their from-scratch accuracy (the mean over seeds) says whether it ranks nets as training does;
6. **latency**: every net exported to ONNX (``hwnas export``'s exporter) and measured with
   the profiler's protocol on ONNX Runtime, all files of a space in the same interleaved rounds,
   at the end and alone, so the machine's drift hits all alike (``latency.json``,
   ``latency-dsonas-small.json``: a space added later leaves the other's measurements as they were);
7. **report**: ``results.md`` (the table, the recipe, the seed noise, the machine, the commit,
   the wall time), ``results.json`` (the same figures; ``rows``: one per method and budget)
   and ``results.png`` (accuracy against measured latency, every net a point).

Every search, training and measurement is cached in the work folder, keyed by what it
computes (arch, recipe, seed, settings, ``CODE_VERSION``), so an interrupted run goes on where it stopped and
a rerun only reports. ``--quick``: one seed, short searches and a short recipe, two random
archs per budget, DSO-NAS at one budget (+ 60 %); it writes into the work folder, not ``docs/``.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import bench_cli

ROOT = Path(__file__).resolve().parent.parent

#: the one-shot methods' selection, scaled to this benchmark's time: SPOS's 50 x 20 archs, each scored on 1,000 images
#: (+ 64 for its BN), are 1.06 M image passes per search; 6 generations of 16 on 300 images are under 30 k
ONE_SHOT = {"population": 16, "top_k": 4, "mutations": 6, "crossovers": 6, "generations": 6, "score_images": 300}
#: GreedyNAS ranks its 10 paths per step on 200 held-out images (its default 1,000 makes a step cost 10,000 image passes)
METHOD_OPTIONS = {"spos": ONE_SHOT, "random": ONE_SHOT, "greedynas": {**ONE_SHOT, "rank_images": 200}}
#: DSO-NAS: its one pre-train epoch leaves one epoch of lambda steps here; gamma 4x its default to prune within it
#: (its floor keeps a strong gamma from pruning past the aim); its adaptive weights named (the default) so the rows say which
DSONAS_OPTIONS = {"gamma": 0.2, "adaptive": "block"}
#: the optimiser every from-scratch training and fine-tune shares (SGD Nesterov, cosine to 0, no augmentation)
OPTIMISER = {"batch_size": 64, "lr": 0.05, "weight_decay": 4e-5, "label_smoothing": 0.1}


@dataclass(frozen=True)
class Plan:
    """Everything that decides the figures; its parts key the cache."""

    data: str = "fashion-mnist"
    space: str = "proxyless"
    fractions: tuple[float, ...] = (0.25, 0.60)
    seeds: tuple[int, ...] = (0, 1, 2)
    margin: float = 0.1
    #: every method searches with these settings (2 x 30 steps: the full plan's 36 searches then take about 45 min of the
    #: 2-hour budget on 2 cores, SNAS's mixed supernet most of it)
    search: dict = field(default_factory=lambda: {"epochs": 2, "steps_per_epoch": 30, "batch_size": 32, "eval_images": 1024})
    #: from scratch, every net alike (its held-out images are also the fine-tune's)
    recipe: dict = field(
        default_factory=lambda: {"epochs": 2, "train_images": 4000, "val_images": 3000, **OPTIMISER, "bn_batches": 20}
    )
    #: ``hwnas train``'s fine-tune of each derived child from its inherited weights (its defaults, one epoch, fewer images)
    finetune: dict = field(default_factory=lambda: {"epochs": 1, "train_images": 2000, **OPTIMISER, "bn_batches": 20})
    random_per_budget: int = 5
    band: tuple[float, float] = (0.9, 1.0)
    ranking_images: int = 2000
    #: batches of 64 training images that re-estimate a ranked child's BN statistics
    ranking_bn_batches: int = 20
    rounds: int = 5
    #: per-method options (the search's other settings are the same for every method)
    method_options: dict = field(default_factory=lambda: {**METHOD_OPTIONS, "dsonas": DSONAS_OPTIONS})
    #: DSO-NAS searches the edges of a DAG space, not ``space``: its own space (at this width), its own table (profiled
    #: and validated like ``space``'s), budgets from its own range, random nets of that space
    dag_space: str = "dsonas-small"
    dag_width_mult: float = 0.25
    dag_fractions: tuple[float, ...] = (0.25, 0.60)

    @classmethod
    def quick(cls) -> Plan:
        """Every method (DSO-NAS at one budget, the others at both), every step of the full run, each as short as still runs it."""
        small = {**ONE_SHOT, "population": 10, "top_k": 3, "mutations": 4, "crossovers": 4, "generations": 3, "score_images": 200}
        return cls(
            seeds=(0,),
            search={"epochs": 2, "steps_per_epoch": 6, "batch_size": 16, "eval_images": 256},
            method_options={"spos": small, "random": small, "greedynas": {**small, "rank_images": 100}, "dsonas": DSONAS_OPTIONS},
            recipe={"epochs": 1, "train_images": 800, "val_images": 1000, **OPTIMISER, "bn_batches": 5},
            finetune={"epochs": 1, "train_images": 400, **OPTIMISER, "bn_batches": 5},
            random_per_budget=2,
            dag_fractions=(0.60,),
            ranking_images=300,
            ranking_bn_batches=5,
            rounds=3,
        )


#: part of every cache key: raise it when a change of hwnas changes what a search or a training computes, so a rerun
#: computes them again rather than report another code's figures under this commit (2: training and searching
#: channels-last on the CPU; the first version keyed without it)
CODE_VERSION = 2
#: the same for one method's searches only, where a change of hwnas changed what that method's search computes and
#: nothing else (dsonas 3: the DAG latency model counts shared partial sums, so its edge weights and pruning changed;
#: the built DAG nets compute what they did, so their trainings stand)
SEARCH_VERSION = {"dsonas": 3}


def key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps((CODE_VERSION, *parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def search_key(method: str, config: dict) -> str:
    version = SEARCH_VERSION.get(method)
    return key("search", config) if version is None else key("search", config, version)


def space_args(plan: Plan) -> dict:
    from hwnas.data import natural_space_args

    return natural_space_args(plan.data)


# -- jobs (each runs in a worker process, writes its result file last) -----------------------------
def init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def search_job(job: dict) -> dict:
    """One search into job['folder']; resumes a half-done one."""
    from hwnas.search.loop import SearchConfig, SearchRun

    folder = Path(job["folder"])
    if not (folder / "result.json").is_file():
        started = time.perf_counter()
        if (folder / "checkpoint.pt").is_file():
            SearchRun(SearchConfig.load(folder), folder, progress=False).run(resume=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            SearchRun(SearchConfig(**job["config"]), folder, progress=False).run()
        (folder / "wall_s.json").write_text(json.dumps(time.perf_counter() - started))
    return json.loads((folder / "result.json").read_text())


def training_data(plan: dict, recipe: dict):
    """``recipe``'s training subset and the plan's held-out set (the same images for every net)."""
    import torch
    from torch.utils.data import Subset

    from hwnas.data import DataSplits, load_data

    args = space_args(Plan(**plan))
    data = load_data(plan["data"], args["resolution"], args["in_channels"], seed=0)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(12345)).tolist()
    subset = Subset(data.train, order[: recipe["train_images"]])
    val = data.val if plan["recipe"]["val_images"] is None else Subset(data.val, range(plan["recipe"]["val_images"]))
    return DataSplits(subset, val, data.num_classes, data.in_channels, data.name)


def train_job(job: dict) -> dict:
    """Train job['arch'] with the recipe, from scratch or from a search run's inherited weights."""
    import torch

    from hwnas.arch import Arch
    from hwnas.run_folder import load_weights
    from hwnas.train import TrainConfig, train_child

    folder = Path(job["folder"])
    if not (folder / "train_result.json").is_file():
        started = time.perf_counter()
        plan = job["plan"]
        recipe = plan["finetune"] if job.get("weights") else plan["recipe"]
        arch = Arch.from_compact(job["arch"])
        torch.manual_seed(job["seed"])
        model = arch.build()
        if job.get("weights"):
            load_weights(model, Path(job["weights"]))
        config = TrainConfig(seed=job["seed"], **{k: v for k, v in recipe.items() if k not in ("train_images", "val_images")})
        resume = (folder / "train_checkpoint.pt").is_file()
        train_child(arch, model, training_data(plan, recipe), folder, config, resume=resume, progress=False)
        (folder / "wall_s.json").write_text(json.dumps(time.perf_counter() - started))
    return json.loads((folder / "train_result.json").read_text())


def ranking_job(job: dict) -> dict:
    """A search's supernet scores every given arch: inherited weights, BN recalibrated, held-out accuracy."""
    import torch
    from torch.utils.data import Subset

    from hwnas.arch import Arch
    from hwnas.batchnorm import recalibrate_bn
    from hwnas.data import load_data, make_loader
    from hwnas.search.supernet import Supernet
    from hwnas.train import evaluate

    out = Path(job["file"])
    if not out.is_file():
        plan = job["plan"]
        args = space_args(Plan(**plan))
        data = load_data(plan["data"], args["resolution"], args["in_channels"], seed=0)
        archs = [Arch.from_compact(a) for a in job["archs"]]
        supernet = Supernet(archs[0].build_space())
        supernet.load_state_dict(torch.load(Path(job["run"]) / "supernet.pt", weights_only=True))
        val = Subset(data.val, range(len(data.val) - plan["ranking_images"], len(data.val)))  # not the search's eval images
        scores = {}
        for arch in archs:
            child = supernet.extract_child(arch)
            recalibrate_bn(child, make_loader(data.train, 64, True, seed=1), plan["ranking_bn_batches"])
            scores[arch.to_compact()] = evaluate(child, make_loader(val, 256, False))[1]
        out.write_text(json.dumps(scores))
    return json.loads(out.read_text())


def draw_band(model, fraction: float, plan: Plan, count: int | None = None) -> dict:
    """The budget at ``fraction`` of ``model``'s range above its fastest net, its aim, and ``count`` (the plan's
    ``random_per_budget``) random archs drawn uniformly from the band ``plan.band`` x aim (seeded by the fraction)."""
    from hwnas.search.budget import make_target
    from hwnas.search.random_archs import band_sampler

    fastest, slowest = model.fastest()[1], model.slowest()[1]
    budget = fastest + fraction * (slowest - fastest)
    target = make_target(budget, fastest, slowest, plan.margin, None)
    randoms = band_sampler(model, plan.band[0] * target.aim_ms, plan.band[1] * target.aim_ms).sample(
        plan.random_per_budget if count is None else count, seed=int(1000 * fraction)
    )
    return {"fraction": fraction, "budget_ms": budget, "aim_ms": target.aim_ms, "random": [a.to_compact() for a in randoms]}


def run_jobs(function, jobs: list[dict], workers: int, label: str) -> list[dict]:
    """Run ``function`` over ``jobs`` in ``workers`` processes (one torch thread each), in order; prints progress."""
    if not jobs:
        return []
    print(f"{label}: {len(jobs)} job(s) on {workers} worker(s)", file=sys.stderr, flush=True)
    results: list[Any] = [None] * len(jobs)
    with concurrent.futures.ProcessPoolExecutor(workers, initializer=init_worker) as pool:
        futures = {pool.submit(function, job): index for index, job in enumerate(jobs)}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            results[futures[future]] = future.result()
            print(f"  {label} {done}/{len(jobs)}", file=sys.stderr, flush=True)
    return results


# -- steps ------------------------------------------------------------------------------------------
def ensure_table(given: str | None, space: str, args: dict, table: Path, rounds: int) -> Path:
    """``given``, or a table of ``space`` (options ``args``) profiled and validated on this machine at ``table``."""
    if given:
        return Path(given)
    if not table.is_file() or "calibration" not in json.loads(table.read_text()):
        shape = [f"--{name.replace('_', '-')}={value}" for name, value in sorted(args.items())]
        hwnas = [sys.executable, "-m", "hwnas"]
        print(f"profiling {space} on this machine (hwnas profile, hwnas tables validate)", file=sys.stderr, flush=True)
        subprocess.run(
            [*hwnas, "profile", "--space", space, *shape, "-o", str(table), "--rounds", str(rounds)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [*hwnas, "tables", "validate", str(table), "--n", "20" if rounds > 3 else "10"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return table


def measure_latencies(archs: list[str], plan: Plan, work: Path, name: str = "latency.json") -> dict[str, float]:
    """Export every arch to ONNX and time all files in the same interleaved rounds (cached as a whole, in ``name``)."""
    from hwnas.arch import Arch
    from hwnas.export.onnx_file import export_onnx
    from hwnas.latency.protocol import Protocol
    from hwnas.latency.runtimes import get_runtime

    cache = work / name
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if all(a in known for a in archs):
        return known
    runtime = get_runtime("onnxruntime", "cpu", 1, protocol=Protocol(rounds=plan.rounds))
    paths = []
    for compact in archs:
        path = work / "onnx" / f"{key(compact)}.onnx"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            arch = Arch.from_compact(compact)
            space = arch.build_space()
            export_onnx(arch.build().eval(), (1, *space.input_shape), path)
        paths.append(path)
    print(f"measuring {len(paths)} ONNX files, {plan.rounds} interleaved rounds", file=sys.stderr, flush=True)
    shape = (1, *Arch.from_compact(archs[0]).build_space().input_shape)
    timings = runtime.measure([runtime.prepare_onnx(p, shape) for p in paths])
    measured = {compact: t.median_ms for compact, t in zip(archs, timings)}
    cache.write_text(json.dumps(measured, indent=1))
    return measured


# -- statistics -------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) - mean(b) with its Welch t interval; NaN bounds where a side has a single value."""
    from scipy import stats

    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def seed_noise(accs: dict[str, list[float]]) -> dict:
    """The accuracy's std over seeds, pooled over every arch trained with more than one seed."""
    groups = [values for values in accs.values() if len(values) > 1]
    squares = sum(sum((v - statistics.fmean(values)) ** 2 for v in values) for values in groups)
    df = sum(len(values) - 1 for values in groups)
    return {"std": math.sqrt(squares / df), "archs": len(groups), "df": df}


def arch_spread(groups: list[list[float]]) -> dict:
    """Do archs of one band differ beyond seed noise? One-way ANOVA over archs (each a group of seeds).

    ``between_std`` estimates the std of the archs' true accuracies (the method of moments; 0 when the
    means spread no more than seed noise alone would make them), ``f`` and ``p`` test "all archs alike".
    """
    from scipy import stats

    means = [statistics.fmean(g) for g in groups]
    spread = {
        "means_std": statistics.stdev(means) if len(means) > 1 else float("nan"),
        "f": float("nan"),
        "p": float("nan"),
        "between_std": float("nan"),
    }
    if len(groups) > 1 and all(len(g) > 1 for g in groups):
        result = stats.f_oneway(*groups)
        within = statistics.fmean(statistics.variance(g) for g in groups)
        n = statistics.fmean(len(g) for g in groups)
        spread.update(
            f=float(result.statistic),
            p=float(result.pvalue),
            between_std=math.sqrt(max(statistics.variance(means) - within / n, 0.0)),
        )
    return spread


def kendall(x: list[float], y: list[float]) -> float:
    from scipy import stats

    return float(stats.kendalltau(x, y).statistic)


# -- the report -------------------------------------------------------------------------------------
def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.platform()}"


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_plot(path: Path, nets: list[dict], budgets: list[dict]) -> None:
    """Accuracy against measured latency, one panel per space (their nets span different latencies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = list(dict.fromkeys(net.get("space", "proxyless") for net in nets))
    fig, axes = plt.subplots(1, len(spaces), figsize=(8 * len(spaces), 5), squeeze=False)
    colours: dict[str, str] = {}
    for ax, space in zip(axes[0], spaces):
        for net in (n for n in nets if n.get("space", "proxyless") == space):
            if net["kind"] == "random":
                ax.scatter(net["measured_ms"], net["acc"], color="0.6", marker="o", s=30, label="random (band)")
            else:
                colour = colours.setdefault(net["method"], f"C{len(colours)}")
                ax.scatter(net["measured_ms"], net["acc"], color=colour, marker="D", s=40, label=net["method"])
        for budget in (b["budget_ms"] for b in budgets if b.get("space", "proxyless") == space):
            ax.axvline(budget, color="red", linestyle="--", linewidth=1)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys())
        ax.set(
            xlabel="measured latency (ms, ONNX Runtime, 1 thread)",
            ylabel="accuracy, trained from scratch",
            title=f"space {space}: searched vs random nets (red: budgets)",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(out: Path, summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    write_plot(out / "results.png", summary["nets"], summary["budgets"])
    plan, recipe, search = summary["plan"], summary["plan"]["recipe"], summary["plan"]["search"]
    lines = [
        "# Search quality: searched nets against random nets of the same latency",
        "",
        f"Made by `python bench/search_quality.py{' --quick' if summary['quick'] else ''}` on {summary['date']}, commit "
        f"{summary['commit']}: {summary['span_s'] / 60:.0f} min of wall time from the first search's start to the last "
        f"measurement (pauses between invocations included; {summary['wall_s'] / 60:.1f} min in the last one); its searches and "
        f"trainings took {summary['jobs_s'] / 60:.0f} min of process time together (run {summary['plan_workers']} at a time).",
        f"Machine: {summary['machine']}. "
        + " ".join(
            f"Space `{x['space']}` ({', '.join(x['methods'])}): table `{x['table']}` (fastest {x['fastest_ms']:.4g} ms, slowest "
            f"{x['slowest_ms']:.4g} ms predicted)."
            for x in summary["spaces"]
        ),
        "",
        f"* data: {plan['data']} at 32x32; space `{plan['space']}` for the chain methods, budgets at its fastest net + "
        f"{', '.join(f'{100 * f:g} %' for f in plan['fractions'])} of the range to its slowest; DSO-NAS searches the edges "
        f"of `{plan['dag_space']}` (width {plan['dag_width_mult']}), budgets at + "
        f"{', '.join(f'{100 * f:g} %' for f in plan['dag_fractions'])} of that space's range, its own table; "
        f"aim = budget x (1 - {plan['margin']})",
        f"* searches: {search['epochs']} epochs x {search['steps_per_epoch']} steps x batch {search['batch_size']}, "
        f"seeds {', '.join(map(str, plan['seeds']))}, supernet scored on {search.get('eval_images', 'all')} held-out images; "
        f"one-shot selection {json.dumps(plan['method_options'])}; every other option at its default",
        f"* recipe, the same for every net: {recipe['epochs']} epoch(s) on a fixed subset of {recipe['train_images']} training images, "
        f"batch {recipe['batch_size']}, SGD Nesterov lr {recipe['lr']} cosine to 0, weight decay {recipe['weight_decay']}, "
        f"label smoothing {recipe['label_smoothing']}, no augmentation, BN re-estimated on {recipe['bn_batches']} batches before "
        f"scoring on {summary['val_images']} held-out images",
        f"* fine-tune (`hwnas train` from the inherited weights): {plan['finetune']['epochs']} epoch(s) on the first "
        f"{plan['finetune']['train_images']} images of that subset, otherwise the same recipe and held-out images",
        f"* random nets: {plan['random_per_budget']} per budget, of the budget's space, drawn from the archs predicted within "
        f"[{plan['band'][0]}, {plan['band'][1]}] x aim (chain spaces: uniformly; the DAG space: random edge sets, rejected "
        "outside the band), each trained with every seed; a random net's accuracy is its mean "
        "over seeds (so 'random best' is the best arch, not a lucky seed)",
        f"* seed noise (accuracy std over seeds, pooled over {summary['seed_noise']['archs']} arch(s), "
        f"{summary['seed_noise']['df']} degrees of freedom): {summary['seed_noise']['std']:.4f}",
        *[
            f"* do the random archs of `{b.get('space', plan['space'])}` at {b['budget_ms']:.4g} ms differ beyond seed noise? their means spread "
            f"{b['arch_spread']['means_std']:.4f} (std); one-way ANOVA F = {b['arch_spread']['f']:.2f}, p = {b['arch_spread']['p']:.2f}; "
            f"estimated std of their true accuracies {b['arch_spread']['between_std']:.4f}"
            for b in summary["budgets"]
        ],
        f"* latency: every net exported to ONNX and timed on ONNX Runtime (CPU, 1 thread, batch 1), {plan['rounds']} interleaved "
        "rounds over all files",
        "",
        "| method | space | budget ms | aim ms | from scratch acc (mean +- std) | fine-tuned acc (inherited) | random mean | "
        "random best | method - random mean [95 % CI] | measured ms (predicted) | search wall s | supernet tau |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        ci = "" if math.isnan(row["diff_low"]) else f" [{row['diff_low']:+.4f}, {row['diff_high']:+.4f}]"
        tau = "" if row["ranking_tau"] is None or math.isnan(row["ranking_tau"]) else f"{row['ranking_tau']:+.2f}"
        std = "" if math.isnan(row["search_acc_std"]) else f" +- {row['search_acc_std']:.4f}"
        lines.append(
            f"| {row['method']} | {row.get('space', plan['space'])} | {row['budget_ms']:.4g} | {row['aim_ms']:.4g} | {row['search_acc_mean']:.4f}{std} | "
            f"{row['finetuned_acc_mean']:.4f} | {row['random_acc_mean']:.4f} | {row['random_acc_best']:.4f} | "
            f"{row['diff']:+.4f}{ci} | {row['measured_ms_mean']:.4g} ({row['predicted_ms_mean']:.4g}) | "
            f"{row['search_wall_s_mean']:.0f} | {tau} |"
        )
    lines += [
        "",
        "Random nets:",
        "",
        "| space | budget ms | arch | seed | predicted ms | measured ms | acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for net in summary["nets"]:
        if net["kind"] == "random":
            lines.append(
                f"| {net.get('space', plan['space'])} | {net['budget_ms']:.4g} | `{net['arch'].split(':')[1]}` | {net['seed']} | {net['predicted_ms']:.4g} | "
                f"{net['measured_ms']:.4g} | {net['acc']:.4f} |"
            )
    lines += [
        "",
        "Searched nets:",
        "",
        "| method | space | budget ms | seed | arch | predicted ms | measured ms | from scratch | fine-tuned |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for net in summary["nets"]:
        if net["kind"] == "search":
            lines.append(
                f"| {net['method']} | {net.get('space', plan['space'])} | {net['budget_ms']:.4g} | {net['seed']} | `{net['arch'].split(':')[1]}` | "
                f"{net['predicted_ms']:.4g} | {net['measured_ms']:.4g} | {net['acc']:.4f} | {net['finetuned_acc']:.4f} |"
            )
    if summary["one_shot"]:
        lines += [
            "",
            "One-shot supernets (first seed's supernet for the ranking; means over seeds otherwise): the supernet's "
            "training time (its epochs, evaluation included), the mean score it gives the random nets of both bands "
            "(inherited weights, BN recalibrated), Kendall's tau of those scores against the nets' from-scratch accuracy, "
            "the selection's time, and the selected child's accuracy with inherited weights:",
            "",
            "| method | budget ms | supernet s | mean score of the random nets | tau | selection s | child acc (inherited) |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in summary["one_shot"]:
            lines.append(
                f"| {row['method']} | {row['budget_ms']:.4g} | {row['supernet_s']:.0f} | {row['random_score_mean']:.4f} | "
                f"{row['ranking_tau']:+.2f} | {row['selection_s']:.0f} | {row['child_acc_inherited']:.4f} |"
            )
    lines += ["", "![accuracy against measured latency](results.png)", ""]
    (out / "results.md").write_text("\n".join(lines))


# -- main -------------------------------------------------------------------------------------------
@dataclass
class Section:
    """One space of the benchmark: its methods, table, budgets and random nets (``proxyless``; DSO-NAS's DAG space)."""

    space: str
    space_args: dict
    methods: list[str]
    table: Path
    #: where its nets' measured latencies are cached (the nets of one space are timed in the same rounds)
    latency_file: str
    #: the supernets of the first seed score the random nets (chain supernets only)
    ranking: bool
    model: Any = None
    budgets: list[dict] = field(default_factory=list)


def main() -> int:
    parser = bench_cli.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short searches and recipe (< 15 min on 2 cores)")
    parser.add_argument("--table", help="latency table of this machine [default: profile one into the work folder]")
    parser.add_argument("--dag-table", help="DSO-NAS's table (its DAG space) [default: profile one into the work folder]")
    parser.add_argument("--work", type=Path, help="cache folder [runs/search_quality, or runs/search_quality-quick]")
    parser.add_argument("--out", type=Path, help="where results.md/.json/.png go [docs/, or the work folder with --quick]")
    parser.add_argument(
        "--workers", type=bench_cli.count, default=2, help="processes for searches and trainings (one torch thread each)"
    )
    parser.add_argument("--methods", help="comma-separated methods [every method of the registry]")
    parser.add_argument("--fractions", help="the proxyless budgets, as shares of its range above the fastest net [0.25,0.60]")
    parser.add_argument(
        "--search-steps", type=bench_cli.count, help="weight steps per search epoch, every method alike [30; 6 with --quick]"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    plan = Plan.quick() if args.quick else Plan()
    if args.fractions:
        try:
            fractions = tuple(float(f) for f in args.fractions.split(","))
        except ValueError:
            fractions = ()
        if not fractions or not all(0 < f <= 1 for f in fractions):
            parser.error(f"--fractions {args.fractions!r}: give shares of the range in (0, 1], comma-separated")
        plan = replace(plan, fractions=fractions)
    if args.search_steps is not None:
        if args.search_steps < 1:
            parser.error(f"--search-steps {args.search_steps}: give at least 1 step per epoch")
        plan = replace(plan, search={**plan.search, "steps_per_epoch": args.search_steps})
    work = args.work or ROOT / "runs" / ("search_quality-quick" if args.quick else "search_quality")
    out = args.out or (work if args.quick else ROOT / "docs")

    from hwnas.arch import Arch
    from hwnas.data import load_data
    from hwnas.files import check_writable
    from hwnas.latency import LatencyTable, latency_model
    from hwnas.search import STRATEGIES
    from hwnas.spaces import get_space

    # every flag and the data are checked before any work (a missing data set, an unwritable folder: error lines, exit 2)
    methods = args.methods.split(",") if args.methods else list(STRATEGIES)
    unknown = [m for m in methods if m not in STRATEGIES]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(STRATEGIES)}")
    for table in (args.table, args.dag_table):
        if table is not None and not Path(table).is_file():
            parser.error(f"latency table {table} does not exist")
    check_writable(work, folder=True)
    check_writable(out, folder=True)

    sa = space_args(plan)
    dag_sa = {**sa, "width_mult": plan.dag_width_mult}
    load_data(plan.data, sa["resolution"], sa["in_channels"])  # a missing data set fails here, before any work
    work.mkdir(parents=True, exist_ok=True)
    plan_dict = asdict(plan)
    space, dag_space = get_space(plan.space, **sa), get_space(plan.dag_space, **dag_sa)
    # every method of the registry, each on the space it can search (DSO-NAS: the edges of the DAG space)
    unfit = [m for m in methods if not (STRATEGIES[m].supports(space) or STRATEGIES[m].supports(dag_space))]
    if unfit:
        parser.error(f"method(s) {', '.join(unfit)} cannot search space {plan.space} or {plan.dag_space}")
    sections = []
    chain_methods = [m for m in methods if STRATEGIES[m].supports(space)]
    dag_methods = [m for m in methods if not STRATEGIES[m].supports(space)]
    if chain_methods:
        table = ensure_table(args.table, plan.space, sa, work / "table.json", plan.rounds)
        sections.append(Section(plan.space, sa, chain_methods, table, "latency.json", True))
    if dag_methods:
        table = ensure_table(args.dag_table, plan.dag_space, dag_sa, work / f"table-{plan.dag_space}.json", plan.rounds)
        sections.append(Section(plan.dag_space, dag_sa, dag_methods, table, f"latency-{plan.dag_space}.json", False))

    for section in sections:
        section.model = latency_model(LatencyTable.load(section.table), get_space(section.space, **section.space_args))
        for fraction in plan.fractions if section.space == plan.space else plan.dag_fractions:
            section.budgets.append({"space": section.space, **draw_band(section.model, fraction, plan)})
    budgets = [b for section in sections for b in section.budgets]

    # 1. searches
    searches = []
    for section in sections:
        for b in section.budgets:
            for method in section.methods:
                for seed in plan.seeds:
                    config = dict(
                        method=method,
                        table=str(section.table),
                        budget_ms=b["budget_ms"],
                        space=section.space,
                        space_args=section.space_args,
                        data=plan.data,
                        margin=plan.margin,
                        seed=seed,
                        **plan.search,
                    )
                    if method in plan.method_options:  # only where set, so the other methods' cache keys stay as they were
                        config["method_options"] = plan.method_options[method]
                    searches.append(
                        {
                            "method": method,
                            "seed": seed,
                            "budget": b,
                            "section": section,
                            "config": config,
                            "folder": str(work / "search" / search_key(method, config)),
                        }
                    )
    search_results = run_jobs(
        search_job, [{"folder": s["folder"], "config": s["config"]} for s in searches], args.workers, "searches"
    )

    # 2. trainings: searched archs from scratch and fine-tuned, random archs from scratch with every seed
    def train(arch: str, seed: int, weights: str | None = None) -> dict:
        recipe_key = {
            "plan_recipe": plan.finetune if weights else plan.recipe,
            "val_images": plan.recipe["val_images"],
            "data": plan.data,
        }
        return {
            "arch": arch,
            "seed": seed,
            "weights": weights,
            "plan": plan_dict,
            "folder": str(work / "train" / key("train", arch, seed, weights, recipe_key)),
        }

    jobs: list[dict] = []
    for s, result in zip(searches, search_results):
        s["scratch"] = train(result["arch"], s["seed"])
        s["finetune"] = train(result["arch"], s["seed"], str(Path(s["folder"]) / "child.pt"))
        jobs += [s["scratch"], s["finetune"]]
    # one seed (--quick): the first random arch gets a second one, so the seed noise is measured all the same
    noise_seeds = plan.seeds if len(plan.seeds) > 1 else (plan.seeds[0], plan.seeds[0] + 1)
    random_jobs = [
        (b, arch, train(arch, seed))
        for b in budgets
        for i, arch in enumerate(b["random"])
        for seed in (noise_seeds if i == 0 and b is budgets[0] else plan.seeds)
    ]
    unique = {j["folder"]: j for j in jobs + [r[2] for r in random_jobs]}
    trained = dict(zip(unique, run_jobs(train_job, list(unique.values()), args.workers, "trainings")))

    # 3. ranking: each first-seed chain supernet scores every random arch of its space
    taus = {}
    rank_runs, rank_scores, all_random = [], [], []
    random_accs: dict[str, list[float]] = {}  # arch -> its accuracy with each seed
    for _, arch, job in random_jobs:
        random_accs.setdefault(arch, []).append(trained[job["folder"]]["val_acc"])
    for section in (x for x in sections if x.ranking):
        all_random = [a for b in section.budgets for a in b["random"]]
        rank_runs = [s for s in searches if s["seed"] == plan.seeds[0] and s["section"] is section]
        rank_scores = run_jobs(
            ranking_job,
            [
                {
                    "run": s["folder"],
                    "archs": all_random,
                    "plan": plan_dict,
                    "file": str(
                        Path(s["folder"]) / f"ranking-{key(all_random, plan.ranking_images, plan.ranking_bn_batches)}.json"
                    ),
                }
                for s in rank_runs
            ],
            args.workers,
            "supernet rankings",
        )
        taus.update(
            {
                (s["method"], s["budget"]["fraction"]): kendall(
                    [scores[a] for a in all_random], [statistics.fmean(random_accs[a]) for a in all_random]
                )
                for s, scores in zip(rank_runs, rank_scores)
            }
        )

    # 4. latency of every net, measured alone at the end (the nets of one space in the same rounds)
    measured: dict[str, float] = {}
    for section in sections:
        searched_archs = [r["arch"] for s, r in zip(searches, search_results) if s["section"] is section]
        randoms = [a for b in section.budgets for a in b["random"]]
        measured.update(measure_latencies(list(dict.fromkeys(searched_archs + randoms)), plan, work, section.latency_file))

    # 5. figures
    nets = []
    for s, result in zip(searches, search_results):
        nets.append(
            {
                "kind": "search",
                "space": s["section"].space,
                "method": s["method"],
                "seed": s["seed"],
                "budget_ms": s["budget"]["budget_ms"],
                "arch": result["arch"],
                "predicted_ms": result["predicted_ms"],
                "measured_ms": measured[result["arch"]],
                "acc": trained[s["scratch"]["folder"]]["val_acc"],
                "finetuned_acc": trained[s["finetune"]["folder"]]["val_acc"],
                "supernet_acc": result["supernet_val_acc"],
                "child_acc_inherited": result["child_val_acc"],
                "search_wall_s": json.loads((Path(s["folder"]) / "wall_s.json").read_text()),
            }
        )
    models = {section.space: section.model for section in sections}
    for b, arch, job in random_jobs:
        nets.append(
            {
                "kind": "random",
                "space": b["space"],
                "budget_ms": b["budget_ms"],
                "arch": arch,
                "seed": job["seed"],
                "predicted_ms": models[b["space"]].predict(Arch.from_compact(arch)),
                "measured_ms": measured[arch],
                "acc": trained[job["folder"]]["val_acc"],
            }
        )
    rows = []
    for section in sections:
        for b in section.budgets:
            randoms = [statistics.fmean(random_accs[a]) for a in b["random"]]  # each arch's mean over its seeds
            b["arch_spread"] = arch_spread([random_accs[a] for a in b["random"]])
            for method in section.methods:
                mine = [
                    n
                    for n in nets
                    if n["kind"] == "search"
                    and n["method"] == method
                    and n["space"] == section.space
                    and n["budget_ms"] == b["budget_ms"]
                ]
                accs = [n["acc"] for n in mine]
                acc_mean, acc_std = mean_std(accs)
                diff, low, high = welch_interval(accs, randoms)
                rows.append(
                    {
                        "method": method,
                        "space": section.space,
                        "budget_ms": b["budget_ms"],
                        "aim_ms": b["aim_ms"],
                        "fraction": b["fraction"],
                        "search_acc_mean": acc_mean,
                        "search_acc_std": acc_std,
                        "search_accs": accs,
                        "finetuned_acc_mean": statistics.fmean(n["finetuned_acc"] for n in mine),
                        "random_acc_mean": statistics.fmean(randoms),
                        "random_acc_best": max(randoms),
                        "random_accs": randoms,
                        "diff": diff,
                        "diff_low": low,
                        "diff_high": high,
                        "measured_ms_mean": statistics.fmean(n["measured_ms"] for n in mine),
                        "predicted_ms_mean": statistics.fmean(n["predicted_ms"] for n in mine),
                        "search_wall_s_mean": statistics.fmean(n["search_wall_s"] for n in mine),
                        "ranking_tau": taus.get((method, b["fraction"])) if section.ranking else None,
                    }
                )
    one_shot = []
    for s, scores in zip(rank_runs, rank_scores):
        if not STRATEGIES[s["method"]].one_shot:
            continue
        mine = [(x, r) for x, r in zip(searches, search_results) if x["method"] == s["method"] and x["budget"] is s["budget"]]
        epochs = [
            [json.loads(line)["seconds"] for line in (Path(x["folder"]) / "history.jsonl").read_text().splitlines()]
            for x, _ in mine
        ]
        one_shot.append(
            {
                "method": s["method"],
                "budget_ms": s["budget"]["budget_ms"],
                "supernet_s": statistics.fmean(map(sum, epochs)),
                "random_score_mean": statistics.fmean(scores[a] for a in all_random),
                "ranking_tau": taus[(s["method"], s["budget"]["fraction"])],
                "selection_s": statistics.fmean(r["selection_seconds"] for _, r in mine),
                "child_acc_inherited": statistics.fmean(r["child_val_acc"] for _, r in mine),
            }
        )
    # the run's span across invocations: the first search folder made, to the last latency measurement written
    span_s = max((work / section.latency_file).stat().st_mtime for section in sections) - min(
        (Path(x["folder"]) / "config.json").stat().st_mtime for x in searches
    )
    job_seconds = [json.loads((Path(j) / "wall_s.json").read_text()) for j in [s["folder"] for s in searches] + list(unique)]
    main_section = sections[0]
    summary = {
        "quick": args.quick,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "commit": commit(),
        "table": str(main_section.table),
        "fastest_ms": main_section.model.fastest()[1],
        "slowest_ms": main_section.model.slowest()[1],
        "spaces": [
            {
                "space": section.space,
                "space_args": section.space_args,
                "methods": section.methods,
                "table": str(section.table),
                "fastest_ms": section.model.fastest()[1],
                "slowest_ms": section.model.slowest()[1],
            }
            for section in sections
        ],
        "plan": plan_dict,
        "val_images": plan.recipe["val_images"] or len(load_data(plan.data, sa["resolution"], sa["in_channels"]).val),
        "seed_noise": seed_noise(random_accs),
        "budgets": budgets,
        "rows": rows,
        "nets": nets,
        "one_shot": one_shot,
        "wall_s": time.perf_counter() - started,
        "span_s": span_s,
        "jobs_s": sum(job_seconds),
    }
    summary["plan_workers"] = args.workers
    report(out, summary)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(bench_cli.run(main))
