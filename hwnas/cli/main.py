"""Entry point: the ``hwnas`` group, its version flag, and one place that turns errors into messages."""

from __future__ import annotations

import sys

import click

from hwnas import __version__
from hwnas.cli import arch_commands, export_commands, search_commands, spaces_commands, train_commands
from hwnas.cli.latency_commands import register_latency_commands
from hwnas.errors import HwnasError
from hwnas.files import os_reason

#: exit code of a command that stopped on bad input or a missing resource (click uses 2 for usage errors too)
EXIT_ERROR = 2


class ErrorReportingGroup(click.Group):
    """A group that prints ``HwnasError`` as ``error: ...`` without a traceback and exits non-zero.

    An ``OSError`` that names a file (an output folder that is a file, or not writable, a full
    disk) is reported the same way, with the path and the system's reason.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HwnasError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_ERROR)
        except OSError as error:
            if error.filename is None:
                raise
            if isinstance(error, (FileExistsError, NotADirectoryError)):
                reason = "a file is in the way where a folder must be"
            else:
                reason = os_reason(error)
            click.echo(f"error: {error.filename}: {reason}", err=True)
            sys.exit(EXIT_ERROR)


@click.group(cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwnas")
def cli() -> None:
    """Hardware-aware NAS: profile ops on your target, search under a latency budget, export and verify."""


def _register() -> None:

    cli.add_command(spaces_commands.spaces)
    cli.add_command(arch_commands.arch)
    register_latency_commands(cli)
    cli.add_command(search_commands.search)
    cli.add_command(export_commands.export)
    cli.add_command(train_commands.train)


_register()


def main() -> None:
    cli()
