"""The human side of a run: ``search.png`` (accuracy and E[lat] per epoch) and ``report.md``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hwnas.arch import Arch
from hwnas.files import write_bytes_atomic, write_text_atomic
from hwnas.latency import LatencyModel
from hwnas.run_folder import PLOT
from hwnas.search.budget import Target


def write_plot(path: Path, history: list[dict[str, Any]], target: Target, method: str) -> None:
    """Two panels over epochs: supernet train/val accuracy; E[lat] and argmax latency against budget and aim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] + 1 for row in history]
    fig, (acc_ax, lat_ax) = plt.subplots(1, 2, figsize=(10, 4))
    acc_ax.plot(epochs, [row["train_acc"] for row in history], marker="o", label="train (supernet)")
    acc_ax.plot(epochs, [row["val_acc"] for row in history], marker="o", label="val (supernet)")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title=f"{method}: accuracy")
    acc_ax.legend()
    lat_ax.plot(epochs, [row["expected_ms"] for row in history], marker="o", label="E[lat]")
    lat_ax.plot(epochs, [row["argmax_ms"] for row in history], marker="x", label="argmax arch")
    lat_ax.axhline(target.budget_ms, color="red", label=f"budget {target.budget_ms:.3g} ms")
    lat_ax.axhline(target.aim_ms, color="red", linestyle="--", label=f"aim {target.aim_ms:.3g} ms")
    lat_ax.set(xlabel="epoch", ylabel="ms (predicted)", title="latency")
    lat_ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def write_report(
    path: Path,
    result: dict[str, Any],
    history: list[dict[str, Any]],
    target: Target,
    config: dict[str, Any],
    arch: Arch,
    latency: LatencyModel,
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
        f"* how it was derived: the most probable arch {result['argmax_ms']:.4g} ms ({100 * result['argmax_share_of_aim']:.1f} % "
        f"of the aim); the repair saved {result['repair_ms']:.4g} ms in {result['repair_swaps']} swap(s); the fill added "
        f"{result['fill_ms']:.4g} ms ({100 * result['fill_share_of_aim']:.1f} % of the aim) in {result['fill_swaps']} swap(s); "
        f"final E[lat] {result['expected_ms']:.4g} ms, multiplier {result['multiplier']:.3g}",
        f"* supernet val acc: {result['supernet_val_acc']:.4f}; child val acc (inherited weights, BN recalibrated): "
        f"{result['child_val_acc']:.4f}",
        f"* table: `{result['table']}` ({config['table_meta']})",
        f"* space: {config['space']} {config['space_args']}; data: {config['data']}; seed {config['seed']}; "
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
        temperature = "" if row.get("temperature") is None else f"{row['temperature']:.3f}"
        lines.append(
            f"| {row['epoch'] + 1} | {row['train_acc']:.3f} | {row['val_acc']:.3f} | {row['expected_ms']:.4f} | "
            f"{row['argmax_ms']:.4f} | {row['multiplier']:.3f} | {row['entropy']:.3f} | {temperature} | {row['layers_fixed']} |"
        )
    lines += ["", f"![search]({PLOT})", ""]
    write_text_atomic(path, "\n".join(lines))
