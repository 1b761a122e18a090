"""ExecuTorch: a module lowered to a ``.pte`` program with the XNNPACK delegate, timed in process or on a phone.

Lowering follows ExecuTorch's documented path: ``torch.export`` -> ``to_edge_transform_and_lower``
with the ``XnnpackPartitioner`` -> ``to_executorch``, in float32 (INT8: quantized first with the
XNNPACK quantizer, ``hwnas.latency.executorch_quantize``). The partitioner hands XNNPACK
what it supports; anything else (a ShuffleNet channel split ``x[:, 0::2]``) stays in the
portable kernels. Every lowered item records whether the delegate took all of it
(``delegated``) and the ops it left out (``portable_ops``); the profiler stores both in the
table entry, ``hwnas tables show`` and ``hwnas tables validate`` name the partly delegated ones.

In process (``--device cpu``) a program runs through the wheel's pybindings, timed per call
(that includes ~0.1 ms of Python call per run, the same for every entry, and taken off the
parts like every runtime's fixed cost by the table's ``overhead`` entry). Threads: XNNPACK uses
ExecuTorch's own process-wide thread pool, which Python can resize only through a private call
(``set_threads``); ``threads=N`` sizes it when the runtime is created, ``threads=None`` leaves
the pool as it is (one thread per core). Unlike the other runtimes the size is not restored
afterwards (see ``set_threads``).

The clock: with a pool of one thread every op runs on the calling thread, and a call is timed
by that thread's CPU time (``ThreadCpuClock``), not by the wall clock; with a larger pool, by
the wall clock. Why: a long-lived timing loop on a shared machine gets only its fair share of a
core, so its wall time per call holds the time it waited for the core, up to the call's own
length, and its median flipped between the undisturbed time and about twice it (3.4 or 7.5 ms
for the same program) while ``executor_runner`` (a short-lived process the scheduler still lets
run) gave the undisturbed time. Measured with ``/proc/self/schedstat``: the thread's time on
the core per call equalled the runner's per-iteration time, and the rest was time waiting in
the run queue; pinning the thread, ``torch.set_num_threads(1)``, a longer warm-up and torch
work before timing changed nothing (docs/mobile.md). A call's CPU time is what the call costs
on its core, the figure a phone's undisturbed runner reports; it leaves out the time the
thread waits for anything, which at one thread in a warmed-up program is only the scheduler.
That holds only while no other thread takes part in a call: the outputs come back as torch
tensors, and torch's own pool would copy a large one on two threads (``pinned``).

On a phone (``--device android``) the same programs go to the device over adb and run under
``executor_runner`` (``hwnas.latency.android``).

Programs are cached on the host by what they compute (``lowered_program``): the module's classes
(their source), its hyper-parameters, the shapes of its weights, the input shape and the versions
of torch and executorch. Weights are not part of the key (a profile builds every op with fresh
random weights; a dense float32 kernel takes the same time whatever they hold), so a cached
program serves timing only; an exported artifact (``hwnas export model.pte``) is always lowered
from its own weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas.latency.android import AndroidTarget
from hwnas.latency.executorch_program import (
    DELEGATE,
    Lowered,
    executorch_version,
    import_executorch,
    load_program,
    lowered_program,
    pool_threads,
    read_program,
    set_threads,
)
from hwnas.latency.executorch_quantize import XNNPACK_RECIPE, cache_variant, lower_int8
from hwnas.latency.protocol import Clock, Runner, Timing, host_clock
from hwnas.latency.quantize import table_quantization
from hwnas.latency.runtime_base import Runtime
from hwnas.latency.threads import torch_threads


class ExecuTorchRuntime(Runtime):
    """ExecuTorch with the XNNPACK delegate, float32 or INT8: in this process (``cpu``) or on a phone over adb (``android``).

    ``adb``, ``serial`` and ``runner`` (see ``hwnas.latency.android.AndroidTarget``) apply to ``android`` only.
    """

    name = "executorch"
    devices = ("cpu", "android")
    precisions = ("fp32", "int8")

    def __init__(
        self, *args: Any, adb: str | None = None, serial: str | None = None, runner: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.fp16:
            raise HwnasError("the executorch runtime measures float32 programs (the XNNPACK delegate's float path); drop --fp16")
        self.target = None
        if self.device == "android":  # adb and the phone are checked first: their errors say more than a missing package
            self.target = AndroidTarget(adb, serial, runner, self.threads, self.protocol)
        elif any(value is not None for value in (adb, serial, runner)):
            raise HwnasError("--adb, --serial and --runner go with --device android")
        import_executorch()
        if self.target is None and self.threads is not None:
            set_threads(self.threads)

    # -- preparing ------------------------------------------------------------------------
    def prepare_module(self, module: Any, input_shape: tuple[int, ...]) -> Runner:
        lowered = self.lowered(module, tuple(input_shape))
        runner = self.prepare_pte(lowered.program, input_shape)
        runner.info.update(lowered.info())
        return runner

    def lowered(self, module: Any, input_shape: tuple[int, ...]) -> Lowered:
        """The program this runtime times for ``module``: float32, or INT8 (``hwnas.latency.executorch_quantize``)."""
        if self.precision == "int8":
            return lowered_program(module, input_shape, lower_int8, variant=cache_variant())
        return lowered_program(module, input_shape)

    def prepare_pte(self, program: bytes | str | Path, input_shape: tuple[int, ...]) -> Runner:
        """A runner of a ``.pte`` program (bytes or a file) at ``input_shape``."""
        data = program if isinstance(program, bytes) else read_program(program)
        if self.target is not None:
            return self.target.prepare(data, input_shape)

        loaded = load_program(data)
        example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        inputs = (example,)
        try:
            loaded.forward(inputs)  # a wrong shape fails here, not in the middle of a measurement
        except Exception as error:
            raise HwnasError(f"the ExecuTorch program does not run at input shape {list(input_shape)}: {error}") from None

        def run() -> None:
            loaded.forward(inputs)

        run.program = data  # the loaded program reads its weights from this buffer: it must live as long as the runner
        return Runner(run, self._clock(), label="forward")

    def _clock(self) -> Clock:
        """The calling thread's CPU time where it does all the work (a pool of one thread), else the wall clock."""
        return host_clock(pool_threads() == 1)

    def prepare_onnx(self, onnx_model: bytes | str | Path, input_shape: tuple[int, ...]) -> Runner:
        raise HwnasError("the executorch runtime runs .pte programs, not ONNX files; use --runtime onnxruntime for .onnx")

    # -- measuring ------------------------------------------------------------------------
    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Torch at one thread while a program runs in this process (its outputs come back as torch tensors).

        Without it, torch's OpenMP pool copied large outputs on two threads, and on a busy core the
        calling thread spun at the pool's barrier until the other thread got the core back: a whole
        scheduler tick (4 ms here) of its CPU time per call, whatever the program (docs/mobile.md).
        """
        with torch_threads(1 if self.target is None else None):
            yield

    def round_measurer(self, runners: Sequence[Runner]) -> Callable[[Runner, bool], Timing] | None:
        return self.target.round_measurer(runners) if self.target is not None else None

    # -- describing -----------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        meta = {
            "runtime": self.name,
            "runtime_version": executorch_version(),
            "provider": "xnnpack",
            "delegate": DELEGATE,
            "device": self.device,
            "threads": self.threads,
            "dtype": self.dtype,
            **({"quantization": table_quantization(XNNPACK_RECIPE)} if self.precision == "int8" else {}),
        }
        if self.target is not None:
            meta.update(self.target.meta())
        else:
            meta["clock"] = self._clock().name
        return meta

    def device_name(self) -> str:
        return self.target.device_name if self.target is not None else super().device_name()

    def warnings(self) -> list[str]:
        return self.target.warnings() if self.target is not None else super().warnings()


def partly_delegated(entries: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Entries XNNPACK did not take whole: key -> the ops left to the portable kernels."""
    return {key: list(entry.get("portable_ops") or ["?"]) for key, entry in entries.items() if entry.get("delegated") is False}


def delegation_warnings(entries: dict[str, dict[str, Any]], shown: int = 3) -> list[str]:
    """One line naming the partly delegated entries of a table (none: no line)."""
    partly = partly_delegated(entries)
    if not partly:
        return []
    ops = sorted({op for names in partly.values() for op in names})
    names = ", ".join(list(partly)[:shown]) + (f" and {len(partly) - shown} more" if len(partly) > shown else "")
    return [
        f"{len(partly)} of {len(entries)} entries are only partly delegated to XNNPACK ({names}): "
        f"{', '.join(ops)} run in the portable kernels, which a phone runs the same way (see docs/mobile.md)"
    ]
