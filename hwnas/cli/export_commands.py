"""``hwnas export OUTPUT.onnx``: the derived child as a deployable file, measured against the budget."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click

from hwnas.arch import Arch, load_arch
from hwnas.cli.options import COUNT, echo_json, json_option
from hwnas.errors import HwnasError
from hwnas.export.artifact import ExportRequest, export_and_verify
from hwnas.export.drift import DEFAULT_REFERENCES, pick_references
from hwnas.files import check_writable, refuse_overwrite
from hwnas.latency import LatencyModel, LatencyTable, latency_model
from hwnas.latency.lookup import expected_meta, find_table
from hwnas.latency.model import calibration_record
from hwnas.latency.runtimes import DEVICES, RUNTIMES
from hwnas.run_folder import RunFolder, load_weights, recorded_table
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
            table = str(find_table(space, request.device, request.runtime, request.threads, request.batch_size, request.fp16))
        except HwnasError:
            return None
    expect = expected_meta(request.device, request.runtime, request.batch_size, request.fp16, space)
    loaded = LatencyTable.load(table, expect=expect, allow_foreign=allow_foreign)
    loaded.require_calibration(uncalibrated)
    return latency_model(loaded, space)


def _run_table(run: RunFolder, request: ExportRequest) -> str | None:
    """The table the search used, as it was then (``recorded_table``), if it was made for the runtime and device
    measured now; None for another target. A changed or lost table is refused: ``--table`` chooses another."""
    config = run.config()
    same_target = config.get("runtime") == request.runtime and config.get("device") == request.device
    path, sha256 = config.get("table"), config.get("table_sha256")
    if not (same_target and isinstance(path, str) and path):
        return None
    if not isinstance(sha256, str):  # a run from before tables were recorded by their hash
        return path if Path(path).exists() else None
    other = f"pass --table {path} to predict with the table as it is now"
    found = recorded_table(run.path, path, sha256, other)
    if str(found) != path:
        warnings.warn(f"the run's table {path} is gone: predicting with the run's copy {found} (the same bytes)", stacklevel=2)
    return str(found)


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
@click.option("--fp16", is_flag=True, help="TensorRT: build a float16 engine.")
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
    fp16: bool,
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
    is saved beside the artifact as OUTPUT.report.json.
    """
    if run_dir and arch_source:
        raise HwnasError("give --run or --arch, not both")
    if weights and not arch_source:
        raise HwnasError("--weights goes with --arch (a run brings its own weights)")
    request = ExportRequest(output, runtime, device, threads, fp16, batch_size, dynamic_batch, rounds, force)
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
        if table:  # an explicit choice over the run's own table: the report names both
            config = run.config()
            source["table_given"] = True
            source["run_table"] = {"path": config.get("table"), "sha256": config.get("table_sha256")}
        run_table = table or _run_table(run, request)
        uncalibrated = uncalibrated or bool(run.config().get("uncalibrated"))
    latency = prediction_model(arch, request, run_table, allow_foreign_table, uncalibrated)
    predicted_ms = None if latency is None else latency.predict(arch)
    source["table"] = None if latency is None else str(latency.table.path)
    source["table_sha256"] = None if latency is None else latency.table.sha256
    source["calibration"] = None if latency is None else calibration_record(latency.table)
    reference_nets = [] if latency is None else pick_references(latency, predicted_ms, references)
    space = arch.build_space()
    report = export_and_verify(model, space.input_shape, request, budget_ms, predicted_ms, source, reference_nets)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"exported {arch.to_compact()}")
        click.echo(f"  -> {', '.join(report.files)} (opset {report.details['opset']}, report {request.report_path})")
        if source.get("table_given"):
            was = source["run_table"]
            click.echo(
                f"table      {source['table']} (given with --table; the run searched with {was['path']}, sha256 {was['sha256']})"
            )
        click.echo(f"parity     max abs error {report.verdict.max_abs_error:.2e}, relative {report.max_rel_error:.2e}")
        for line in report.verdict.lines():
            click.echo(line)
        if latency is not None and latency.table.calibration is None:
            click.echo("           predicted is a raw sum of the table's entries: the table has no calibration (--uncalibrated)")
        if report.drift is not None:
            for line in report.drift.lines(predicted_ms, report.verdict.measured_ms, source["table"]):
                click.echo(line)
    if report.verdict.verdict == "FAIL":
        sys.exit(EXIT_FAIL)
