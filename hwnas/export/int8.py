"""An INT8 export: the run's child quantized on images of its own data set, and what INT8 costs it in accuracy.

``hwnas export model.onnx --precision int8 --run RUN`` exports the child in float32 (and checks
ONNX Runtime against PyTorch on it, as for a float export), then quantizes that file with the
recipe of ``hwnas.latency.quantize`` (static QDQ, per-channel int8 weights, uint8 activations),
calibrated on ``--calibration-images`` images drawn at random (a fixed seed) from the training
split of the data set the child was trained on, with the run's seed so the split is the run's.
The quantized file is what ships and what is measured. Both files then classify the run's
whole validation split through ONNX Runtime (CPU) in the artifact's batch: the float and INT8
top-1 accuracy side by side, and how often the two agree on the top-1 class.

Everything here is decided from the run before anything is written: a run that records no data
set, or one whose data set cannot be read here, is an error up front.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from hwnas.data import load_data
from hwnas.errors import HwnasError
from hwnas.files import load_json
from hwnas.latency.quantize import CalibrationSet, Recipe, calibration_arrays, quantize_onnx
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


def quantize_artifact(float_path: Path, output: Path, plan: Int8Plan) -> Path:
    """Quantize the float ONNX file at ``float_path`` into ``output`` (atomically) with the plan's recipe and images."""
    quantize_onnx(float_path, plan.calibration, plan.recipe, output=output)
    return output


def predictions(onnx_path: Path, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Top-1 classes of ``images`` under ONNX Runtime (CPU), fed in batches of the model's fixed batch (the last padded)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    classes = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        real = len(batch)
        if real < batch_size:  # the artifact's batch may be fixed: pad with zeros, keep the real rows
            batch = np.concatenate([batch, np.zeros((batch_size - real, *batch.shape[1:]), dtype=batch.dtype)])
        logits = session.run(None, {name: batch})[0]
        classes.append(np.argmax(logits[:real], axis=1))
    return np.concatenate(classes)


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
        "evaluated_with": "onnxruntime CPUExecutionProvider, both files",
    }


def accuracy_line(accuracy: dict[str, Any], data: str) -> str:
    return (
        f"accuracy   float {accuracy['float_acc']:.4f}, int8 {accuracy['int8_acc']:.4f} "
        f"({-accuracy['drop_points']:+.2f} points) on {accuracy['images']} validation images of {data}; "
        f"top-1 agreement {accuracy['top1_agreement']:.1%}"
    )
