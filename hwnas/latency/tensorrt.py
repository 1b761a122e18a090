"""TensorRT: build an engine from ONNX (fp32, fp16 or int8), run it with device buffers owned by torch.

INT8: an ONNX model that already holds QuantizeLinear / DequantizeLinear pairs is built as
TensorRT's explicit quantization (the scales are the file's). A float model is built with
TensorRT's calibrator (``IInt8EntropyCalibrator2``, implicit quantization) fed a
``CalibrationSet`` (``hwnas.latency.quantize``): random inputs of the entry's own shape for a
table entry or a validated net, like the ONNX Runtime path, or a run's images for an export.
Layers TensorRT has no INT8 kernel for run in float32 (no FP16 flag with INT8: the table times
one precision). TensorRT 10.1 marks implicit quantization deprecated but still builds it; it is
what "INT8 engines with a calibrator" means, and the explicit path above is its successor.

Uses the TensorRT 10 Python API (name-based tensors, ``execute_async_v3``); ``tensorrt`` is
imported only when this runtime is asked for, so hwnas installs and runs without it.
Buffers are torch CUDA tensors (no pycuda), runs are enqueued on torch's current stream and
timed with CUDA events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas.files import write_bytes_atomic
from hwnas.latency.cuda_clock import CudaEventClock, require_cuda
from hwnas.latency.onnx_export import export_onnx_bytes
from hwnas.latency.precision import resolve_precision
from hwnas.latency.protocol import Runner
from hwnas.latency.quantize import RANDOM_SAMPLES, CalibrationSet, is_quantized, random_calibration
from hwnas.latency.runtime_base import Runtime

WORKSPACE_BYTES = 1 << 30


def import_tensorrt():
    """The ``tensorrt`` module, or an error saying why it cannot be used here."""
    try:
        import tensorrt
    except ImportError as error:
        raise HwnasError(
            f"the tensorrt runtime needs NVIDIA's tensorrt package (pip install 'hwnas[tensorrt]'): {error}"
        ) from None
    return tensorrt


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


#: largest batch an engine built from a dynamic-batch ONNX model accepts
MAX_DYNAMIC_BATCH = 64


def _add_batch_profile(builder, network, config, input_shape: tuple[int, ...] | None):
    """Dynamic axes need an optimisation profile: batch 1 .. MAX_DYNAMIC_BATCH, tuned for ``input_shape``."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [tensor for tensor in inputs if any(d < 0 for d in tensor.shape)]
    if not dynamic:
        return None
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        shape = tuple(input_shape) if input_shape else tuple(1 if d < 0 else d for d in tensor.shape)
        if any(d < 0 for d in tensor.shape[1:]):
            raise HwnasError(f"TensorRT: input {tensor.name} has dynamic axes other than the batch: {tuple(tensor.shape)}")
        rest = shape[1:]
        profile.set_shape(tensor.name, (1, *rest), shape, (max(shape[0], MAX_DYNAMIC_BATCH), *rest))
    config.add_optimization_profile(profile)
    return profile


def int8_calibrator(trt, calibration: CalibrationSet):
    """A ``trt.IInt8EntropyCalibrator2`` that hands TensorRT the calibration set's inputs, one batch a call, from the GPU."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = [torch.from_numpy(batch).cuda().contiguous() for batch in calibration.batches]
            self.next = 0

        def get_batch_size(self) -> int:
            return int(calibration.batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.next >= len(self.batches):
                return None
            batch = self.batches[self.next]
            self.next += 1
            return [int(batch.data_ptr())] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            return None  # calibrate every build: entries of one table have different shapes

        def write_calibration_cache(self, cache) -> None:
            pass

    return Calibrator()


def build_engine_bytes(
    onnx_model: bytes | str | Path,
    fp16: bool = False,
    input_shape: tuple[int, ...] | None = None,
    precision: str | None = None,
    calibration: CalibrationSet | None = None,
) -> bytes:
    """A serialised TensorRT engine for this GPU built from an ONNX model (bytes or a path).

    ``input_shape`` (batch included) tunes the profile of a model with a dynamic batch axis.
    ``precision="int8"``: a QDQ model is built as explicit INT8; a float model is calibrated on
    ``calibration`` (default: random inputs of ``input_shape``).
    """

    precision = resolve_precision(precision, fp16)
    fp16 = precision == "fp16"
    trt = import_tensorrt()
    require_cuda()
    data = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise HwnasError(f"TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the engine inspector can then say each layer's precision
    if fp16:
        if not builder.platform_has_fast_fp16:
            raise HwnasError("--fp16: this GPU has no fast float16 path in TensorRT")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = _add_batch_profile(builder, network, config, input_shape)
    calibrator = None
    if precision == "int8":
        if not builder.platform_has_fast_int8:
            raise HwnasError("--precision int8: this GPU has no fast INT8 path in TensorRT")
        config.set_flag(trt.BuilderFlag.INT8)
        if not is_quantized(data):  # explicit QDQ models carry their scales; a float model needs a calibrator
            if calibration is None:
                if input_shape is None:
                    raise HwnasError("TensorRT INT8 calibration of a float model needs its input shape")
                calibration = random_calibration(tuple(input_shape))
            calibrator = int8_calibrator(trt, calibration)  # kept referenced until the build is done
            config.int8_calibrator = calibrator
            if profile is not None:
                config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    del calibrator
    if serialized is None:
        raise HwnasError("TensorRT failed to build an engine (see the TensorRT log above)")
    return bytes(serialized)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    fp16: bool = False,
    input_shape: tuple[int, ...] | None = None,
    precision: str | None = None,
    calibration: CalibrationSet | None = None,
) -> Path:
    """Build the engine of ``onnx_path`` and write it atomically to ``engine_path``."""
    if not Path(onnx_path).is_file():
        raise HwnasError(f"ONNX file {onnx_path} does not exist")
    write_bytes_atomic(engine_path, build_engine_bytes(onnx_path, fp16, input_shape, precision, calibration))
    return Path(engine_path)


class EngineRunner:
    """A deserialised engine with one execution context and torch-owned buffers for every I/O tensor."""

    def __init__(self, engine_bytes: bytes, input_shape: tuple[int, ...]) -> None:
        trt = import_tensorrt()
        self.engine = trt.Runtime(_logger(trt)).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise HwnasError("TensorRT could not deserialise the engine (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, torch.Tensor] = {}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for name in names:  # inputs first: output shapes follow from them
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.context.set_input_shape(name, tuple(input_shape))
        for name in names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
            tensor = (
                torch.randn(shape, device="cuda").to(dtype)
                if dtype.is_floating_point
                else torch.zeros(shape, device="cuda", dtype=dtype)
            )
            self.buffers[name] = tensor
            self.context.set_tensor_address(name, tensor.data_ptr())

    def __call__(self) -> None:
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise HwnasError("TensorRT execution failed")


def _torch_dtype(trt, dtype):
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    if dtype not in table:
        raise HwnasError(f"TensorRT tensor type {dtype} is not supported by hwnas's runner")
    return table[dtype]


class TensorRtRuntime(Runtime):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.device != "cuda":
            raise HwnasError("the tensorrt runtime runs on --device cuda only")
        import_tensorrt()
        require_cuda()

    def prepare_module(self, module: Any, input_shape: tuple[int, ...]) -> Runner:
        return self.prepare_onnx(export_onnx_bytes(module, input_shape), input_shape)

    def prepare_onnx(self, onnx_model: bytes | str | Path, input_shape: tuple[int, ...]) -> Runner:
        if isinstance(onnx_model, (str, Path)) and str(onnx_model).endswith((".engine", ".plan")):
            engine = Path(onnx_model).read_bytes()
        else:
            engine = build_engine_bytes(onnx_model, input_shape=input_shape, precision=self.precision)
        return Runner(EngineRunner(engine, input_shape), CudaEventClock(), "engine")

    def meta(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "runtime_version": import_tensorrt().__version__,
            "provider": "tensorrt",
            "device": self.device,
            "threads": self.threads,
            "dtype": self.dtype,
            **({"quantization": tensorrt_quantization()} if self.precision == "int8" else {}),
        }


def tensorrt_quantization() -> dict:
    """What an INT8 TensorRT table's ``meta["quantization"]`` says."""
    return {
        "tool": "TensorRT implicit INT8 (BuilderFlag.INT8, IInt8EntropyCalibrator2)",
        "method": "entropy",
        "per_channel": True,  # TensorRT quantizes convolution weights per output channel
        "calibration": f"{RANDOM_SAMPLES} random N(0, 1) inputs of each entry's (each net's) own shape",
    }
