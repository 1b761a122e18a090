"""Export a child net to ONNX, check the file, and prove ONNX Runtime computes what PyTorch does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.files import write_bytes_atomic
from hwnas.latency.onnx_export import export_onnx_bytes

#: the opset every export uses (recorded in the report); 18 is what ONNX Runtime and TensorRT 10 both run
OPSET = 18
#: largest relative error (max |ort - torch| / max |torch|) tolerated in float32
PARITY_TOLERANCE = 1e-4


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, dynamic_batch: bool = False) -> Path:
    """Write ``model`` (in eval mode: BN folds into the convs) as ONNX at ``path``, checked, atomically.

    The artifact goes through the ``torch.export``-based exporter at ``OPSET``; ``input_shape``
    includes the batch, and with ``dynamic_batch`` the batch axis is symbolic.
    """
    import onnx

    try:
        data = export_onnx_bytes(model, input_shape, exporter="dynamo", opset=OPSET, dynamic_batch=dynamic_batch)
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except HwnasError:
        raise
    except Exception as error:
        raise HwnasError(f"ONNX export to {path} failed: {error}") from error
    write_bytes_atomic(path, data)
    return Path(path)


@dataclass(frozen=True)
class Parity:
    max_abs_error: float
    max_rel_error: float  # max |ort - torch| over max |torch|, per trial, worst trial
    trials: int

    @property
    def ok(self) -> bool:
        return self.max_rel_error < PARITY_TOLERANCE


def check_parity(model: nn.Module, onnx_path: str | Path, input_shape: tuple[int, ...], trials: int = 3, seed: int = 0) -> Parity:
    """Run ONNX Runtime (CPU) and PyTorch on the same random inputs and compare the outputs."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return compare_outputs(model, lambda x: session.run(None, {name: x.numpy()})[0], "ONNX", input_shape, trials, seed)


def compare_outputs(
    model: nn.Module, run: Callable[[torch.Tensor], Any], runtime: str, input_shape: tuple[int, ...], trials: int, seed: int
) -> Parity:
    """``run`` (a runtime's output for an input, as an array) against PyTorch on ``trials`` seeded random inputs."""
    generator = torch.Generator().manual_seed(seed)
    model = model.eval()
    worst_abs = worst_rel = 0.0
    for _ in range(trials):
        x = torch.randn(*input_shape, generator=generator)
        with torch.no_grad():
            want = model(x).numpy().astype(np.float64)
        got = np.asarray(run(x)).astype(np.float64)
        if got.shape != want.shape:
            raise HwnasError(f"{runtime} output shape {got.shape} differs from PyTorch's {want.shape}")
        error = float(np.abs(got - want).max())
        worst_abs = max(worst_abs, error)
        worst_rel = max(worst_rel, error / max(float(np.abs(want).max()), 1e-12))
    return Parity(worst_abs, worst_rel, trials)
