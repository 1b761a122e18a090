"""GPU paths: torch CUDA with events, ONNX Runtime's CUDA provider, a TensorRT engine. Skipped without a GPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hwnas.arch import Arch
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import build_engine, get_runtime
from hwnas.spaces import get_space

TINY = Protocol(warmup_runs=2, warmup_s=0.0, min_runs=3, min_s=0.0, rounds=2)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
needs_tensorrt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt package not installed")


def demo_net():
    space = get_space("proxyless", resolution=32, in_channels=1, num_classes=10)
    return Arch.random(space, 0).build(), (1, *space.input_shape)


@needs_cuda
def test_torch_cuda_times_with_events():
    from hwnas.latency.cuda_clock import CudaEventClock

    net, shape = demo_net()
    runtime = get_runtime("torch", device="cuda", protocol=TINY)
    runner = runtime.prepare_module(net, shape)
    assert isinstance(runner.clock, CudaEventClock)  # timed by CUDA events, not the host clock
    torch.cuda.reset_peak_memory_stats()
    timing = runtime.measure([runner])[0]
    assert timing.median_ms > 0 and timing.n == 6
    assert torch.cuda.max_memory_allocated() > 0  # the net really ran on the GPU


@needs_cuda
def test_onnxruntime_cuda_provider_runs_on_the_gpu():
    import onnxruntime

    from hwnas.latency.onnx_export import export_onnx_bytes

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.fail(
            "a CUDA GPU is here but this onnxruntime has no CUDAExecutionProvider: pip install -e '.[gpu]' "
            "(after pip uninstall onnxruntime)"
        )
    net, shape = demo_net()
    runtime = get_runtime("onnxruntime", device="cuda", protocol=TINY)
    session = runtime.session(export_onnx_bytes(net, shape))
    assert session.get_providers()[0] == "CUDAExecutionProvider"  # no silent fallback to the CPU
    assert runtime.measure_module(net, shape).median_ms > 0


@needs_cuda
@needs_tensorrt
@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_engine_build_and_timing(tmp_path, fp16):
    from hwnas.latency.onnx_export import export_onnx_bytes

    net, shape = demo_net()
    onnx_path = tmp_path / "net.onnx"
    onnx_path.write_bytes(export_onnx_bytes(net, shape))
    engine = build_engine(onnx_path, tmp_path / "net.engine", fp16=fp16)
    import tensorrt

    deserialised = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.ERROR)).deserialize_cuda_engine(engine.read_bytes())
    assert deserialised is not None and deserialised.num_io_tensors == 2  # a real engine: one input, one output
    runtime = get_runtime("tensorrt", device="cuda", fp16=fp16, protocol=TINY)
    assert runtime.measure_onnx(onnx_path, shape).median_ms > 0
    assert runtime.measure_onnx(engine, shape).median_ms > 0


@needs_cuda
@needs_tensorrt
def test_tensorrt_int8_engines_from_a_calibrator_and_from_a_qdq_file(tmp_path):
    """A float model through the entropy calibrator, and a QDQ file as explicit INT8: both real INT8 engines."""
    import tensorrt

    from hwnas.latency.onnx_export import export_onnx_bytes
    from hwnas.latency.quantize import quantize_onnx, random_calibration

    net, shape = demo_net()
    float_path, qdq_path = tmp_path / "net.onnx", tmp_path / "net.int8.onnx"
    float_path.write_bytes(export_onnx_bytes(net, shape))
    quantize_onnx(float_path, random_calibration(shape), output=qdq_path)
    for source in (float_path, qdq_path):
        engine = build_engine(source, tmp_path / f"{source.stem}.engine", input_shape=shape, precision="int8")
        deserialised = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.ERROR)).deserialize_cuda_engine(engine.read_bytes())
        inspector = deserialised.create_engine_inspector()
        layers = inspector.get_engine_information(tensorrt.LayerInformationFormat.JSON)
        assert "Int8" in layers or "INT8" in layers, f"{source.name}: no INT8 layer in the engine"
    runtime = get_runtime("tensorrt", device="cuda", precision="int8", protocol=TINY)
    assert runtime.meta()["dtype"] == "int8" and runtime.measure_module(net, shape).median_ms > 0
