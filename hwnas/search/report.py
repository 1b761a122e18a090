"""The human side of a run: ``search.png`` (accuracy and E[lat] per epoch) and ``report.md``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.arch import Arch
from hwnas.files import write_bytes_atomic, write_text_atomic
from hwnas.latency import LatencyPredictor
from hwnas.run_folder import PLOT, SELECTION_PLOT
from hwnas.search.budget import Target
from hwnas.search.evolution import SearchOutcome

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _cell(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _how_derived(result: dict[str, Any]) -> str:
    if "selection" in result:
        return (
            f"{result['selection']} scored {result['evaluations']} archs under the aim with the supernet's weights "
            f"(BN recalibrated, held-out training images); the best scored {result['selection_score']:.4f}; the selection "
            f"took {result['selection_seconds']:.0f} s, {100 * result['selection_share_of_time']:.0f} % of the search's time"
        )
    if "pruned_ms" in result:
        return (
            f"pruned at lambda = 0 (isolated ops removed): {result['pruned_ms']:.4g} ms ({100 * result['argmax_share_of_aim']:.1f} % "
            f"of the aim); derived from {result['derived_from']} ({result['start_ms']:.4g} ms); the repair removed {result['repair_swaps']} edge(s) by least lambda per ms, saving "
            f"{result['repair_ms']:.4g} ms; {result['edges_kept']} of {result['edges_total']} edges kept; final gamma "
            f"{result['multiplier']:.3g}"
        )
    return (
        f"the most probable arch {result['argmax_ms']:.4g} ms ({100 * result['argmax_share_of_aim']:.1f} % "
        f"of the aim); the repair saved {result['repair_ms']:.4g} ms in {result['repair_swaps']} swap(s); the fill added "
        f"{result['fill_ms']:.4g} ms ({100 * result['fill_share_of_aim']:.1f} % of the aim) in {result['fill_swaps']} swap(s); "
        f"final E[lat] {result['expected_ms']:.4g} ms, multiplier {result['multiplier']:.3g}"
    )


def write_plot(path: Path, history: list[dict[str, Any]], target: Target, method: str) -> None:
    """Two panels over epochs: supernet train/val accuracy; E[lat] and argmax latency against budget and aim."""

    def series(name: str) -> list[float]:
        return [float("nan") if row.get(name) is None else row[name] for row in history]

    epochs = [row["epoch"] + 1 for row in history]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    acc_ax, lat_ax = fig.subplots(1, 2)
    acc_ax.plot(epochs, [row["train_acc"] for row in history], marker="o", label="train (supernet)")
    acc_ax.plot(epochs, [row["val_acc"] for row in history], marker="o", label="val (supernet)")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title=f"{method}: accuracy")
    acc_ax.legend()
    lat_ax.plot(epochs, series("expected_ms"), marker="o", label="E[lat] (one-shot: mean of the trained paths)")
    if any(row.get("argmax_ms") is not None for row in history):
        lat_ax.plot(epochs, series("argmax_ms"), marker="x", label="argmax arch")
    lat_ax.axhline(target.budget_ms, color="red", label=f"budget {target.budget_ms:.3g} ms")
    lat_ax.axhline(target.aim_ms, color="red", linestyle="--", label=f"aim {target.aim_ms:.3g} ms")
    lat_ax.set(xlabel="epoch", ylabel="ms (predicted)", title="latency")
    lat_ax.legend()
    _save(fig, path)


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())


def write_selection_plot(path: Path, outcome: SearchOutcome, target: Target, selection: str) -> None:
    """A one-shot selection: the best score per generation, and every scored arch's predicted latency against its score."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    best_ax, cloud_ax = fig.subplots(1, 2)
    best_ax.plot([row["scored"] for row in outcome.history], [row["best_score"] for row in outcome.history], marker="o")
    best_ax.set(xlabel="archs scored", ylabel="best held-out accuracy (supernet weights)", title=f"{selection}: best so far")
    cloud_ax.scatter(
        [ms for ms, _ in outcome.scored],
        [score for _, score in outcome.scored],
        s=8,
        c=range(len(outcome.scored)),
        cmap="viridis",
        label="scored archs (colour: order)",
    )
    cloud_ax.scatter([outcome.latency_ms], [outcome.score], marker="*", s=150, color="red", label="chosen")
    cloud_ax.axvline(target.aim_ms, color="red", linestyle="--", label=f"aim {target.aim_ms:.3g} ms")
    cloud_ax.set(xlabel="ms (predicted)", ylabel="held-out accuracy", title="candidates")
    cloud_ax.legend()
    _save(fig, path)


def _calibration_words(record: dict[str, Any] | None) -> str:
    """Which calibration turned the table's sums into the predictions above, and when it was fitted."""
    if record is None:
        return "**none**: predictions are raw sums of the table's entries (--uncalibrated)"
    held = "leave-one-out" if record["held_out"] == "each" else "held-out half"
    p90 = record["p90_relative_error"]
    error = f", {held} p90 error {p90:.1%}" if p90 is not None else ""
    nets = f" on {record['nets']} random nets and the fastest and slowest" if record["nets"] else ""
    return f"{record['formula']} [{record['fit']}], fitted {record['fitted']} by `{record['by']}`{nets}{error}"


def write_report(
    path: Path,
    result: dict[str, Any],
    history: list[dict[str, Any]],
    target: Target,
    config: dict[str, Any],
    arch: Arch,
    latency: LatencyPredictor,
) -> None:
    aim_note = f" ({target.clamp_note()})" if target.aim_clamped else ""
    lines = [
        f"# Search report: {result['method']}",
        "",
        f"* budget: **{target.budget_ms:.4g} ms**; aim: **{target.aim_ms:.4g} ms** = budget x (1 - margin {target.margin:.3g}, "
        f"{target.margin_source}){aim_note}",
        f"* derived arch predicted latency: **{result['predicted_ms']:.4g} ms** "
        f"({100 * result['predicted_ms'] / target.budget_ms:.1f} % of the budget, {100 * result['derived_share_of_aim']:.1f} % "
        f"of the aim); space range {target.fastest_ms:.4g} - {target.slowest_ms:.4g} ms",
        f"* how it was derived: {_how_derived(result)}",
        f"* supernet val acc: {result['supernet_val_acc']:.4f}; child val acc (inherited weights, BN recalibrated): "
        f"{result['child_val_acc']:.4f}",
        f"* table: `{result['table']}` ({config['resolved']['table_meta']})",
        f"* calibration: {_calibration_words(result.get('calibration'))}",
        f"* space: {config['space']} {config['resolved']['space_args']}; data: {config['data']}; seed {config['seed']}; "
        f"epochs {config['epochs']}; latency loss {config['latency_loss']}",
        "",
        "## Derived arch",
        "",
        f"`{result['arch']}`",
        "",
        "| layer | op | ms |",
        "|---|---|---|",
    ]
    for index, (op, ms) in enumerate(zip(arch.choices, latency.layer_ms(arch))):
        lines.append(f"| {index} | {op} | {ms:.4f} |")
    lines += [
        "",
        "## History",
        "",
        "| epoch | train acc | val acc | E[lat] ms | argmax ms | multiplier | entropy | temperature | fixed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in history:
        cells = [str(row["epoch"] + 1)] + [
            _cell(row.get(name), digits)
            for name, digits in (
                ("train_acc", 3),
                ("val_acc", 3),
                ("expected_ms", 4),
                ("argmax_ms", 4),
                ("multiplier", 3),
                ("entropy", 3),
                ("temperature", 3),
            )
        ]
        lines.append(f"| {' | '.join(cells)} | {row['layers_fixed']} |")
    lines += ["", f"![search]({PLOT})", ""]
    if "selection" in result:
        lines += [f"![selection]({SELECTION_PLOT})", ""]
    write_text_atomic(path, "\n".join(lines))
