"""``hwnas profile``, ``hwnas tables validate|show``, ``hwnas predict``: build, check and use latency tables."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from hwnas import api
from hwnas.arch import Arch
from hwnas.cli.mobile_options import android_options
from hwnas.cli.options import (
    COUNT,
    COUNT0,
    FINITE,
    RESUME_HINT,
    build_space,
    echo_json,
    echo_warnings,
    json_option,
    precision_options,
    space_file_option,
    space_options,
    warning_line,
    with_options,
)
from hwnas.errors import HwnasError
from hwnas.files import check_writable, refuse_overwrite
from hwnas.latency.executorch_runtime import delegation_warnings, partly_delegated
from hwnas.latency.fit import fit_into, fit_table, parse_arch, read_timings, score_holdout
from hwnas.latency.lookup import table_space
from hwnas.latency.model import latency_model
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import DEVICES, RUNTIMES
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import MIN_ARCHS, PROFILE_NETS, format_report, noise_warnings

#: ``--rounds --min-time --warmup-time``: the measurement protocol (flag, type, default, help)
PROTOCOL_FLAGS = (
    ("--rounds", COUNT, Protocol.rounds, "Interleaved measurement rounds; each value is the median over rounds."),
    ("--min-time", FINITE, Protocol.min_s, "Seconds of timed runs per item and round (at least 20 runs)."),
    ("--warmup-time", FINITE, Protocol.warmup_s, "Seconds of warm-up per item (at least 10 runs)."),
)


def protocol_options(command):
    """The measurement protocol's options (``PROTOCOL_FLAGS``), shared by profile and validate."""
    options = (
        click.option(flag, type=kind, default=default, show_default=True, help=text)
        for flag, kind, default, text in PROTOCOL_FLAGS
    )
    return with_options(command, options)


allow_foreign_option = click.option(
    "--allow-foreign-table", is_flag=True, help="Use a table measured on another device/runtime/shape, with a warning."
)


def _show_warnings() -> None:
    """Foreign-table warnings reach the user as ``warning: ...`` lines on stderr."""
    warnings.simplefilter("always")
    warnings.showwarning = warning_line


@click.command()
@space_options()
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True, help="Where to measure.")
@click.option(
    "--runtime",
    "runtime_name",
    type=click.Choice(list(RUNTIMES)),
    help="Inference runtime to measure with [default: onnxruntime; executorch with --device android].",
)
@android_options
@click.option("--batch-size", type=COUNT, default=1, show_default=True)
@click.option(
    "--threads",
    type=COUNT0,
    default=1,
    show_default=True,
    help="CPU threads, pinned and recorded (0: the runtime's default). On shared machines 1 is the most repeatable.",
)
@precision_options()
@protocol_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Table file [default: ./latency_tables/<device>_<runtime>_t<threads>_b<batch>_<space>_r<res>_....json].",
)
@click.option(
    "--force", is_flag=True, help="Replace an existing table of another target (or an unreadable one) instead of refusing."
)
@click.option(
    "--calibration-nets",
    type=click.IntRange(2),
    default=PROFILE_NETS,
    show_default=True,
    help="Random whole nets timed after the ops (beside the fastest and slowest) to calibrate the table.",
)
@click.option(
    "--no-validate", is_flag=True, help="Skip the calibration: the table predicts raw sums until `hwnas tables validate`."
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def profile(
    space: str,
    space_overrides: dict,
    device: str,
    runtime_name: str | None,
    adb: str | None,
    serial: str | None,
    runner: str | None,
    batch_size: int,
    threads: int,
    precision: str | None,
    rounds: int,
    min_time: float,
    warmup_time: float,
    output: str | None,
    force: bool,
    calibration_nets: int,
    no_validate: bool,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Measure every candidate op of a space on this machine into a latency table (resumes an interrupted one).

    Then time a few whole nets and store the calibration that maps the table's sums onto them
    (unless --no-validate); a table calibrated before, with nothing measured now, keeps its calibration.
    """
    click.get_current_context().meta[RESUME_HINT] = "the same command again: the profile resumes from the saved table"
    result = api.profile(
        space,
        **space_overrides,
        device=device,
        runtime=runtime_name,
        adb=adb,
        serial=serial,
        runner=runner,
        batch_size=batch_size,
        threads=threads,
        precision=precision,
        rounds=rounds,
        min_time=min_time,
        warmup_time=warmup_time,
        output=output,
        force=force,
        calibration_nets=calibration_nets,
        no_validate=no_validate,
        progress=not no_progress,
    )
    report, table = result.calibration, result.table
    if as_json:
        echo_json(result.to_dict())
    else:
        what = "resumed" if result.resumed else "new"
        click.echo(
            f"{result.path}: {result.entries} entries ({what}; measured {result.measured} in "
            f"{result.measurements} measurements, {result.wall_s:.1f} s; {result.precision})"
        )
        if report is not None:
            held = report["calibrated"]
            click.echo(
                f"calibrated on {calibration_nets + 2} whole nets (the fastest, the slowest, {calibration_nets} random) in "
                f"{report['wall_s']:.1f} s: {api.calibration_line(table)}; leave-one-out error MAPE {held['mape']:.1%}, "
                f"p90 {held['p90_relative_error']:.1%}"
            )
        elif table.calibration is None:
            click.echo(f"not calibrated (--no-validate): predictions are raw sums until hwnas tables validate {result.path}")
        else:
            click.echo(f"calibration kept: {api.calibration_line(table)}")
    echo_warnings(*result.warnings, *(noise_warnings(report) if report else []))


@click.group()
def tables() -> None:
    """Validate and inspect latency tables."""


@tables.command()
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False))
@click.option(
    "--n",
    "n_archs",
    type=click.IntRange(MIN_ARCHS),
    default=30,
    show_default=True,
    help="Random archs measured end to end (half fit the calibration, half test it).",
)
@protocol_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random archs.")
@precision_options(default="the table's")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw predicted vs measured into this PNG.")
@click.option("--force", is_flag=True, help="Overwrite --plot if it exists.")
@allow_foreign_option
@android_options
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def validate(
    table_path: str,
    n_archs: int,
    rounds: int,
    min_time: float,
    warmup_time: float,
    seed: int,
    precision: str | None,
    plot: str | None,
    force: bool,
    allow_foreign_table: bool,
    adb: str | None,
    serial: str | None,
    runner: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Measure N random archs end to end, score the table's predictions, store the calibration in it.

    The nets are measured at the table's precision (an INT8 table: each net quantized as its entries
    were); --precision, where given, must be the table's.
    """
    _show_warnings()
    result = api.validate(
        table_path,
        n=n_archs,
        rounds=rounds,
        min_time=min_time,
        warmup_time=warmup_time,
        seed=seed,
        precision=precision,
        plot=plot,
        force=force,
        allow_foreign_table=allow_foreign_table,
        progress=not no_progress,
        adb=adb,
        serial=serial,
        runner=runner,
    )
    if as_json:
        echo_json({**result.summary, "replaced": result.replaced})
    else:
        click.echo(format_report(result.report))
        click.echo(f"calibration stored in {table_path}: {api.calibration_line(result.table)}")
        if result.replaced:
            click.echo(f"it replaces: {result.replaced}")
    echo_warnings(*result.warnings)


@tables.command()
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False))
@json_option
def show(table_path: str, as_json: bool) -> None:
    """Print a table's meta, entry count and the fastest / slowest latency of its space."""
    info = api.show_table(table_path)
    table, fastest_ms, slowest_ms = info.table, info.fastest_ms, info.slowest_ms
    if as_json:
        partly = partly_delegated(table.entries)
        shown = {"meta": table.meta, "entries": len(table.entries), "fastest_ms": fastest_ms, "slowest_ms": slowest_ms}
        echo_json({**shown, "partly_delegated": partly})
        return
    meta = table.meta
    click.echo(
        f"{table_path}\n  {meta['space']} {meta['space_args']}\n  {meta.get('device_name')} ({meta['device']}), "
        f"{meta['runtime']} {meta.get('runtime_version', '')}, {meta.get('threads')} thread(s), batch {meta['batch_size']}, "
        f"{meta.get('dtype')}"
    )
    click.echo(
        f"  {len(table.entries)} entries; fastest {fastest_ms:.3f} ms, slowest {slowest_ms:.3f} ms"
        f"{'' if table.calibration else ' (not calibrated: run hwnas tables validate)'}"
    )
    if table.p90_relative_error is not None:
        click.echo(f"  validated: held-out p90 relative error {table.p90_relative_error:.1%}")
    for warning in meta.get("warnings", []):
        click.echo(f"  measured with warning: {warning}")
    for warning in delegation_warnings(table.entries):
        click.echo(f"  {warning}")


@click.command()
@click.argument("arch_source", metavar="[ARCH]", required=False)
@click.option("--table", "table_path", required=True, type=click.Path(dir_okay=False), help="Latency table.")
@click.option(
    "--archs",
    "archs_path",
    type=click.Path(dir_okay=False),
    help="Predict many archs: a file with one arch per line (compact form, or the space's own choices form).",
)
@space_file_option
@json_option
def predict(arch_source: str | None, table_path: str, archs_path: str | None, space_file: str | None, as_json: bool) -> None:
    """Predicted latency of one arch, or of every arch in --archs (through the table's whole-net model where it has one)."""
    if (arch_source is None) == (archs_path is None):
        raise HwnasError("give either one ARCH or --archs FILE")
    if archs_path is not None:
        table = LatencyTable.load(table_path)
        space = table_space(table)
        model = latency_model(table, space)

        try:
            lines = [line for line in Path(archs_path).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise HwnasError(f"cannot read --archs {archs_path}: {error}") from None
        archs = []
        for number, line in enumerate(lines, start=1):
            try:
                archs.append(parse_arch(line, space))
            except HwnasError as error:
                raise HwnasError(f"--archs {archs_path} line {number}: {error}") from None
        if hasattr(model, "predict_choices"):
            values = [float(v) for v in model.predict_choices(archs)]
        else:
            values = [model.predict(Arch.of(space, choices)) for choices in archs]
        compact = [Arch.of(space, choices).to_compact() for choices in archs]
        if as_json:
            calibrated = table.calibration is not None
            echo_json([{"arch": a, "latency_ms": v, "calibrated": calibrated} for a, v in zip(compact, values)])
        else:
            for a, v in zip(compact, values):
                click.echo(f"{v:.4f}\t{a}")
        return
    result = api.predict(arch_source, table=table_path, space=space_file)
    if as_json:
        echo_json({"latency_ms": result.latency_ms, "calibrated": result.calibrated})
        return
    how = (
        ("whole-net model" if result.table.whole_net else "calibrated")
        if result.calibrated
        else f"a raw sum of the table's entries: not calibrated, run hwnas tables validate {table_path}"
    )
    meta = result.table.meta
    click.echo(f"{result.latency_ms:.3f} ms ({meta['runtime']} on {meta.get('device_name')}; {how})")


@tables.command()
@click.argument("table_path", metavar="[TABLE]", required=False, type=click.Path(dir_okay=False))
@click.option("--timings", required=True, type=click.Path(dir_okay=False), help="CSV 'arch,ms': whole nets timed on the target.")
@space_options()
@click.option(
    "--prior",
    "priors",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A fitted table of another device (repeat, or list several after one --prior): the prior of a new table.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the table here [default: TABLE, in place].")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@json_option
def fit(
    table_path: str | None,
    timings: str,
    space: str,
    space_overrides: dict,
    priors: tuple[str, ...],
    output: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Fit a whole-net latency model from timed nets: into TABLE, or a new table (-o) for a device timed only whole."""

    if table_path is None and output is None:
        raise HwnasError("give a TABLE to fit, or --space ... -o NEW.json for a new table")
    if table_path is not None and priors:
        raise HwnasError("--prior builds a new table: give --space and -o instead of TABLE")
    target = Path(output or table_path)
    if output is not None:
        refuse_overwrite(output, force or output == table_path)
        check_writable(output)
    if table_path is not None:
        table = LatencyTable.load(table_path)
        chosen = table_space(table)
        archs, ms = read_timings(timings, chosen)
        report = score_holdout(table, chosen, archs, ms)
        fit_into(table, chosen, archs, ms)
    else:
        chosen = build_space(space, space_overrides)
        archs, ms = read_timings(timings, chosen)
        loaded = [LatencyTable.load(path) for path in priors]
        table = fit_table(chosen, archs, ms, loaded)
        report = {"n": len(ms), "priors": len(loaded)}
    table.save(target)
    result = {"table": str(target), "space": chosen.name, "kind": table.whole_net["kind"], **report}
    if as_json:
        echo_json(result)
        return
    click.echo(f"{target}: whole-net model ({result['kind']}) fitted on {len(ms)} timed nets of {chosen.name}")
    if "holdout" in report:
        for name, scores in report["holdout"].items():
            click.echo(
                f"  held out {report['held_out']}: {name:6s} within 10 % {scores['within_10']:.1%}, "
                f"MAPE {scores['mape']:.1%}, Spearman {scores['spearman']:.3f}"
            )


def register_latency_commands(group: click.Group) -> None:
    """Add ``profile``, ``tables`` and ``predict`` to the ``hwnas`` group."""
    for command in (profile, tables, predict):
        group.add_command(command)
