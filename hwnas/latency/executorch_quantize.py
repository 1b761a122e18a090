"""Post-training static INT8 for ExecuTorch: PT2E quantization with the XNNPACK quantizer, then XNNPACK lowering.

ExecuTorch's documented path for a quantized XNNPACK program, one recipe for every INT8
``.pte`` hwnas measures or ships (a table entry, a net of ``tables validate``, an exported child):

* ``torch.export`` the float module (eval mode), ``prepare_pt2e`` it with ``XNNPACKQuantizer``
  set to ``get_symmetric_quantization_config(is_per_channel=True)``: int8 weights, symmetric,
  **per output channel**; int8 activations, per tensor, affine (XNNPACK's ``qs8`` kernels);
* run the calibration inputs through the prepared module, ``convert_pt2e`` (the observers
  become quantize / dequantize pairs around each quantized op), ``torch.export`` the result
  and lower it with the ``XnnpackPartitioner`` (``hwnas.latency.executorch_program.lower_exported``),
  which fuses each DQ -> op -> Q group into an integer XNNPACK kernel.

Deviation from the quantizer's default config, and why: the activation observer is
``MinMaxObserver`` (``--calibration-method minmax``, the observed minimum and maximum), not
its ``HistogramObserver``, so a method name means the same on every runtime (ONNX Runtime's
recipe defaults to MinMax) and calibration stays cheap; weights keep the config's
``PerChannelMinMaxObserver``. Other methods are refused for ExecuTorch (``xnnpack_recipe``).

Calibration sets are those of ``hwnas.latency.quantize``: a table entry and a validated net see
``RANDOM_SAMPLES`` random N(0, 1) inputs of their own shape (an integer kernel's time does not
depend on the scales), an exported child real training images of its run (``hwnas.export.int8``).

A lowered program records, as a float one does, whether XNNPACK took all of it
(``delegated``, ``portable_ops``), and the quantize / dequantize ops inside the delegate
(``delegated_quantized_ops``): none there means nothing was quantized.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas.latency.executorch_program import Lowered, import_executorch, lower_exported
from hwnas.latency.quantize import CalibrationSet, Recipe, random_calibration

#: ``--calibration-method`` values the XNNPACK path has -> torchao.quantization.pt2e observer
OBSERVERS = {"minmax": "MinMaxObserver"}
TOOL = "executorch XNNPACKQuantizer (symmetric, per-channel) + torchao prepare_pt2e / convert_pt2e"


def xnnpack_recipe(method: str = "minmax") -> Recipe:
    """The recipe of ExecuTorch INT8 programs calibrated with ``method`` (only ``minmax`` here)."""
    if method not in OBSERVERS:
        raise HwnasError(
            f"--calibration-method {method}: the ExecuTorch (XNNPACK) INT8 path calibrates with "
            f"{', '.join(OBSERVERS)} here; use --calibration-method {next(iter(OBSERVERS))}, or export an .onnx file"
        )
    return Recipe(method=method, per_channel=True, format="PT2E", weights="int8", activations="int8", tool=TOOL)


#: the recipe of table entries and validated nets
XNNPACK_RECIPE = xnnpack_recipe()


def _quantization_config(recipe: Recipe) -> Any:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization import pt2e

    config = get_symmetric_quantization_config(is_per_channel=recipe.per_channel)
    observer = getattr(pt2e, OBSERVERS[recipe.method]).with_args(eps=2**-12)  # the config's own eps
    activations = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer)
    return dataclasses.replace(config, input_activation=activations, output_activation=activations)


def quantize_exported(module: Any, input_shape: tuple[int, ...], calibration: CalibrationSet, recipe: Recipe = XNNPACK_RECIPE):
    """``module`` quantized for XNNPACK (an ``ExportedProgram`` ready to lower), calibrated on ``calibration``."""
    import_executorch()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module = module.eval().float()
    example = (torch.randn(*input_shape),)
    try:
        with torch.no_grad():
            graph = torch.export.export(module, example).module()
            quantizer = XNNPACKQuantizer()
            quantizer.set_global(_quantization_config(recipe))
            prepared = prepare_pt2e(graph, quantizer)
            for batch in calibration.batches:
                prepared(torch.as_tensor(batch))
            converted = convert_pt2e(prepared)
            return torch.export.export(converted, example)
    except Exception as error:  # torch.export and the quantizer raise many types; the message says what failed
        raise HwnasError(f"INT8 quantization of {type(module).__name__} at {list(input_shape)} failed: {error}") from None


@functools.cache
def cache_variant(recipe: Recipe = XNNPACK_RECIPE) -> str:
    """What an INT8 program depends on beyond the float program's cache key: the recipe and this module's code."""
    source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return f"int8:{json.dumps(recipe.to_dict(), sort_keys=True)}:{source}"


def lower_int8(
    module: Any, input_shape: tuple[int, ...], calibration: CalibrationSet | None = None, recipe: Recipe = XNNPACK_RECIPE
) -> Lowered:
    """``module`` at ``input_shape`` as an INT8 XNNPACK ``.pte`` (calibrated on random inputs of its shape by default)."""
    calibration = calibration or random_calibration(tuple(input_shape))
    exported = quantize_exported(module, tuple(input_shape), calibration, recipe)
    return lower_exported(exported, f"INT8 {type(module).__name__} at {list(input_shape)}")
