"""``hwnas tables validate``: measure random archs end to end and score the table's predictions.

N random archs of the table's space are built whole, prepared by the same runtime and
measured with the same protocol, interleaved over rounds. Their uncalibrated sums of table
entries are scored against the measurements; ``measured ~ a * sum + c * ops + b`` (``ops``: the
layers that run an op) is fitted on the first half and the anchors below, scored on the held-out
second half ("calibrated"), and becomes the table's calibration. The
even rounds of the same archs scored against the odd rounds give the noise floor: no table
can be shown better than the measurements agree with themselves.

The space's fastest and slowest nets ("anchors") are measured in the same rounds and join the
fit, not the scores: random archs never come near them, yet tight and loose budgets select
nets there. ``hwnas export`` uses every validated net as a reference for the machine's drift
(``hwnas.export.drift``).

``hwnas profile`` ends with the same measurement on a few nets (``PROFILE_NETS``) and
``held_out="each"``: the calibration is fitted on all of them and each random net is scored by
the fit on the others (leave-one-out), so a handful of nets both fit and check it.
"""

from __future__ import annotations

import datetime as _dt
import io
import statistics
import time
from pathlib import Path
from typing import Any

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.files import write_bytes_atomic
from hwnas.latency.accuracy import error_metrics, fit_linear, fit_per_op_line
from hwnas.latency.executorch_runtime import delegation_warnings
from hwnas.latency.model import apply_calibration, count_ops, latency_model
from hwnas.latency.protocol import Timing
from hwnas.latency.runtime_base import Runtime
from hwnas.latency.table import LatencyTable
from hwnas.progress import progress_bar
from hwnas.spaces import Space

MIN_ARCHS = 4
#: random nets (beside the fastest and slowest) that ``hwnas profile`` times to calibrate its table (docs/calibration.md)
PROFILE_NETS = 6
HELD_OUT = ("half", "each")
NOISY_FLOOR = 0.10  # a noise-floor MAPE above this: the calibration mostly fits the machine's noise


def random_archs(space: Space, n: int, seed: int) -> list[Arch]:
    """``n`` distinct uniformly random archs (distinct: a repeated arch would count twice)."""
    archs: dict[tuple[str, ...], Arch] = {}
    draw = 0
    while len(archs) < n and draw < 100 * n:
        arch = Arch.random(space, seed * 1_000_003 + draw)
        archs.setdefault(arch.choices, arch)
        draw += 1
    return list(archs.values())


def validate_table(
    table: LatencyTable,
    space: Space,
    runtime: Runtime,
    n: int = 30,
    seed: int = 0,
    progress: bool = True,
    held_out: str = "half",
) -> dict[str, Any]:
    """Measure ``n`` random archs, score the table, fit its calibration (the caller stores it).

    ``held_out="half"`` fits on the first half of the random archs and scores the second;
    ``"each"`` fits on all of them and scores each by the fit on the others (leave-one-out).
    """
    if held_out not in HELD_OUT:
        raise HwnasError(f"held_out must be one of {', '.join(HELD_OUT)}, got {held_out!r}")
    least = MIN_ARCHS if held_out == "half" else 2
    if n < least:
        what = "half of them fit the calibration, half test it" if held_out == "half" else "each is scored by the others"
        raise HwnasError(f"the number of validation nets must be at least {least} ({what}), got {n}")
    started = time.perf_counter()
    uncalibrated = LatencyTable(meta=table.meta, entries=table.entries, path=table.path)
    model = latency_model(uncalibrated, space)
    archs = random_archs(space, n, seed)
    anchors = {"fastest": model.fastest()[0], "slowest": model.slowest()[0]}
    measured_archs = archs + list(anchors.values())
    sums = [model.sum_ms(arch) for arch in measured_archs]
    batch = int(table.meta.get("batch_size", 1))
    rounds: list[list[Timing]] = [[] for _ in measured_archs]
    bar = _bar(len(measured_archs) * runtime.protocol.rounds, f"validate {space.name} ({runtime.name})", progress)
    runners = [runtime.prepare_module(space.build(arch.choices), (batch, *space.input_shape)) for arch in measured_archs]

    def record(index: int, round_index: int, timing: Timing) -> None:
        rounds[index].append(timing)
        bar.update(1)

    try:
        timings = runtime.measure(runners, on_measured=record)
    finally:
        bar.close()
    measured, ops = [t.median_ms for t in timings], [count_ops(arch) for arch in measured_archs]
    points = [
        {"arch": arch.to_compact(), "predicted_sum_ms": p, "measured_ms": t.median_ms, "p10_ms": t.p10_ms}
        for arch, p, t in zip(measured_archs, sums, timings)
    ]
    n_random = len(archs)
    fit_n = n_random // 2 if held_out == "half" else n_random
    calibration, scored, predicted_held = held_out_predictions(sums, ops, measured, fit_n, held_out == "each")
    anchor_points = points[n_random:]
    predicted, measured, rounds = sums[:n_random], measured[:n_random], rounds[:n_random]
    report: dict[str, Any] = {
        **error_metrics(predicted, measured),
        "calibrated": error_metrics(predicted_held, [measured[i] for i in scored]),
        "calibration": {**calibration, "fit_n": fit_n},
        "held_out": held_out,
        "rounds": runtime.protocol.rounds,
        "seed": seed,
    }
    if table.whole_net:  # the table's whole-net model on the same held-out nets, beside the sum and the line
        full = latency_model(LatencyTable(meta=table.meta, entries=table.entries, whole_net=table.whole_net), space)
        report["whole_net"] = error_metrics([full.predict(archs[i]) for i in scored], [measured[i] for i in scored])
    if runtime.protocol.rounds >= 2:
        report["noise_floor"] = error_metrics(*split_half(rounds))
    report["warnings"] = (
        runtime.warnings() + noise_warnings(report) + delegation_warnings(table.entries)
    )  # this validation's, beside the table's own
    report["wall_s"] = time.perf_counter() - started
    report["points"] = points[: len(archs)]
    report["anchors"] = [{**point, "role": role} for role, point in zip(anchors, anchor_points)]
    return report


def held_out_predictions(
    sums: list[float], ops: list[int], measured: list[float], fit_n: int, leave_one_out: bool
) -> tuple[dict[str, Any], list[int], list[float]]:
    """The calibration and its held-out predictions: ``(calibration, scored indices, their predictions)``.

    The last two nets are the anchors (fastest, slowest): every fit includes them, so it holds at
    both ends of the space; the others are random archs, and only they are scored. Without
    ``leave_one_out`` the fit takes the first ``fit_n`` random archs and scores the rest; with
    it the calibration is fitted on all of them and each is predicted by the fit on the others.
    """
    n_random = len(sums) - 2
    anchors = [n_random, n_random + 1]

    def fit_on(indices: list[int]) -> dict[str, Any]:
        chosen = indices + anchors
        return calibration_fit(
            [sums[i] for i in chosen], [measured[i] for i in chosen], (sums[n_random], ops[n_random]), [ops[i] for i in chosen]
        )

    if not leave_one_out:
        calibration = fit_on(list(range(fit_n)))
        scored = list(range(fit_n, n_random))
        return calibration, scored, [apply_calibration(calibration, sums[i], ops[i]) for i in scored]
    scored = list(range(n_random))
    predictions = [apply_calibration(fit_on([j for j in scored if j != i]), sums[i], ops[i]) for i in scored]
    return fit_on(scored), scored, predictions


def calibration_fit(
    predicted: list[float], measured: list[float], fastest: tuple[float, int] | None = None, ops: list[int] | None = None
) -> dict[str, Any]:
    """``{"a", "b", "per_op_ms", "fit"}``: the form of calibration that fits these nets best.

    The forms: the pure scale, the Theil-Sen line ``a * sum + b`` and, where the ops each net
    runs are given, the per-op line ``a * sum + c * ops + b``. Per-op tables over-count fixed
    costs that a whole net pays once and under-count what each op pays inside a net, so whole
    nets follow neither the sum nor its scale; a negative intercept is fine as long as the form
    stays physical. It is not when the slope is <= 0 (bigger nets faster: the noise of the
    machine exceeds the spread of the sample), when an op would cost less than nothing (c < 0),
    or when it predicts <= 0 ms for the space's fastest net (``fastest``: its sum and ops, else
    the smallest sum here), exactly where tight budgets select. The physical forms compete on
    their mean relative error over these nets (which include the fastest and slowest when
    ``validate_table`` fits); a tie goes to the richer form. The name in ``fit`` says why a
    richer form was refused.
    """
    counts = list(ops) if ops is not None else [0] * len(predicted)
    if fastest is None:
        lowest = min(range(len(predicted)), key=predicted.__getitem__)
        fastest = (predicted[lowest], counts[lowest])
    forms = [{"a": statistics.median(m / p for p, m in zip(predicted, measured)), "b": 0.0, "per_op_ms": 0.0, "fit": "ratio"}]
    a, b = fit_linear(predicted, measured)
    lines, refused = [{"a": a, "b": b, "per_op_ms": 0.0, "fit": "theil-sen"}], []
    if ops is not None:
        try:
            a, c, b = fit_per_op_line(predicted, counts, measured)
            lines.append({"a": a, "b": b, "per_op_ms": c, "fit": "per-op line"})
        except HwnasError as error:  # too few nets, or op counts that move with the sums: the other forms decide
            refused.append(f"no per-op line: {error}")
    for line in lines:
        at_fastest = apply_calibration(line, *fastest)
        if line["a"] <= 0:
            refused.append(f"the {line['fit']}'s slope was not positive")
        elif line["per_op_ms"] < 0:
            refused.append(f"the {line['fit']} charged each op {line['per_op_ms']:.3g} ms")
        elif at_fastest <= 0:
            refused.append(f"the {line['fit']} predicted {at_fastest:.3g} ms for the fastest net")
        else:
            forms.append(line)
    errors = [
        statistics.fmean(abs(apply_calibration(form, p, o) - m) / m for p, o, m in zip(predicted, counts, measured))
        for form in forms
    ]
    best = min(range(len(forms)), key=lambda i: (errors[i], -i))
    if best == 0:
        against = ", ".join(f"the {form['fit']}'s {error:.1%}" for form, error in zip(forms[1:], errors[1:]))
        refused += [f"mean error {errors[0]:.1%} against {against}"] if against else []
    return {**forms[best], "fit": forms[best]["fit"] + (f" ({'; '.join(refused)})" if refused else "")}


def noise_warnings(report: dict[str, Any]) -> list[str]:
    """A warning when the measurements disagree with themselves by more than ``NOISY_FLOOR``."""
    floor = report.get("noise_floor", {}).get("mape")
    if floor is None or floor <= NOISY_FLOOR:
        return []
    return [
        f"the machine disagreed with itself by {floor:.1%} (noise floor, even vs odd rounds): these figures and the "
        "calibration fitted now carry that noise; validate again in a quieter hour or with more --rounds"
    ]


def split_half(rounds: list[list[Timing]]) -> tuple[list[float], list[float]]:
    """Per arch, the median of its even rounds and of its odd rounds: two independent measurements.

    Scored against each other they are the noise floor: how well the measurements agree with
    themselves (each half rests on half the rounds, so this is a slightly pessimistic floor).
    """
    even = [statistics.median(t.median_ms for t in timings[0::2]) for timings in rounds]
    odd = [statistics.median(t.median_ms for t in timings[1::2]) for timings in rounds]
    return even, odd


def store_validation(table: LatencyTable, report: dict[str, Any], by: str = "hwnas tables validate") -> None:
    """Put the fit and the figures into the table (the caller saves it): ``predict`` uses the fit from then on.

    ``by`` names the command that measured the nets; the search report says it beside the date.
    """
    fitted = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    table.calibration = {**report["calibration"], "fitted": fitted, "by": by}
    table.validation = {key: value for key, value in report.items() if key != "calibration"}


def calibrate_profiled(table: LatencyTable, space: Space, runtime: Runtime, n: int = PROFILE_NETS, progress: bool = True) -> dict:
    """The end of ``hwnas profile``: time ``n`` random nets and the anchors whole, store the calibration, save the table.

    The calibration is fitted on every net; its error is each random net's under the fit on the
    others (leave-one-out). ``hwnas tables validate`` stays the fuller check on more nets.
    """
    report = validate_table(table, space, runtime, n, seed=0, progress=progress, held_out="each")
    store_validation(table, report, by="hwnas profile")
    table.save()
    return report


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures ``--json`` prints: the issue's keys, plus the whole-net model's (where the table has one), the noise floor,
    the fit and the warnings."""
    keys = (
        "n",
        "mape",
        "rmspe",
        "within_5",
        "within_10",
        "kendall_tau",
        "mean_signed_error",
        "p90_relative_error",
        "calibrated",
        "whole_net",
        "noise_floor",
        "calibration",
        "warnings",
    )
    return {key: report[key] for key in keys if key in report}


def format_report(report: dict[str, Any]) -> str:
    """One aligned text table: raw sum, calibrated (held-out), noise floor."""
    columns = [("sum of entries", report), ("calibrated (held out)", report["calibrated"])]
    if "whole_net" in report:
        columns.append(("whole-net model (held out)", report["whole_net"]))
    if "noise_floor" in report:
        columns.append(("noise floor (even vs odd rounds)", report["noise_floor"]))
    rows = [
        ("n", "{:d}"),
        ("mape", "{:.1%}"),
        ("rmspe", "{:.1%}"),
        ("within_5", "{:.0%}"),
        ("within_10", "{:.0%}"),
        ("kendall_tau", "{:.3f}"),
        ("mean_signed_error", "{:+.1%}"),
        ("p90_relative_error", "{:.1%}"),
    ]
    lines = [f"{'':<20}" + "".join(f"{name:>34}" for name, _ in columns)]
    for key, fmt in rows:
        lines.append(f"{key:<20}" + "".join(f"{fmt.format(figures[key]):>34}" for _, figures in columns))
    return "\n".join(lines)


def plot_validation(report: dict[str, Any], path: str | Path, title: str) -> None:
    """Predicted (raw sum and calibrated) against measured, with the y = x line."""

    def calibrated(point: dict[str, Any]) -> float:
        return apply_calibration(report["calibration"], point["predicted_sum_ms"], count_ops(Arch.from_compact(point["arch"])))

    points, anchors = report["points"], report.get("anchors", [])
    measured = [p["measured_ms"] for p in points + anchors]
    raw = [p["predicted_sum_ms"] for p in points + anchors]
    predicted = [calibrated(p) for p in points + anchors]
    half = report["calibration"]["fit_n"]
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    axes.scatter(raw, measured, s=14, marker="x", color="0.55", label=f"sum of entries (MAPE {report['mape']:.1%})")
    axes.scatter(predicted[:half], measured[:half], s=16, color="tab:blue", label="calibrated, fit half")
    axes.scatter(
        predicted[half : len(points)],
        measured[half : len(points)],
        s=16,
        color="tab:orange",
        label=f"calibrated, held-out half (MAPE {report['calibrated']['mape']:.1%})",
    )
    if anchors:
        axes.scatter(
            predicted[len(points) :],
            measured[len(points) :],
            s=40,
            marker="D",
            facecolors="none",
            edgecolors="tab:blue",
            label="calibrated, fastest and slowest net (fit)",
        )
    low, high = min(measured + raw + predicted), max(measured + raw + predicted)
    axes.plot([low, high], [low, high], color="black", linewidth=0.8, label="predicted = measured")
    axes.set_xlabel("predicted latency (ms)")
    axes.set_ylabel("measured latency (ms)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    write_bytes_atomic(path, buffer.getvalue())


def _bar(total: int, description: str, enabled: bool):
    return progress_bar(total=total, desc=description, unit="meas", enabled=enabled, leave=True)
