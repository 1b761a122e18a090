"""Export a child net as an ExecuTorch ``.pte`` program (XNNPACK delegate, float32) and prove it computes what PyTorch does.

The program is lowered from the net's own weights (never from the profiler's cache), written
atomically, loaded back by the wheel's runtime and run on the same random inputs as PyTorch;
the largest relative error must stay under ``PARITY_TOLERANCE`` (the same 1e-4 as the ONNX
export: XNNPACK's float32 kernels agreed with eager torch to about 1e-6 on these nets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.export.onnx_file import PARITY_TOLERANCE, Parity, compare_outputs
from hwnas.files import write_bytes_atomic
from hwnas.latency.executorch_program import DELEGATE, executorch_version, load_program, lower, run_program

__all__ = ["PARITY_TOLERANCE", "check_pte_parity", "export_pte"]


def export_pte(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> dict[str, Any]:
    """Write ``model`` (eval mode, ``input_shape`` with batch) as a ``.pte`` at ``path``; what the report records of it."""
    lowered = lower(model.eval(), tuple(input_shape))
    write_bytes_atomic(path, lowered.program)
    return {
        "format": "pte",
        "delegate": DELEGATE,
        **lowered.info(),
        "executorch": executorch_version(),
        "program_bytes": len(lowered.program),
    }


def check_pte_parity(
    model: nn.Module, pte_path: str | Path, input_shape: tuple[int, ...], trials: int = 3, seed: int = 0
) -> Parity:
    """Run the ``.pte`` (ExecuTorch, this process) and PyTorch on the same random inputs and compare the outputs."""
    data = Path(pte_path).read_bytes()  # kept alive while the loaded program runs
    loaded = load_program(data)

    def run(x: torch.Tensor) -> Any:
        try:
            return run_program(loaded, [x])[0].numpy()
        except Exception as error:  # the pybindings raise RuntimeError
            raise HwnasError(f"ExecuTorch could not run {pte_path}: {error}") from None

    parity = compare_outputs(model, run, "ExecuTorch", input_shape, trials, seed)
    del data
    return parity
