"""``--adb --serial --runner``: how ``--device android`` reaches the phone, defined once for profile, validate and export."""

from __future__ import annotations

from collections.abc import Callable

import click

from hwnas.cli.options import with_options
from hwnas.latency.android import DEFAULT_RUNNER


def android_options(command: Callable) -> Callable:
    """Add the three options; the command receives ``adb``, ``serial`` and ``runner`` (None where not given)."""
    options = [
        click.option("--adb", type=click.Path(dir_okay=False), help="--device android: the adb to use [default: adb on PATH]."),
        click.option("--serial", help="--device android: the device's serial (adb devices) [default: the one attached]."),
        click.option("--runner", help=f"--device android: the executor_runner on the device [default: {DEFAULT_RUNNER}]."),
    ]
    return with_options(command, options)
