"""Options shared by several commands, defined once so they read and behave the same everywhere."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from click.shell_completion import CompletionItem

from hwnas.data import DATA_SETS
from hwnas.latency.precision import PRECISIONS, resolve_precision
from hwnas.spaces import SPACES, Space, get_space


def with_options(command: Callable, options: Iterable[Callable]) -> Callable:
    """``command`` decorated with ``options`` (click.option decorators), which --help lists in the order given."""
    for option in reversed(list(options)):
        command = option(command)
    return command


class FiniteFloat(click.ParamType):
    """A number option that refuses nan and inf (click's float takes both), so the error names the flag."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: ``click.Context.meta`` key of a command's hint for Ctrl-C: a string, or a callable giving one (or None), naming
#: the command that continues the interrupted work (``hwnas.cli.main``)
RESUME_HINT = "hwnas.resume_hint"
#: the hwnas package's folder: warnings raised from files below it are hwnas's own
PACKAGE_DIR = Path(__file__).resolve().parents[1]

#: every float option of the CLI
FINITE = FiniteFloat()
#: counts that must be at least 1 (epochs, batches, rounds, ...) and at least 0 (worker processes, threads where 0 means the default)
COUNT, COUNT0 = click.IntRange(min=1), click.IntRange(min=0)


class SpaceName(click.ParamType):
    """A built-in space's name or a space file's path (``FILE.toml``); either is checked where the space is built,
    so a bad space file is an ``error:`` line naming the file, the field and the fix."""

    name = "space"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join([*SPACES, "FILE.toml"]) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
        return [CompletionItem(name) for name in SPACES if name.startswith(incomplete)]


SPACE = SpaceName()

#: ``--space FILE.toml`` on the commands that read an arch: the space file an arch of a user's space belongs to
space_file_option = click.option(
    "--space",
    "space_file",
    type=click.Path(dir_okay=False),
    help="The space file (FILE.toml) of the arch's space, where it is not a built-in space.",
)


def space_options(with_space_name: bool = True, shape_from_data: bool = False) -> Callable:
    """``--space`` (optional) plus ``--resolution --num-classes --in-channels --width-mult``.

    The decorated command receives ``space_overrides``: only the options the user gave, so a
    command that also reads an arch can let them override the arch's own space args. With
    ``shape_from_data`` the help says that the command fills the input shape and classes from ``--data``.
    """

    def default(value: str) -> str:
        return f"[default: from --data, else {value}]" if shape_from_data else f"[default: {value}]"

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, resolution, num_classes, in_channels, width_mult, **kwargs: Any) -> Any:
            given = {"resolution": resolution, "num_classes": num_classes, "in_channels": in_channels, "width_mult": width_mult}
            kwargs["space_overrides"] = {k: v for k, v in given.items() if v is not None}
            return command(*args, **kwargs)

        options = [
            click.option("--resolution", type=int, help=f"Input height and width in pixels {default('224')}."),
            click.option("--num-classes", type=int, help=f"Classes of the final linear layer {default('1000')}."),
            click.option("--in-channels", type=int, help=f"Input image channels {default('3')}."),
            click.option(
                "--width-mult", type=FINITE, help="Channel multiplier, channels rounded to multiples of 8 [default: 1.0]."
            ),
        ]
        if with_space_name:
            options.insert(
                0,
                click.option(
                    "--space",
                    type=SPACE,
                    default="proxyless",
                    show_default=True,
                    help="Search space: a built-in name or a space file (FILE.toml, see docs/space_files.md).",
                ),
            )
        return with_options(wrapper, options)

    return decorate


def build_space(name: str, overrides: dict[str, Any]) -> Space:
    return get_space(name, **overrides)


def precision_options(default: str = "fp32") -> Callable:
    """``--precision fp32|fp16|int8`` and ``--fp16`` (its older spelling, kept as an alias).

    The command receives ``precision``: the name given, or None where neither flag was (``default``
    only names in the help what the command then uses).
    """

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, precision: str | None, fp16: bool, **kwargs: Any) -> Any:
            kwargs["precision"] = resolve_precision(precision, fp16) if precision or fp16 else None
            return command(*args, **kwargs)

        names = "; ".join(f"{p.name}: {p.help}" for p in PRECISIONS.values())
        wrapper = click.option("--fp16", is_flag=True, help="Same as --precision fp16.")(wrapper)
        return click.option(
            "--precision", type=click.Choice(list(PRECISIONS)), help=f"Numeric precision ({names}) [default: {default}]."
        )(wrapper)

    return decorate


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")


def echo_json(data: Any) -> None:
    """``data`` as JSON on stdout; a NaN or infinite float (not JSON) is written as null."""
    click.echo(json.dumps(_finite(data), indent=2, allow_nan=False))


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


def echo_warnings(*messages: str | None) -> None:
    """``warning: ...`` lines on stderr (stdout stays clean for ``--json``); None is skipped."""
    for message in messages:
        if message:
            click.echo(f"warning: {message}", err=True)


#: what a library says to its own developers (a deprecated call inside it, an API it marks experimental): nothing a user can act on
_LIBRARY_NOTICES = (DeprecationWarning, PendingDeprecationWarning)


def warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as one ``warning: ...`` line on stderr: hwnas's, and its libraries' unless meant for their developers."""
    ours = Path(filename).resolve().is_relative_to(PACKAGE_DIR)
    if not ours and (issubclass(category, _LIBRARY_NOTICES) or category.__name__ == "ExperimentalWarning"):
        return
    echo_warnings(" ".join(str(message).split()))


data_option = click.option(
    "--data",
    default="digits",
    show_default=True,
    help=f"Data set: {', '.join(d.spec for d in DATA_SETS.values())} (digits is embedded: nothing to download).",
)


def given_options(ctx: click.Context, keep: set[str]) -> list[str]:
    """The flags typed on the command line (not left at their defaults), except the parameters named in ``keep``."""
    return [
        param.opts[0]
        for param in ctx.command.params
        if param.name not in keep and ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE
    ]
