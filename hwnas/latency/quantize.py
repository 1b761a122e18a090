"""Post-training static INT8 quantization of an ONNX model with ``onnxruntime.quantization``.

One recipe for every INT8 model hwnas measures or ships, so a table entry, a net of
``tables validate`` and an exported child are quantized alike:

* QDQ format (QuantizeLinear / DequantizeLinear pairs around each quantized op; ONNX Runtime's
  CPU provider fuses a DQ -> Conv -> Q group into an integer convolution, TensorRT reads the
  same file as explicit quantization);
* int8 weights, **per output channel** (symmetric), uint8 activations (per tensor, asymmetric):
  "U8S8". Measured on this project's x86 VM with ONNX Runtime 1.32 (a random proxyless net at
  32x32): int8 activations (S8S8, the quantizer's default) left 20 of its 67 convolutions and
  every residual Add as float ops between DequantizeLinear / QuantizeLinear plus 42 layout
  Transposes, and ran at 1.1-1.2x the float net; U8S8 fused all 67 into QLinearConv and the
  Adds into QLinearAdd and ran at 0.42-0.51x (docs/int8.md);
* static activation ranges from a calibration set run through the float model (``MinMax`` by
  default: the observed minimum and maximum; ``Entropy`` and ``Percentile`` on request);
* the float model is first pre-processed as the ONNX Runtime quantization guide asks
  (``quant_pre_process``: shape inference and graph optimisation, so biases and constants
  become initializers the quantizer can see).

Calibration sets: a table entry (``hwnas profile --precision int8``) and a net of
``tables validate`` are calibrated on ``RANDOM_SAMPLES`` random N(0, 1) inputs of their own
shape (``random_calibration``). The latency of an integer kernel does not depend on the
scales the calibration picks, only on the graph, so random inputs time the same kernels as
real activations would; an exported child is calibrated on real images of its run's data set
(``hwnas.export.int8``), because there the scales decide the accuracy.

``onnxruntime.quantization`` (and onnx, which it loads) takes about 2 s to import, so it is
imported when a model is quantized, not when hwnas starts.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from hwnas.errors import HwnasError
from hwnas.files import write_bytes_atomic

#: ``--calibration-method`` values -> onnxruntime.quantization.CalibrationMethod names
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: recipe type names -> onnxruntime.quantization.QuantType members
QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}
#: random inputs each table entry / validated net is calibrated on
RANDOM_SAMPLES = 8
#: operators of a quantized graph: the QDQ pairs, or the integer operators ONNX Runtime fuses them into
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"})


@dataclass(frozen=True)
class Recipe:
    """How a model is quantized (recorded in a table's meta and an export's report)."""

    method: str = "minmax"
    per_channel: bool = True
    format: str = "QDQ"
    weights: str = "int8"
    activations: str = "uint8"
    tool: str = "onnxruntime.quantization.quantize_static"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise HwnasError(f"unknown calibration method {self.method!r}; known: {', '.join(METHODS)}")
        for name, value in (("weights", self.weights), ("activations", self.activations)):
            if value not in QUANT_TYPES:
                raise HwnasError(f"unknown {name} type {value!r}; known: {', '.join(QUANT_TYPES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the recipe of table entries and validated nets
RECIPE = Recipe()


def table_quantization(recipe: Recipe) -> dict[str, Any]:
    """What an INT8 table's ``meta["quantization"]`` says: the recipe and the calibration set of its entries and nets."""
    return {**recipe.to_dict(), "calibration": f"{RANDOM_SAMPLES} random N(0, 1) inputs of each entry's (each net's) own shape"}


@dataclass(frozen=True)
class CalibrationSet:
    """The inputs a quantizer observes (each an array of the model's input shape) and what they are, in words."""

    batches: tuple[np.ndarray, ...]
    description: str

    def __post_init__(self) -> None:
        if not self.batches:
            raise HwnasError("a calibration set needs at least one input")


def random_calibration(input_shape: tuple[int, ...], samples: int = RANDOM_SAMPLES, seed: int = 0) -> CalibrationSet:
    """``samples`` random N(0, 1) inputs of ``input_shape`` (what table entries and validated nets are calibrated on)."""
    rng = np.random.default_rng(seed)
    batches = tuple(rng.standard_normal(input_shape).astype(np.float32) for _ in range(samples))
    return CalibrationSet(batches, f"{samples} random N(0, 1) inputs of the model's own shape {list(input_shape)}")


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs advice through the root logger at WARNING; hwnas already follows it."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def quantize_onnx(
    onnx_model: bytes | str | Path, calibration: CalibrationSet, recipe: Recipe = RECIPE, output: str | Path | None = None
) -> bytes:
    """The INT8 (QDQ) model of a float ONNX model, calibrated on ``calibration``; also written to ``output`` if given."""

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnxruntime.set_default_logger_severity(3)  # the optimiser's notes on removed initializers are not the user's business
    data = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.feeds = iter([{name: batch} for batch in calibration.batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="hwnas-quantize-") as folder, _quiet_quantizer():
        source, prepared, quantized = (Path(folder) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(data)
        try:
            quant_pre_process(str(source), str(prepared))

            input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
            quantize_static(
                str(prepared),
                str(quantized),
                Reader(input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=recipe.per_channel,
                activation_type=getattr(QuantType, QUANT_TYPES[recipe.activations]),
                weight_type=getattr(QuantType, QUANT_TYPES[recipe.weights]),
                calibrate_method=getattr(CalibrationMethod, METHODS[recipe.method]),
            )
        except HwnasError:
            raise
        except Exception as error:  # the quantizer raises plain exceptions for graphs it cannot handle
            raise HwnasError(f"INT8 quantization failed: {error}") from None
        result = quantized.read_bytes()
    if output is not None:
        write_bytes_atomic(output, result)
    return result


def op_types(onnx_model: bytes | str | Path) -> set[str]:
    """The operator types of an ONNX model's graph."""

    import onnx

    model = onnx.load_from_string(onnx_model) if isinstance(onnx_model, bytes) else onnx.load(str(onnx_model))
    return {node.op_type for node in model.graph.node}


def is_quantized(onnx_model: bytes | str | Path) -> bool:
    """Whether the graph holds quantized operators (QDQ pairs or integer convolutions / matmuls)."""
    return bool(op_types(onnx_model) & QUANTIZED_OPS)


def onnxruntime_kernels(onnx_model: bytes | str | Path) -> dict[str, int]:
    """The operators ONNX Runtime's CPU provider runs for a model once it has optimised the graph, with their counts.

    A QDQ file holds float ``Conv`` ops between DequantizeLinear and QuantizeLinear; what runs as
    integer kernels shows only after ONNX Runtime fused them (``QLinearConv``, ``QLinearAdd``...):
    what is left in float says where the INT8 path stopped.
    """

    import onnx

    with tempfile.TemporaryDirectory(prefix="hwnas-kernels-") as folder:
        optimised = Path(folder) / "optimised.onnx"
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(optimised)
        options.log_severity_level = 3  # its note that the saved graph is tuned for this machine: that is the point
        source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        counts: dict[str, int] = {}
        for node in onnx.load(str(optimised)).graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def calibration_arrays(images: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, ...]:
    """Images [C, H, W] grouped into full input batches [batch_size, C, H, W] (a last partial batch is dropped)."""
    stacked = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    full = len(stacked) // batch_size
    if full == 0:
        raise HwnasError(f"{len(stacked)} calibration images do not fill one batch of {batch_size}")
    return tuple(stacked[i * batch_size : (i + 1) * batch_size] for i in range(full))
