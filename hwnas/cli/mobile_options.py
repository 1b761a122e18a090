"""``--adb --serial --runner``: how ``--device android`` reaches the phone, defined once for profile, validate and export."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from hwnas.errors import HwnasError
from hwnas.latency.android import DEFAULT_RUNNER


def android_options(command: Callable) -> Callable:
    """Add the three options; the command receives ``adb``, ``serial`` and ``runner`` (None where not given)."""
    options = [
        click.option("--adb", type=click.Path(dir_okay=False), help="--device android: the adb to use [default: adb on PATH]."),
        click.option("--serial", help="--device android: the device's serial (adb devices) [default: the one attached]."),
        click.option("--runner", help=f"--device android: the executor_runner on the device [default: {DEFAULT_RUNNER}]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def android_runtime_options(device: str, adb: str | None, serial: str | None, runner: str | None) -> dict[str, Any]:
    """The runtime options of ``--device android`` (refused with any other device)."""
    given = {"adb": adb, "serial": serial, "runner": runner}
    if device != "android":
        named = [f"--{name}" for name, value in given.items() if value is not None]
        if named:
            raise HwnasError(f"{', '.join(named)} go{'es' if len(named) == 1 else ''} with --device android")
        return {}
    return given


def default_runtime(runtime: str | None, device: str) -> str:
    """``--runtime`` left out: executorch for a phone, else onnxruntime."""
    return runtime or ("executorch" if device == "android" else "onnxruntime")
