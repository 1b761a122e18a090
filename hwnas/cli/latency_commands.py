"""``hwnas profile``, ``hwnas tables validate|show``, ``hwnas predict``: build, check and use latency tables."""

from __future__ import annotations

import warnings

import click

from hwnas import api
from hwnas.cli.options import (
    COUNT,
    COUNT0,
    FINITE,
    echo_json,
    echo_warnings,
    json_option,
    precision_options,
    space_file_option,
    space_options,
)
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import DEVICES, RUNTIMES
from hwnas.latency.validate import MIN_ARCHS, PROFILE_NETS, format_report, noise_warnings


def protocol_options(command):
    """``--rounds --min-time --warmup-time``: the measurement protocol, shared by profile and validate."""
    options = [
        click.option(
            "--rounds",
            type=COUNT,
            default=Protocol.rounds,
            show_default=True,
            help="Interleaved measurement rounds; each value is the median over rounds.",
        ),
        click.option(
            "--min-time",
            type=FINITE,
            default=Protocol.min_s,
            show_default=True,
            help="Seconds of timed runs per item and round (at least 20 runs).",
        ),
        click.option(
            "--warmup-time",
            type=FINITE,
            default=Protocol.warmup_s,
            show_default=True,
            help="Seconds of warm-up per item (at least 10 runs).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


allow_foreign_option = click.option(
    "--allow-foreign-table", is_flag=True, help="Use a table measured on another device/runtime/shape, with a warning."
)


def _show_warnings() -> None:
    """Foreign-table warnings reach the user as ``warning: ...`` lines on stderr."""
    warnings.simplefilter("always")
    warnings.showwarning = lambda message, *args, **kwargs: echo_warnings(str(message))


@click.command()
@space_options()
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True, help="Where to measure.")
@click.option(
    "--runtime",
    "runtime_name",
    type=click.Choice(list(RUNTIMES)),
    default="onnxruntime",
    show_default=True,
    help="Inference runtime to measure with.",
)
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
    runtime_name: str,
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
    result = api.profile(
        space,
        **space_overrides,
        device=device,
        runtime=runtime_name,
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
        echo_json({"meta": table.meta, "entries": len(table.entries), "fastest_ms": fastest_ms, "slowest_ms": slowest_ms})
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


@click.command()
@click.argument("arch_source", metavar="ARCH")
@click.option("--table", "table_path", required=True, type=click.Path(dir_okay=False), help="Latency table.")
@space_file_option
@json_option
def predict(arch_source: str, table_path: str, space_file: str | None, as_json: bool) -> None:
    """Predicted latency of one arch (calibrated where the table has been validated)."""
    result = api.predict(arch_source, table=table_path, space=space_file)
    if as_json:
        echo_json({"latency_ms": result.latency_ms, "calibrated": result.calibrated})
        return
    how = (
        "calibrated"
        if result.calibrated
        else f"a raw sum of the table's entries: not calibrated, run hwnas tables validate {table_path}"
    )
    meta = result.table.meta
    click.echo(f"{result.latency_ms:.3f} ms ({meta['runtime']} on {meta.get('device_name')}; {how})")


def register_latency_commands(group: click.Group) -> None:
    """Add ``profile``, ``tables`` and ``predict`` to the ``hwnas`` group."""
    for command in (profile, tables, predict):
        group.add_command(command)
