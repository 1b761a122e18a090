"""``hwnas export OUTPUT.onnx``: the derived child as a deployable file, measured against the budget."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from hwnas.arch import Arch, load_arch
from hwnas.cli.options import COUNT, echo_json, json_option, precision_options
from hwnas.errors import HwnasError
from hwnas.export.artifact import ExportRequest, export_and_verify
from hwnas.export.drift import DEFAULT_REFERENCES, pick_references
from hwnas.export.int8 import DEFAULT_CALIBRATION_IMAGES, Int8Plan, accuracy_line, plan_int8
from hwnas.files import check_writable, refuse_overwrite
from hwnas.latency import LatencyModel, LatencyTable, latency_model
from hwnas.latency.lookup import expected_meta, find_table
from hwnas.latency.model import calibration_record
from hwnas.latency.quantize import METHODS, Recipe
from hwnas.latency.runtimes import DEVICES, RUNTIMES, get_runtime
from hwnas.run_folder import RunFolder, load_weights
from hwnas.search.budget import parse_latency

#: exit code of a measured FAIL (bad input exits 2)
EXIT_FAIL = 1


def prediction_model(
    arch: Arch, request: ExportRequest, table: str | None, allow_foreign: bool, uncalibrated: bool = False
) -> LatencyModel | None:
    """The latency model of ``table`` (else of this target's table, if one exists) for the arch's space.

    A table without a calibration is refused unless ``uncalibrated`` (its prediction is then a raw sum).
    """
    space = arch.build_space()
    if table is None:
        try:
            table = str(
                find_table(space, request.device, request.runtime, request.threads, request.batch_size, request.precision)
            )
        except HwnasError:
            return None
    expect = expected_meta(request.device, request.runtime, request.batch_size, request.precision, space)
    loaded = LatencyTable.load(table, expect=expect, allow_foreign=allow_foreign)
    loaded.require_calibration(uncalibrated)
    return latency_model(loaded, space)


def _run_table(run: RunFolder, request: ExportRequest) -> str | None:
    """The table the search used, if it was made for the runtime, device and precision measured now and still exists."""
    config = run.config()
    same_target = (
        config.get("runtime") == request.runtime
        and config.get("device") == request.device
        and config.get("precision", "fp32") == request.precision
    )
    path = config.get("table")
    return path if same_target and path and Path(path).exists() else None


@click.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Search run to export [default: the newest run under runs/].",
)
@click.option("--arch", "arch_source", help="Export this arch (JSON file or compact string) instead of a run's child.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="State dict for --arch [default: fresh init].")
@click.option(
    "--runtime",
    type=click.Choice(list(RUNTIMES)),
    default="onnxruntime",
    show_default=True,
    help="Runtime that measures the artifact.",
)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option("--threads", type=COUNT, default=1, show_default=True, help="CPU threads while measuring (pinned).")
@precision_options()
@click.option(
    "--calibration-images",
    type=COUNT,
    default=DEFAULT_CALIBRATION_IMAGES,
    show_default=True,
    help="--precision int8: training images of the run's data set that calibrate the activation ranges.",
)
@click.option(
    "--calibration-method",
    type=click.Choice(list(METHODS)),
    default=Recipe.method,
    show_default=True,
    help="--precision int8: how the activation ranges are read from the calibration images.",
)
@click.option("--batch-size", type=COUNT, default=1, show_default=True, help="Batch of the measured input.")
@click.option("--dynamic-batch", is_flag=True, help="Give the ONNX model a symbolic batch axis.")
@click.option("--budget", help="Latency budget, e.g. 80ms [default: the run's budget].")
@click.option(
    "--table", type=click.Path(dir_okay=False), help="Latency table for the prediction [default: the run's, else this target's]."
)
@click.option("--allow-foreign-table", is_flag=True, help="Use a table of another target with a warning.")
@click.option(
    "--uncalibrated",
    is_flag=True,
    help="Predict from a table that was never calibrated (a raw sum) [default: as the run was searched].",
)
@click.option("--rounds", type=COUNT, default=3, show_default=True, help="Interleaved measurement rounds.")
@click.option(
    "--references",
    type=click.IntRange(min=0),
    default=DEFAULT_REFERENCES,
    show_default=True,
    help="Nets of the table's validation timed beside the artifact to measure the machine's drift (0: none).",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@json_option
def export(
    output: Path,
    run_dir: Path | None,
    arch_source: str | None,
    weights: Path | None,
    runtime: str,
    device: str,
    threads: int,
    precision: str | None,
    calibration_images: int,
    calibration_method: str,
    batch_size: int,
    dynamic_batch: bool,
    budget: str | None,
    table: str | None,
    allow_foreign_table: bool,
    uncalibrated: bool,
    rounds: int,
    references: int,
    force: bool,
    as_json: bool,
) -> None:
    """Export a child net to ONNX (and a TensorRT engine), measure the artifact, and judge it against the budget.

    Prints budget, predicted and measured latency and PASS or FAIL; exits 1 on FAIL. The report
    is saved beside the artifact as OUTPUT.report.json. With --precision int8 the child is
    quantized on images of its run's data set, and the report gives its float and INT8
    validation accuracy side by side.
    """
    if run_dir and arch_source:
        raise HwnasError("give --run or --arch, not both")
    if weights and not arch_source:
        raise HwnasError("--weights goes with --arch (a run brings its own weights)")
    precision = precision or "fp32"
    if precision == "int8":
        if arch_source:
            raise HwnasError(
                "--precision int8 calibrates on the images of a run's data set: export a run (--run RUN), not --arch"
            )
        get_runtime(runtime, device, threads, precision=precision)  # no INT8 path here: the error says which runtime has one
    request = ExportRequest(
        output,
        runtime,
        device,
        threads,
        precision=precision,
        batch_size=batch_size,
        dynamic_batch=dynamic_batch,
        rounds=rounds,
        force=force,
    )
    for path in request.outputs():
        refuse_overwrite(path, force)
        check_writable(path)
    source: dict[str, Any]
    if arch_source:
        arch = load_arch(arch_source)
        model = arch.build()
        if weights:
            load_weights(model, weights)
        budget_ms = parse_latency(budget) if budget else None
        source = {"arch": arch.to_compact(), "weights": str(weights) if weights else None}
        run_table = table
    else:
        run = RunFolder.open(run_dir) if run_dir else RunFolder.newest()
        arch, model, weights_path = run.child()
        budget_ms = parse_latency(budget) if budget else run.result().get("budget_ms")
        source = {"run": str(run.path), "arch": arch.to_compact(), "weights": str(weights_path)}
        run_table = table or _run_table(run, request)
        uncalibrated = uncalibrated or bool(run.config().get("uncalibrated"))
    int8: Int8Plan | None = None
    if precision == "int8":  # read the calibration images and the validation split now: before anything is written
        recipe = Recipe(method=calibration_method)
        int8 = plan_int8(run, arch.space_args, calibration_images, batch_size, recipe)
    latency = prediction_model(arch, request, run_table, allow_foreign_table, uncalibrated)
    predicted_ms = None if latency is None else latency.predict(arch)
    source["table"] = None if latency is None else str(latency.table.path)
    source["calibration"] = None if latency is None else calibration_record(latency.table)
    reference_nets = [] if latency is None else pick_references(latency, predicted_ms, references)
    space = arch.build_space()
    report = export_and_verify(model, space.input_shape, request, budget_ms, predicted_ms, source, reference_nets, int8)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"exported {arch.to_compact()}")
        click.echo(f"  -> {', '.join(report.files)} (opset {report.details['opset']}, report {request.report_path})")
        before = " (the float export, before quantization)" if int8 is not None else ""
        click.echo(f"parity     max abs error {report.verdict.max_abs_error:.2e}, relative {report.max_rel_error:.2e}{before}")
        if int8 is not None:
            click.echo(f"precision  int8: {int8.describe()}")
            quantization = report.details["quantization"]
            kernels = ", ".join(f"{count} {op}" for op, count in quantization["onnxruntime_cpu_kernels"].items())
            click.echo(f"           the file holds {', '.join(quantization['quantized_ops'])}; ONNX Runtime (CPU) runs {kernels}")
            click.echo(accuracy_line(report.details["accuracy"], int8.calibration_info["data"]))
        for line in report.verdict.lines():
            click.echo(line)
        if latency is not None and latency.table.calibration is None:
            click.echo("           predicted is a raw sum of the table's entries: the table has no calibration (--uncalibrated)")
        if report.drift is not None:
            for line in report.drift.lines(predicted_ms, report.verdict.measured_ms, source["table"]):
                click.echo(line)
    if report.verdict.verdict == "FAIL":
        sys.exit(EXIT_FAIL)
