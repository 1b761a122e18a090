"""An INT8 export: the run's child quantized on images of its own data set, and what INT8 costs it in accuracy.

``hwnas export model.onnx --precision int8 --run RUN`` exports the child in float32 (and checks
ONNX Runtime against PyTorch on it, as for a float export), then quantizes that file with the
recipe of ``hwnas.latency.quantize`` (static QDQ, per-channel int8 weights, uint8 activations),
calibrated on ``--calibration-images`` images drawn at random (a fixed seed) from the training
split of the data set the child was trained on, with the run's seed so the split is the run's.
The quantized file is what ships and what is measured. Both files then classify the run's
whole validation split through ONNX Runtime (CPU) in the artifact's batch: the float and INT8
top-1 accuracy side by side, and how often the two agree on the top-1 class.

``hwnas export model.pte --precision int8 --run RUN`` does the same for ExecuTorch: the float
program is exported and checked, the child is quantized with the XNNPACK quantizer on the same
images (``hwnas.latency.executorch_quantize``: PT2E, per-channel int8 weights, int8
activations) and lowered, and both programs classify the validation split through ExecuTorch.

Everything here is decided from the run before anything is written: a run that records no data
set, or one whose data set cannot be read here, is an error up front.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch import nn

from hwnas.data import load_data
from hwnas.errors import HwnasError
from hwnas.files import load_json, write_bytes_atomic
from hwnas.latency.executorch_program import load_program, run_program
from hwnas.latency.executorch_quantize import lower_int8, xnnpack_recipe
from hwnas.latency.quantize import (
    QUANTIZED_OPS,
    CalibrationSet,
    Recipe,
    calibration_arrays,
    onnxruntime_kernels,
    op_types,
    quantize_onnx,
)
from hwnas.run_folder import TRAIN_RESULT, TRAINED, RunFolder

DEFAULT_CALIBRATION_IMAGES = 256
#: seed of the draw of calibration images from the training split
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class Int8Plan:
    """How to quantize an export and what to score it on: the recipe, the calibration set, the validation split."""

    recipe: Recipe
    calibration: CalibrationSet
    calibration_info: dict[str, Any]
    val_images: np.ndarray  # [N, C, H, W] float32, normalised as in training
    val_labels: np.ndarray  # [N] int64

    def describe(self) -> str:
        info = self.calibration_info
        return (
            f"{self.recipe.format}, per-{'channel' if self.recipe.per_channel else 'tensor'} {self.recipe.weights} weights, "
            f"{self.recipe.activations} activations; {self.recipe.method} calibration on {info['images']} "
            f"{info['split']} images of {info['data']}"
        )


def run_data(run: RunFolder) -> tuple[str, int]:
    """The data spec and seed the run's child weights were trained with (``hwnas train``'s, else the search's)."""
    weights = run.weights_path()
    trained = run.path / TRAIN_RESULT
    if weights.name == TRAINED and trained.exists():
        result = load_json(trained)
        data, seed = result.get("data"), (result.get("config") or {}).get("seed")
    else:
        config = run.config()
        data, seed = config.get("data"), config.get("seed")
    if not isinstance(data, str) or not data:
        raise HwnasError(
            f"{run.path} records no data set to calibrate INT8 on; export it in float (--precision fp32), "
            "or fine-tune it with `hwnas train --run` on a data set first"
        )
    return data, int(seed) if isinstance(seed, int) else 0


def plan_int8(run: RunFolder, space_args: dict[str, Any], images: int, batch_size: int, recipe: Recipe) -> Int8Plan:
    """The calibration set (``images`` training images of the run's data set) and the validation split, read now."""
    if images < batch_size:
        raise HwnasError(f"--calibration-images {images} is fewer than one batch of {batch_size}")
    spec, seed = run_data(run)
    try:
        splits = load_data(spec, space_args["resolution"], space_args["in_channels"], seed)
    except HwnasError as error:
        raise HwnasError(f"cannot read {run.path}'s data set {spec!r} for INT8 calibration: {error}") from None
    train = splits.train
    count = min(images, len(train))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(CALIBRATION_SEED))[:count].tolist()
    calibration_images = [train[i][0].numpy() for i in order]
    batches = calibration_arrays(calibration_images, batch_size)
    used = len(batches) * batch_size
    info = {
        "data": spec,
        "split": "training",
        "images": used,
        "asked": images,
        "selection": f"uniform random draw without replacement, seed {CALIBRATION_SEED} (data split seed {seed})",
        "method": recipe.method,
    }
    val_images, val_labels = _stack(splits.val)
    calibration = CalibrationSet(batches, f"{used} training images of {spec}")
    return Int8Plan(recipe, calibration, info, val_images, val_labels)


def _stack(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    pairs = [dataset[i] for i in range(len(dataset))]
    if not pairs:
        raise HwnasError("the validation split is empty: nothing to score INT8 on")
    return np.stack([image.numpy() for image, _ in pairs]).astype(np.float32), np.array([label for _, label in pairs])


def int8_recipe(output: Path, method: str) -> Recipe:
    """The recipe that quantizes an export to ``output``: ONNX Runtime's for ``.onnx``, the XNNPACK quantizer's for ``.pte``."""
    if output.suffix == ".pte":
        return xnnpack_recipe(method)
    return Recipe(method=method)


def quantize_artifact(model: nn.Module, input_shape: tuple[int, ...], float_path: Path, output: Path, plan: Int8Plan) -> dict:
    """Quantize the child into ``output`` (atomically) with the plan's recipe and images; what the report says of the file.

    An ONNX file is quantized from the float file at ``float_path``; a ``.pte`` from the module
    itself (PT2E quantization works on the exported torch graph), at ``input_shape`` (batch included).
    """
    if output.suffix == ".pte":
        lowered = lower_int8(model, input_shape, plan.calibration, plan.recipe)
        write_bytes_atomic(output, lowered.program)
        return {**lowered.info(), "program_bytes": len(lowered.program)}
    quantize_onnx(float_path, plan.calibration, plan.recipe, output=output)
    return {"quantized_ops": sorted(op_types(output) & QUANTIZED_OPS), "onnxruntime_cpu_kernels": onnxruntime_kernels(output)}


def predictions(path: Path, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Top-1 classes of ``images`` under ONNX Runtime (CPU; an ``.onnx`` file) or ExecuTorch (this process; a ``.pte``),
    fed in batches of the model's fixed batch (the last padded)."""
    forward = _pte_forward(path) if path.suffix == ".pte" else _onnx_forward(path)
    classes = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        real = len(batch)
        if real < batch_size:  # the artifact's batch may be fixed: pad with zeros, keep the real rows
            batch = np.concatenate([batch, np.zeros((batch_size - real, *batch.shape[1:]), dtype=batch.dtype)])
        logits = forward(batch)
        classes.append(np.argmax(logits[:real], axis=1))
    return np.concatenate(classes)


def _onnx_forward(onnx_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def _pte_forward(pte_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    data = pte_path.read_bytes()
    loaded = load_program(data)

    def forward(batch: np.ndarray) -> np.ndarray:
        return run_program(loaded, [torch.from_numpy(batch)])[0].numpy()

    forward.program = data  # the loaded program reads its weights from these bytes: they live as long as it runs
    return forward


#: what scores the float and INT8 artifacts of each format
EVALUATED_WITH = {
    ".onnx": "onnxruntime CPUExecutionProvider, both files",
    ".pte": "executorch (XNNPACK, this process), both programs",
}


def compare_accuracy(float_path: Path, int8_path: Path, plan: Int8Plan, batch_size: int) -> dict[str, Any]:
    """Float and INT8 top-1 accuracy on the validation split, and the share of images where both pick the same class."""
    float_top1 = predictions(float_path, plan.val_images, batch_size)
    int8_top1 = predictions(int8_path, plan.val_images, batch_size)
    labels = plan.val_labels
    float_acc, int8_acc = float(np.mean(float_top1 == labels)), float(np.mean(int8_top1 == labels))
    return {
        "split": "validation",
        "images": len(labels),
        "float_acc": float_acc,
        "int8_acc": int8_acc,
        "drop_points": 100 * (float_acc - int8_acc),
        "top1_agreement": float(np.mean(float_top1 == int8_top1)),
        "evaluated_with": EVALUATED_WITH[int8_path.suffix],
    }


def accuracy_line(accuracy: dict[str, Any], data: str) -> str:
    return (
        f"accuracy   float {accuracy['float_acc']:.4f}, int8 {accuracy['int8_acc']:.4f} "
        f"({-accuracy['drop_points']:+.2f} points) on {accuracy['images']} validation images of {data}; "
        f"top-1 agreement {accuracy['top1_agreement']:.1%}"
    )


def contents_line(quantization: dict[str, Any]) -> str:
    """What the quantized artifact holds: the ONNX file's quantized ops and the kernels ONNX Runtime runs, or the
    quantize / dequantize ops inside the ``.pte``'s XNNPACK delegate and whether it took the whole program."""
    if "onnxruntime_cpu_kernels" in quantization:
        kernels = ", ".join(f"{count} {op}" for op, count in quantization["onnxruntime_cpu_kernels"].items())
        return f"the file holds {', '.join(quantization['quantized_ops'])}; ONNX Runtime (CPU) runs {kernels}"
    ops = (quantization.get("delegated_quantized_ops") or {}).items()  # quantized_decomposed.quantize_per_tensor.default
    inside = ", ".join(f"{count} {op.split('.')[1]}" for op, count in ops)
    left = f"; left to the portable kernels: {', '.join(quantization['portable_ops'])}" if quantization["portable_ops"] else ""
    whole = "the whole program" if quantization["delegated"] else "part of the program"
    return f"the XNNPACK delegate runs {whole}, holding {inside or 'no quantize / dequantize ops'}{left}"
