"""PyTorch eager on CPU or CUDA: the module as it trains, no export.

CPU threads are pinned with ``torch.set_num_threads`` while measuring (and restored after).
On CUDA each run is timed with CUDA events. PyTorch eager on a CPU pays Python and dispatcher
overhead per module, so its block timings are noisier than ONNX Runtime's (see the shipped
tables' README).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.latency.cuda_clock import CudaEventClock, require_cuda
from hwnas.latency.protocol import Clock, Runner
from hwnas.latency.runtime_base import Runtime
from hwnas.latency.threads import torch_threads


class TorchRuntime(Runtime):
    name = "torch"
    precisions = ("fp32", "fp16")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.device == "cuda":
            require_cuda()
        elif self.fp16:
            raise HwnasError("--fp16 needs --device cuda with the torch runtime (CPU half precision is not a deployment target)")

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        with torch_threads(self.threads):
            yield

    def prepare_module(self, module: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        dtype = torch.float16 if self.fp16 else torch.float32
        module = module.eval().to(device=self.device, dtype=dtype)
        example = torch.randn(*input_shape, device=self.device, dtype=dtype)

        def run() -> None:
            with torch.inference_mode():
                module(example)

        clock: Clock = CudaEventClock() if self.device == "cuda" else Clock()
        return Runner(run, clock, type(module).__name__)

    def prepare_onnx(self, onnx_model: bytes | str | Path, input_shape: tuple[int, ...]) -> Runner:
        raise HwnasError("the torch runtime measures PyTorch modules, not ONNX files; use --runtime onnxruntime or tensorrt")

    def meta(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "runtime_version": torch.__version__,
            "provider": "cuda" if self.device == "cuda" else "cpu-eager",
            "device": self.device,
            "threads": self.threads,
            "dtype": self.dtype,
        }
