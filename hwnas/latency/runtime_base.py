"""What every runtime offers: prepare a module or an ONNX model for timing, measure it, describe itself.

A runtime turns "this module at this input shape" into a ``Runner`` (a zero-argument call
with its inputs bound and its clock), so the profiler can prepare many items first and then
measure them interleaved (``protocol.measure_interleaved``). Threads are pinned while a
runtime measures and restored afterwards, so a test or a notebook keeps its own settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError
from hwnas.latency.fingerprint import device_name, measurement_warnings
from hwnas.latency.precision import PRECISIONS, resolve_precision
from hwnas.latency.protocol import Protocol, Runner, Timing, measure_interleaved

#: every device a runtime can measure on (each runtime names its own in ``devices``); android is reached over adb
DEVICES = ("cpu", "cuda", "android")


def no_precision_path(runtime: str, precision: str, others: list[str]) -> str:
    """The error for a precision ``runtime`` cannot measure, naming the runtimes (``others``) that can."""
    fix = f"use --runtime {' or '.join(others)}" if others else "no runtime here has one"
    return f"--precision {precision}: the {runtime} runtime has no {precision.upper()} path here; {fix}"


class Runtime:
    """Base class; a subclass sets ``name`` and ``precisions`` and implements ``prepare_module`` / ``prepare_onnx`` / ``meta``.

    ``precision`` (``hwnas.latency.precision``) is what ``prepare_module`` measures: the module
    as it is (fp32), in half precision (fp16) or quantized to INT8 (int8: the runtime's own INT8
    path); ``fp16=True`` is the older spelling of ``precision="fp16"``.
    """

    name: str = ""
    #: the devices this runtime measures on
    devices: tuple[str, ...] = ("cpu", "cuda")
    #: the precisions this runtime can measure here; another is refused (``no_precision_path``)
    precisions: tuple[str, ...] = ("fp32",)

    def __init__(
        self,
        device: str = "cpu",
        threads: int | None = 1,
        fp16: bool = False,
        protocol: Protocol | None = None,
        precision: str | None = None,
    ) -> None:
        if device not in DEVICES:
            raise HwnasError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
        if device not in self.devices:
            hint = "; a phone is measured with --runtime executorch" if device == "android" else ""
            raise HwnasError(
                f"the {self.name} runtime does not run on --device {device} (it runs on {', '.join(self.devices)}){hint}"
            )
        if threads is not None and threads < 1:
            raise HwnasError(f"--threads must be >= 1 (or left out for the runtime's default), got {threads}")
        self.device = device
        self.threads = threads
        self.precision = resolve_precision(precision, fp16)
        if self.precision not in self.precisions:
            raise HwnasError(no_precision_path(self.name, self.precision, []))
        self.protocol = protocol or Protocol()

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    # -- what a runtime implements --------------------------------------------------------
    def prepare_module(self, module: Any, input_shape: tuple[int, ...]) -> Runner:
        raise NotImplementedError

    def prepare_onnx(self, onnx_model: bytes | str | Path, input_shape: tuple[int, ...]) -> Runner:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        """``runtime``, ``runtime_version``, ``provider``, ``threads``, ``dtype``, ``device``."""
        raise NotImplementedError

    def device_name(self) -> str:
        """The name a table of this target records and must match (the CPU model, the GPU, the phone)."""
        return device_name(self.device)

    def warnings(self) -> list[str]:
        """What could not be controlled on the device while measuring (recorded, never silenced)."""
        return measurement_warnings(self.device)

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Threads pinned for the duration of a measurement (default: nothing to pin)."""
        yield

    # -- shared -----------------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        """What a table measured by this runtime records as ``meta["dtype"]``."""
        return PRECISIONS[self.precision].dtype

    def measure(
        self,
        runners: Sequence[Runner],
        rounds: int | None = None,
        on_measured: Callable[[int, int, Timing], None] | None = None,
        rounds_done: Sequence[int] | None = None,
    ) -> list[Timing]:
        """Interleaved rounds over prepared runners, threads pinned (see ``measure_interleaved``)."""
        with self.pinned():
            measure_one = self.round_measurer(runners)
            return measure_interleaved(runners, rounds, self.protocol, on_measured, rounds_done, measure_one=measure_one)

    def round_measurer(self, runners: Sequence[Runner]) -> Callable[[Runner, bool], Timing] | None:
        """What times one round of one of ``runners`` in ``measure`` (``measure_interleaved``'s ``measure_one``), made
        ready for them; None (the default): this process times it."""
        return None

    def measure_module(self, module: Any, input_shape: tuple[int, ...]) -> Timing:
        """Latency of ``module`` at ``input_shape`` (batch included), over the protocol's rounds."""
        return self.measure([self.prepare_module(module, tuple(input_shape))])[0]

    def measure_onnx(self, path: str | Path | bytes, input_shape: tuple[int, ...]) -> Timing:
        """Latency of an ONNX model (a file or its bytes) at ``input_shape``.

        The tensorrt runtime also takes a serialised engine here (a path ending ``.engine`` or
        ``.plan``, see ``tensorrt.build_engine``); the torch runtime refuses ONNX.
        """
        if isinstance(path, (str, Path)) and not Path(path).is_file():
            raise HwnasError(f"ONNX file {path} does not exist")
        return self.measure([self.prepare_onnx(path, tuple(input_shape))])[0]
