"""The runtimes hwnas measures with, by name: a plain dict, and one function that builds one.

``get_runtime("onnxruntime", device="cpu", threads=1)`` -> a ``Runtime`` whose
``measure_module(module, input_shape)`` / ``measure_onnx(path, input_shape)`` return a
``Timing`` under the measurement protocol. A runtime that cannot run here (no GPU, no
tensorrt package) is an ``HwnasError`` that says why, raised when it is asked for.
"""

from __future__ import annotations

from typing import Any

from hwnas.errors import HwnasError
from hwnas.latency.executorch_runtime import ExecuTorchRuntime
from hwnas.latency.onnxruntime_runtime import OnnxRuntime
from hwnas.latency.precision import resolve_precision
from hwnas.latency.protocol import Protocol, Runner, Timing, measure_interleaved
from hwnas.latency.runtime_base import DEVICES, Runtime, no_precision_path
from hwnas.latency.tensorrt import TensorRtRuntime, build_engine
from hwnas.latency.torch_runtime import TorchRuntime
from hwnas.registry import Registry

RUNTIMES: Registry[type[Runtime]] = Registry(
    "runtime",
    [
        TorchRuntime,
        OnnxRuntime,
        TensorRtRuntime,
        ExecuTorchRuntime,
    ],
)


def get_runtime(
    name: str,
    device: str = "cpu",
    threads: int | None = 1,
    fp16: bool = False,
    protocol: Protocol | None = None,
    precision: str | None = None,
    **options: Any,
) -> Runtime:
    """The runtime ``name`` on ``device`` at ``precision`` (fp32, fp16, int8; ``fp16=True`` is the older spelling of
    ``precision="fp16"``); ``options`` go to it (``provider=`` for onnxruntime; ``adb=``, ``serial=``, ``runner=`` for
    executorch on android)."""
    if name not in RUNTIMES:
        raise HwnasError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    asked = resolve_precision(precision, fp16)
    if asked not in RUNTIMES[name].precisions:
        others = [other for other, runtime in RUNTIMES.items() if asked in runtime.precisions and other != name]
        raise HwnasError(no_precision_path(name, asked, others))
    options = {key: value for key, value in options.items() if value is not None}  # left out: the runtime's default
    if device not in RUNTIMES[name].devices:
        options = {}  # the runtime refuses the device, which says more than an option it does not take
    return RUNTIMES[name](device, threads, fp16, protocol, precision=precision, **options)


__all__ = ["DEVICES", "RUNTIMES", "Protocol", "Runner", "Runtime", "Timing", "build_engine", "get_runtime", "measure_interleaved"]
