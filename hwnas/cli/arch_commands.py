"""``hwnas arch sample|show|flops``: make and inspect architectures."""

from __future__ import annotations

import dataclasses

import click

from hwnas.arch import Arch, load_arch
from hwnas.cli.options import build_space, echo_json, json_option, space_options
from hwnas.files import refuse_overwrite


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
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same arch).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the arch JSON to this file.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@json_option
def sample(space: str, space_overrides: dict, seed: int | None, output: str | None, force: bool, as_json: bool) -> None:
    """Draw a uniformly random architecture."""
    drawn = Arch.random(build_space(space, space_overrides), seed)
    if output:
        refuse_overwrite(output, force)
        drawn.save(output)
    click.echo(drawn.to_json() if as_json else drawn.to_compact())


@arch.command()
@click.argument("arch_source", metavar="ARCH")
@space_options(with_space_name=False)
@json_option
def show(arch_source: str, space_overrides: dict, as_json: bool) -> None:
    """Show an architecture layer by layer with the cost of each chosen op."""
    chosen = _arch_with_overrides(arch_source, space_overrides)
    space = chosen.build_space()
    rows = []
    for layer, op in zip(space.layers, chosen.choices):
        cost = space.op_cost(layer.index, op)
        rows.append({"index": layer.index, "op": op, "input_shape": [layer.c_in, layer.h, layer.w], "c_out": layer.c_out,
                     "stride": layer.stride, "flops": cost.flops, "params": cost.params})
    total = space.cost(chosen)
    if as_json:
        echo_json({**chosen.to_dict(), "compact": chosen.to_compact(), "layers": rows, "flops": total.flops, "params": total.params})
        return
    click.echo(chosen.to_compact())
    click.echo(f"{'layer':>5}  {'op':<10} {'input (C,H,W)':<16} {'C_out':>5} {'stride':>6} {'MFLOPs':>9} {'params':>9}")
    for row in rows:
        shape = "({},{},{})".format(*row["input_shape"])
        click.echo(f"{row['index']:>5}  {row['op']:<10} {shape:<16} {row['c_out']:>5} {row['stride']:>6} "
                   f"{row['flops'] / 1e6:>9.2f} {row['params']:>9,}")
    click.echo(f"total: {total.flops / 1e6:.1f} MFLOPs (multiply-adds), {total.params / 1e6:.3f} M params")


@arch.command()
@click.argument("arch_source", metavar="ARCH")
@space_options(with_space_name=False)
@json_option
def flops(arch_source: str, space_overrides: dict, as_json: bool) -> None:
    """FLOPs (multiply-adds, one sample) and parameters of an architecture's child net."""
    chosen = _arch_with_overrides(arch_source, space_overrides)
    total = chosen.build_space().cost(chosen)
    if as_json:
        echo_json({"flops": total.flops, "params": total.params})
    else:
        click.echo(f"{total.flops / 1e6:.1f} MFLOPs (multiply-adds), {total.params / 1e6:.3f} M params")
