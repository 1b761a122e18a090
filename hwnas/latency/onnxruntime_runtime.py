"""ONNX Runtime: CPU, CUDA or TensorRT execution provider, the module exported to ONNX first.

Every session gets the same options: all graph optimisations (so an op alone is fused as it
would be inside the net), sequential execution, ``intra_op_num_threads`` = ``threads`` and one
inter-op thread. On CUDA the input and output live on the GPU (I/O binding to torch tensors),
so a run is the kernels, not host copies, and each run is synchronised before the clock.
On the CPU at one thread a run is timed by the calling thread's CPU time, which does all the
work (``protocol.ThreadCpuClock``: on a shared machine the wall time of a long-lived timing
loop also holds its waits for a core); at more threads, by the wall clock. ``meta["clock"]``
says which.

INT8 (``precision="int8"``): each module is exported in float32 and quantized to a QDQ model
(``hwnas.latency.quantize``: static, per-channel int8 weights, calibrated on random inputs of
its own shape) before the session is made; the CPU provider runs the QDQ groups as integer
kernels, the TensorRT provider reads them as explicit INT8. The CUDA provider is refused: it
dequantizes most QDQ groups back to float kernels, so it would time no INT8 path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from hwnas.errors import HwnasError
from hwnas.latency.cuda_clock import SynchronisedClock, require_cuda
from hwnas.latency.onnx_export import export_onnx_bytes
from hwnas.latency.protocol import Clock, Runner, host_clock
from hwnas.latency.quantize import RECIPE, quantize_onnx, random_calibration, table_quantization
from hwnas.latency.runtime_base import Runtime

#: hwnas provider name -> ONNX Runtime execution provider
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    precisions = ("fp32", "fp16", "int8")

    def __init__(self, *args: Any, provider: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.provider = provider or ("cuda" if self.device == "cuda" else "cpu")
        if self.provider not in PROVIDERS:
            raise HwnasError(f"unknown ONNX Runtime provider {self.provider!r}; known: {', '.join(PROVIDERS)}")
        if (self.provider == "cpu") != (self.device == "cpu"):
            raise HwnasError(f"ONNX Runtime provider {self.provider} does not run on device {self.device}")
        if self.fp16 and self.provider == "cpu":
            raise HwnasError(
                "--fp16 with onnxruntime needs --device cuda (the CPU provider runs float16 models slower, not faster)"
            )
        if self.precision == "int8" and self.provider == "cuda":
            raise HwnasError(
                "--precision int8 with onnxruntime runs on the CPU provider (--device cpu) or the TensorRT provider; "
                "the CUDA provider has no INT8 convolutions"
            )
        available = onnxruntime.get_available_providers()
        if PROVIDERS[self.provider] not in available:
            raise HwnasError(
                f"ONNX Runtime {onnxruntime.__version__} here has no {PROVIDERS[self.provider]} "
                f"(available: {', '.join(available)})"
            )
        if self.device == "cuda":
            require_cuda()

    def session_options(self):
        ort = onnxruntime
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return options

    def _providers(self) -> list:
        chosen = PROVIDERS[self.provider]
        if self.provider == "tensorrt":
            return [
                (chosen, {"trt_fp16_enable": self.fp16, "trt_int8_enable": self.precision == "int8"}),
                "CUDAExecutionProvider",
            ]
        return [chosen]

    def session(self, onnx_model: bytes | str | Path):
        ort = onnxruntime
        source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        try:
            return ort.InferenceSession(source, sess_options=self.session_options(), providers=self._providers())
        except Exception as error:  # ORT raises its own exception types for bad models
            raise HwnasError(
                f"ONNX Runtime cannot load {'the model' if isinstance(onnx_model, bytes) else onnx_model}: {error}"
            ) from None

    def prepare_module(self, module: Any, input_shape: tuple[int, ...]) -> Runner:
        if self.fp16:
            module = module.half()  # export a float16 graph: what the GPU provider will run
        model = export_onnx_bytes(module, input_shape)
        if self.precision == "int8":
            model = quantize_onnx(model, random_calibration(input_shape), RECIPE)
        return self.prepare_onnx(model, input_shape)

    def prepare_onnx(self, onnx_model: bytes | str | Path, input_shape: tuple[int, ...]) -> Runner:
        session = self.session(onnx_model)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise HwnasError(f"expected an ONNX model with one input, got {len(inputs)}")
        declared = inputs[0].shape
        if len(declared) != len(input_shape) or any(isinstance(d, int) and d != s for d, s in zip(declared, input_shape)):
            raise HwnasError(f"ONNX model input {inputs[0].name!r} has shape {declared}, measuring at {list(input_shape)}")
        dtype = np.float16 if "float16" in inputs[0].type else np.float32
        if self.device == "cpu":
            feed = {inputs[0].name: np.random.default_rng(0).standard_normal(input_shape).astype(dtype)}
            return Runner(lambda: session.run(None, feed), self._host_clock(), label=inputs[0].name)
        return self._cuda_runner(session, inputs[0].name, input_shape, dtype)

    def _cuda_runner(self, session, input_name: str, input_shape: tuple[int, ...], dtype) -> Runner:
        """I/O bound to torch CUDA tensors so no host copy is timed."""
        torch_dtype = torch.float16 if dtype == np.float16 else torch.float32
        example = torch.randn(*input_shape, device="cuda", dtype=torch_dtype)
        binding = session.io_binding()
        binding.bind_input(input_name, "cuda", 0, dtype, list(input_shape), example.data_ptr())
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda", 0)

        def run() -> None:
            session.run_with_iobinding(binding)

        return Runner(run, SynchronisedClock(), input_name)

    def _host_clock(self) -> Clock:
        """At one thread ONNX Runtime runs every kernel on the calling thread (no pool, sequential): its CPU time."""
        return host_clock(self.threads == 1)

    def meta(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "runtime_version": onnxruntime.__version__,
            "provider": PROVIDERS[self.provider],
            "device": self.device,
            "threads": self.threads,
            "dtype": self.dtype,
            "graph_optimization": "ORT_ENABLE_ALL",
            **({"clock": self._host_clock().name} if self.device == "cpu" else {}),
            **({"quantization": table_quantization(RECIPE)} if self.precision == "int8" else {}),
        }
