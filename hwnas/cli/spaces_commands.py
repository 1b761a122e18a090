"""``hwnas spaces [NAME | FILE.toml]``: what spaces exist and what each layer looks like."""

from __future__ import annotations

import click

from hwnas.cli.options import SPACE, echo_json, json_option, space_options
from hwnas.spaces import SPACES, DagSpace, get_space, user_space_file


@click.command()
@click.argument("name", required=False, type=SPACE)
@space_options(with_space_name=False)
@json_option
def spaces(name: str | None, space_overrides: dict, as_json: bool) -> None:
    """List the search spaces, or show one space (a built-in name or a space file) layer by layer."""
    if name is None:
        listing = [
            {"space": key, "layers": len(get_space(key, **space_overrides).layers), "description": cls.description}
            for key, cls in SPACES.items()
        ]
        if as_json:
            echo_json(listing)
            return
        for row in listing:
            click.echo(f"{row['space']:<18} {row['layers']:>3} layers  {row['description']}")
        return
    space = get_space(name, **space_overrides)
    info = space.describe()
    source = user_space_file(space)
    if source is not None:
        info["space_file"] = {"path": source.source, "sha256": source.sha256}
    if as_json:
        echo_json(info)
        return
    click.echo(f"{space.name}: {space.description}")
    if source is not None:
        click.echo(f"space file: {source.source} (sha256 {source.sha256})")
    click.echo("space args: " + ", ".join(f"{k}={v}" for k, v in info["space_args"].items()))
    click.echo(f"stem: input {tuple(space.input_shape)} -> {space.stem_out_channels} channels")
    click.echo(f"{'layer':>5}  {'input (C,H,W)':<16} {'C_out':>5} {'stride':>6}  candidates")
    for layer in space.layers:
        shape = f"({layer.c_in},{layer.h},{layer.w})"
        click.echo(f"{layer.index:>5}  {shape:<16} {layer.c_out:>5} {layer.stride:>6}  {' '.join(layer.candidates)}")
    click.echo(f"head: input {tuple(space.head_in_shape)} -> {space.args.num_classes} classes")
    if isinstance(space, DagSpace):
        graph = space.graph
        click.echo(
            f"each block: {graph.levels} levels x {graph.width} ops, {len(graph.edges)} searchable edges; "
            "an arch keeps a set of edges per block"
        )
    click.echo(f"{space.count_archs():.3g} architectures")
