"""``hwnas arch sample|show|flops``: make and inspect architectures."""

from __future__ import annotations

import dataclasses
import random

import click

from hwnas import api
from hwnas.arch import Arch, load_arch
from hwnas.cli.options import (
    COUNT,
    FINITE,
    build_space,
    echo_json,
    echo_warnings,
    json_option,
    space_file_option,
    space_options,
)
from hwnas.errors import HwnasError
from hwnas.files import check_writable, refuse_overwrite
from hwnas.latency import LatencyModel, LatencyTable, latency_model
from hwnas.latency.lookup import table_space
from hwnas.search.budget import make_target, parse_latency
from hwnas.search.random_archs import band_sampler
from hwnas.spaces import DagSpace, user_space_file


def _arch_with_overrides(source: str, overrides: dict) -> Arch:
    """The arch read from ``source``; space options given on the command line replace its own."""
    arch = load_arch(source)
    if overrides:
        arch = dataclasses.replace(arch, space_args={**arch.space_args, **overrides}).validated()
    return arch


@click.group()
def arch() -> None:
    """Sample, show and count architectures (ARCH is a JSON file or a compact string)."""


@arch.command()
@space_options()
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same archs).")
@click.option("-n", "count", type=COUNT, default=1, show_default=True, help="How many archs (distinct ones within a --band).")
@click.option(
    "--table", type=click.Path(dir_okay=False), help="Latency table: draw within a latency band; the space is the table's."
)
@click.option(
    "--latency",
    help="Budget the band is relative to (with --table), e.g. 1ms; the aim is budget x (1 - margin) as in hwnas search.",
)
@click.option("--margin", type=FINITE, help="Aim at budget x (1 - margin) [the table's validated p90 error, else 0.05].")
@click.option(
    "--band",
    nargs=2,
    type=FINITE,
    default=(0.9, 1.0),
    show_default=True,
    metavar="LO HI",
    help="Keep the archs whose predicted latency lies in [LO, HI] x aim.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the arch JSON to this file (one arch).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@json_option
def sample(
    space: str,
    space_overrides: dict,
    seed: int | None,
    count: int,
    table: str | None,
    latency: str | None,
    margin: float | None,
    band: tuple[float, float],
    output: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Draw uniformly random architectures: from the whole space, or (--table --latency) from those within a latency band.

    Within a band the draw is uniform over the archs whose predicted latency lies in it, the
    distribution that rejecting uniform draws outside it would give, but it reaches every band.
    """
    if count < 1:
        raise HwnasError(f"-n must be at least 1, got {count}")
    if output and count != 1:
        raise HwnasError("-o writes one arch: leave out -n, or use --json for several")
    if output:
        refuse_overwrite(output, force)
        check_writable(output)
    if (table is None) != (latency is None):
        raise HwnasError("--table and --latency go together: the band is a share of the aim under --latency")
    if table is None:
        built = build_space(space, space_overrides)
        drawn = [Arch.random(built, None if seed is None else seed + i) for i in range(count)]
        predicted: list[float | None] = [None] * count
    else:
        given = click.get_current_context().get_parameter_source("space") != click.core.ParameterSource.DEFAULT
        model = _table_model(table, space if given else None, space_overrides)
        target = make_target(
            parse_latency(latency), model.fastest()[1], model.slowest()[1], margin, model.table.p90_relative_error
        )
        low, high = band
        if not 0 < low <= high:
            raise HwnasError(f"--band needs 0 < LO <= HI, got {low} {high}")
        echo_warnings(target.clamp_note())
        sampler = band_sampler(model, low * target.aim_ms, high * target.aim_ms)
        drawn = sampler.sample(count, seed if seed is not None else random.randrange(2**63))
        predicted = [model.predict(a) for a in drawn]
    if output:
        drawn[0].save(output)
    if as_json:
        if count == 1 and table is None:
            click.echo(drawn[0].to_json())
        else:
            echo_json([{**a.to_dict(), "compact": a.to_compact(), "predicted_ms": ms} for a, ms in zip(drawn, predicted)])
        return
    for a, ms in zip(drawn, predicted):
        click.echo(a.to_compact() if ms is None else f"{ms:.4g} ms  {a.to_compact()}")


def _table_model(table_path: str, space: str | None, overrides: dict) -> LatencyModel:
    """The latency model of the table's own space; a --space or space option that contradicts the table is refused."""
    table = LatencyTable.load(table_path)
    if "space" not in table.meta or "space_args" not in table.meta:
        raise HwnasError(f"latency table {table_path} does not say which space it measured (meta 'space', 'space_args')")
    measured = table_space(table)  # a table of a space file brings the file's copy
    built = build_space(measured.name, {**table.meta["space_args"], **overrides})
    given = build_space(space, overrides) if space is not None else built
    given_file, table_hash = user_space_file(given), table.meta.get("space_sha256")
    if given_file is not None and given_file.sha256 != table_hash:
        raise HwnasError(
            f"--table {table_path} measured space {table.meta['space']} (sha256 {table_hash}), not the space file "
            f"{given_file.source} (sha256 {given_file.sha256})"
        )
    if given.name != built.name or built.args.to_dict() != table.meta["space_args"]:
        raise HwnasError(
            f"--table {table_path} measured space {table.meta['space']} {table.meta['space_args']}, "
            f"not {given.name} {built.args.to_dict()}"
        )
    return latency_model(table, built)


@arch.command()
@click.argument("arch_source", metavar="ARCH")
@space_file_option
@space_options(with_space_name=False)
@json_option
def show(arch_source: str, space_file: str | None, space_overrides: dict, as_json: bool) -> None:
    """Show an architecture layer by layer with the cost of each chosen op."""
    api.read_space(space_file)
    chosen = _arch_with_overrides(arch_source, space_overrides)
    space = chosen.build_space()
    rows = []
    for layer, op in zip(space.layers, chosen.choices):
        if isinstance(space, DagSpace):  # a block: its edge mask, shown as live ops and kept edges
            kept = space.graph.canonical(space.graph.decode(op))
            op = f"{len(space.graph.live_ops(kept))}ops/{sum(kept)}e"
            cost = space.block_cost(layer.index, kept)
        else:
            cost = space.op_cost(layer.index, op)
        rows.append(
            {
                "index": layer.index,
                "op": op,
                "input_shape": [layer.c_in, layer.h, layer.w],
                "c_out": layer.c_out,
                "stride": layer.stride,
                "flops": cost.flops,
                "params": cost.params,
            }
        )
    total = space.cost(chosen.choices)
    if as_json:
        echo_json(
            {**chosen.to_dict(), "compact": chosen.to_compact(), "layers": rows, "flops": total.flops, "params": total.params}
        )
        return
    click.echo(chosen.to_compact())
    click.echo(f"{'layer':>5}  {'op':<10} {'input (C,H,W)':<16} {'C_out':>5} {'stride':>6} {'MFLOPs':>9} {'params':>9}")
    for row in rows:
        shape = "({},{},{})".format(*row["input_shape"])
        click.echo(
            f"{row['index']:>5}  {row['op']:<10} {shape:<16} {row['c_out']:>5} {row['stride']:>6} "
            f"{row['flops'] / 1e6:>9.2f} {row['params']:>9,}"
        )
    click.echo(f"total: {total.flops / 1e6:.1f} MFLOPs (multiply-adds), {total.params / 1e6:.3f} M params")


@arch.command()
@click.argument("arch_source", metavar="ARCH")
@space_file_option
@space_options(with_space_name=False)
@json_option
def flops(arch_source: str, space_file: str | None, space_overrides: dict, as_json: bool) -> None:
    """FLOPs (multiply-adds, one sample) and parameters of an architecture's child net."""
    api.read_space(space_file)
    chosen = _arch_with_overrides(arch_source, space_overrides)
    total = chosen.build_space().cost(chosen.choices)
    if as_json:
        echo_json({"flops": total.flops, "params": total.params})
    else:
        click.echo(f"{total.flops / 1e6:.1f} MFLOPs (multiply-adds), {total.params / 1e6:.3f} M params")
