"""``hwnas profile``, ``hwnas tables validate|show``, ``hwnas predict``: build, check and use latency tables."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from hwnas.arch import load_arch
from hwnas.cli.options import (
    COUNT,
    COUNT0,
    FINITE,
    build_space,
    echo_json,
    echo_warnings,
    json_option,
    precision_options,
    space_options,
)
from hwnas.errors import HwnasError
from hwnas.files import check_writable, refuse_overwrite
from hwnas.latency.lookup import default_table_path, expected_meta
from hwnas.latency.model import calibration_formula, latency_model
from hwnas.latency.precision import precision_of_dtype
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import DEVICES, RUNTIMES
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import PROFILE_NETS, calibrate_profiled, noise_warnings, summary
from hwnas.spaces import Space, get_space


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


def _protocol(rounds: int, min_time: float, warmup_time: float) -> Protocol:
    return Protocol(warmup_s=warmup_time, min_s=min_time, rounds=rounds)


allow_foreign_option = click.option(
    "--allow-foreign-table", is_flag=True, help="Use a table measured on another device/runtime/shape, with a warning."
)


def _threads(value: int) -> int | None:
    """``--threads 0`` means the runtime's own default (recorded as null)."""
    return None if value == 0 else value


def _runtime(name: str, device: str, threads: int | None, precision: str, protocol: Protocol):
    from hwnas.latency.runtimes import get_runtime

    return get_runtime(name, device=device, threads=threads, precision=precision, protocol=protocol)


def _table_space(table: LatencyTable) -> Space:
    return get_space(table.meta["space"], **table.meta["space_args"])


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
    from hwnas.latency.profiler import profile_space

    chosen = build_space(space, space_overrides)
    runtime = _runtime(runtime_name, device, _threads(threads), precision or "fp32", _protocol(rounds, min_time, warmup_time))
    path = (
        Path(output)
        if output
        else default_table_path(chosen, device, runtime_name, runtime.threads, batch_size, runtime.precision)
    )
    check_writable(path)
    result = profile_space(chosen, runtime, path, batch_size, force=force, progress=not no_progress)
    table = LatencyTable.load(path)
    report = None
    if not no_validate and (table.calibration is None or result.measured):
        report = calibrate_profiled(table, chosen, runtime, calibration_nets, progress=not no_progress)
    if as_json:
        calibration = None if report is None else {**summary(report), "wall_s": report["wall_s"]}
        echo_json({**result.to_dict(), "calibration": calibration, "calibrated": table.calibration is not None})
    else:
        what = "resumed" if result.resumed else "new"
        click.echo(
            f"{result.table}: {result.entries} entries ({what}; measured {result.measured} in "
            f"{result.measurements} measurements, {result.wall_s:.1f} s; {runtime.precision})"
        )
        if report is not None:
            held = report["calibrated"]
            click.echo(
                f"calibrated on {calibration_nets + 2} whole nets (the fastest, the slowest, {calibration_nets} random) in "
                f"{report['wall_s']:.1f} s: {_calibration_line(table)}; leave-one-out error MAPE {held['mape']:.1%}, "
                f"p90 {held['p90_relative_error']:.1%}"
            )
        elif table.calibration is None:
            click.echo(f"not calibrated (--no-validate): predictions are raw sums until hwnas tables validate {path}")
        else:
            click.echo(f"calibration kept: {_calibration_line(table)}")
    echo_warnings(*result.warnings, *(noise_warnings(report) if report else []))


@click.group()
def tables() -> None:
    """Validate and inspect latency tables."""


@tables.command()
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False))
@click.option("--n", "n_archs", type=COUNT, default=30, show_default=True, help="Random archs measured end to end.")
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
    from hwnas.latency.validate import format_report, plot_validation, store_validation, validate_table

    _show_warnings()
    if plot:
        refuse_overwrite(plot, force)
        check_writable(plot)
    table = LatencyTable.load(table_path)
    meta = table.meta
    space = _table_space(table)
    table_precision = precision_of_dtype(meta.get("dtype"))
    table.check_matches(
        expected_meta(meta["device"], meta["runtime"], meta["batch_size"], precision or table_precision, space),
        allow_foreign_table,
    )
    runtime = _runtime(
        meta["runtime"], meta["device"], meta.get("threads"), table_precision, _protocol(rounds, min_time, warmup_time)
    )
    report = validate_table(table, space, runtime, n_archs, seed, progress=not no_progress)
    replaced = _calibration_line(table)
    store_validation(table, report)
    try:
        table.save()
    except OSError as error:  # e.g. a shipped table inside a read-only site-packages
        raise HwnasError(
            f"cannot store the calibration in {table_path}: {error}; copy the table to ./latency_tables/ and validate the copy"
        ) from None
    if plot:
        plot_validation(report, plot, f"{Path(table_path).name}\n{meta.get('device_name')}, {meta['runtime']}")
    if as_json:
        echo_json({**summary(report), "replaced": replaced})
    else:
        click.echo(format_report(report))
        click.echo(f"calibration stored in {table_path}: {_calibration_line(table)}")
        if replaced:
            click.echo(f"it replaces: {replaced}")
    echo_warnings(*report["warnings"])


def _calibration_line(table: LatencyTable) -> str | None:
    """The table's calibration in words, with when it was fitted and how noisy the machine was then."""
    fit = table.calibration
    if not fit:
        return None
    floor = (table.validation or {}).get("noise_floor", {}).get("mape")
    noise = f", noise floor {floor:.1%}" if floor is not None else ""
    return f"{calibration_formula(fit)} [{fit.get('fit', 'fit')}], fitted {fit.get('fitted', '?')}{noise}"


@tables.command()
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False))
@json_option
def show(table_path: str, as_json: bool) -> None:
    """Print a table's meta, entry count and the fastest / slowest latency of its space."""
    table = LatencyTable.load(table_path)
    model = latency_model(table, _table_space(table))
    fastest, fastest_ms = model.fastest()
    slowest, slowest_ms = model.slowest()
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
@json_option
def predict(arch_source: str, table_path: str, as_json: bool) -> None:
    """Predicted latency of one arch (calibrated where the table has been validated)."""
    arch = load_arch(arch_source)
    table = LatencyTable.load(table_path)
    space = _table_space(table)
    if arch.space != space.name or arch.build_space().args != space.args:
        raise HwnasError(
            f"arch is for {arch.space} {arch.space_args}, table {table_path} for {space.name} {space.args.to_dict()}"
        )
    latency_ms = latency_model(table, space).predict(arch)
    calibrated = table.calibration is not None
    if as_json:
        echo_json({"latency_ms": latency_ms, "calibrated": calibrated})
        return
    how = (
        "calibrated"
        if calibrated
        else f"a raw sum of the table's entries: not calibrated, run hwnas tables validate {table_path}"
    )
    click.echo(f"{latency_ms:.3f} ms ({table.meta['runtime']} on {table.meta.get('device_name')}; {how})")


def register_latency_commands(group: click.Group) -> None:
    """Add ``profile``, ``tables`` and ``predict`` to the ``hwnas`` group."""
    for command in (profile, tables, predict):
        group.add_command(command)
