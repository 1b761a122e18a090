"""Entry point: the ``hwnas`` group, its version flag, and one place that turns errors into messages."""

from __future__ import annotations

import sys
import warnings

import click

from hwnas import __version__
from hwnas.cli import arch_commands, export_commands, search_commands, spaces_commands, train_commands
from hwnas.cli.latency_commands import register_latency_commands
from hwnas.cli.options import RESUME_HINT, warning_line
from hwnas.errors import HwnasError
from hwnas.files import os_reason

#: exit code of a command that stopped on bad input or a missing resource (click uses 2 for usage errors too)
EXIT_ERROR = 2
#: exit code after Ctrl-C (128 + SIGINT, as a shell reports it)
EXIT_INTERRUPTED = 130


class ErrorReportingGroup(click.Group):
    """A group that prints ``HwnasError`` as ``error: ...`` without a traceback and exits non-zero.

    Warnings are ``warning: ...`` lines; Ctrl-C exits 130 and names the command that continues
    the work where the command set one (``RESUME_HINT``).

    An ``OSError`` that names a file (an output folder that is a file, or not writable, a full
    disk) is reported the same way, with the path and the system's reason.
    """

    def invoke(self, ctx: click.Context):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = warning_line
                return super().invoke(ctx)
        except KeyboardInterrupt:
            hint = ctx.meta.get(RESUME_HINT)
            hint = hint() if callable(hint) else hint
            click.echo(f"\ninterrupted{f'; continue with: {hint}' if hint else ''}", err=True)
            sys.exit(EXIT_INTERRUPTED)
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
