"""``hwnas export OUTPUT.onnx|.engine|.pte``: the derived child as a deployable file, measured against the budget."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from hwnas import api
from hwnas.cli.mobile_options import android_options
from hwnas.cli.options import COUNT, echo_json, json_option, precision_options, space_file_option
from hwnas.export.drift import DEFAULT_REFERENCES
from hwnas.export.int8 import DEFAULT_CALIBRATION_IMAGES, accuracy_line, contents_line
from hwnas.latency.quantize import METHODS, Recipe
from hwnas.latency.runtimes import DEVICES, RUNTIMES

#: exit code of a measured FAIL (bad input exits 2)
EXIT_FAIL = 1


def _format_line(details: dict[str, Any]) -> str:
    """What was written: the ONNX opset, or the ExecuTorch program and how much XNNPACK took."""
    if details.get("format") == "pte":
        delegated = "all delegated" if details.get("delegated") else f"portable: {', '.join(details.get('portable_ops', []))}"
        return f"ExecuTorch {details.get('executorch')}, {details.get('delegate')}, {delegated}"
    return f"opset {details.get('opset')}"


@click.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Search run to export [default: the newest run under runs/].",
)
@click.option("--arch", "arch_source", help="Export this arch (JSON file or compact string) instead of a run's child.")
@space_file_option
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="State dict for --arch [default: fresh init].")
@click.option(
    "--runtime",
    type=click.Choice(list(RUNTIMES)),
    help="Runtime that measures the artifact [default: from OUTPUT's suffix: .onnx onnxruntime, .engine tensorrt, .pte executorch].",
)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@android_options
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
    help="--precision int8: how the activation ranges are read from the calibration images (a .pte: minmax only).",
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
    space_file: str | None,
    weights: Path | None,
    runtime: str | None,
    device: str,
    adb: str | None,
    serial: str | None,
    runner: str | None,
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
    """Export a child net (OUTPUT's suffix: .onnx, .engine, .pte), measure the artifact, and judge it against the budget.

    Prints budget, predicted and measured latency and PASS or FAIL; exits 1 on FAIL. The report
    is saved beside the artifact as OUTPUT.report.json. With --precision int8 the child is
    quantized on images of its run's data set, and the report gives its float and INT8
    validation accuracy side by side.
    """
    report = api.export(
        output,
        run=run_dir,
        arch=arch_source,
        space=space_file,
        weights=weights,
        runtime=runtime,
        device=device,
        adb=adb,
        serial=serial,
        runner=runner,
        threads=threads,
        precision=precision,
        calibration_images=calibration_images,
        calibration_method=calibration_method,
        batch_size=batch_size,
        dynamic_batch=dynamic_batch,
        budget=budget,
        table=table,
        allow_foreign_table=allow_foreign_table,
        uncalibrated=uncalibrated,
        rounds=rounds,
        references=references,
        force=force,
    )
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"exported {report.details['source']['arch']}")
        click.echo(
            f"  -> {', '.join(report.files)} ({_format_line(report.details)}, report {output.with_suffix('.report.json')})"
        )
        source = report.details["source"]
        if source.get("table_given"):
            was = source["run_table"]
            click.echo(
                f"table      {source['table']} (given with --table; the run searched with {was['path']}, sha256 {was['sha256']})"
            )
        quantization = report.details.get("quantization")
        before = " (the float export, before quantization)" if quantization else ""
        click.echo(f"parity     max abs error {report.verdict.max_abs_error:.2e}, relative {report.max_rel_error:.2e}{before}")
        if quantization:
            click.echo(f"precision  int8: {quantization['described']}")
            click.echo(f"           {contents_line(quantization)}")
            click.echo(accuracy_line(report.details["accuracy"], quantization["calibration"]["data"]))
        for line in report.verdict.lines():
            click.echo(line)
        if report.details["source"]["table"] is not None and report.details["source"]["calibration"] is None:
            click.echo("           predicted is a raw sum of the table's entries: the table has no calibration (--uncalibrated)")
        if report.drift is not None:
            for line in report.drift.lines(
                report.verdict.predicted_ms, report.verdict.measured_ms, report.details["source"]["table"]
            ):
                click.echo(line)
    if report.verdict.verdict == "FAIL":
        sys.exit(EXIT_FAIL)
