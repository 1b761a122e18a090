"""Export one module (a candidate op, a stem, a whole net) to ONNX in memory, for measuring it.

The module is exported in eval mode, so BatchNorm is folded into the conv before it ("the
fusions it gets inside the net"); ONNX Runtime then applies the same graph optimisations to
an op alone as to the whole net.

Exporter choice: the TorchScript-based exporter (``dynamo=False``) is 20-40x faster than the
``torch.export``-based one (``dynamo=True``) per op and per net, and gives the same optimised
graph once ONNX Runtime has folded constants (measured: docs/DESIGN.md, section 8). Profiling
exports every op of a space, so the legacy exporter is used by default with its deprecation warning silenced; if a later torch
drops it, ``dynamo`` is used instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.latency.threads import torch_threads

OPSET = 17
EXPORTERS = ("legacy", "dynamo")


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' deprecation warnings and progress lines (they would bury the progress bar)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                yield
        finally:
            logging.getLogger("torch.onnx").setLevel(previous)


@contextlib.contextmanager
def _one_thread():
    """Trace on one thread: tracing runs each op once on small tensors, where a second thread mostly waits.

    On a busy 2-core machine two threads made a whole net's export several times slower (docs/calibration.md).
    """
    with torch_threads(1):
        yield


def export_onnx_bytes(
    module: nn.Module, input_shape: tuple[int, ...], exporter: str = "legacy", opset: int = OPSET, dynamic_batch: bool = False
) -> bytes:
    """The ONNX model of ``module`` (eval mode, ``input_shape`` with batch) as bytes.

    With ``dynamic_batch`` the batch axis is symbolic; otherwise every shape is fixed.
    """
    if exporter not in EXPORTERS:
        raise HwnasError(f"unknown ONNX exporter {exporter!r}; known: {', '.join(EXPORTERS)}")
    module = module.eval()
    example = torch.randn(*input_shape)
    if exporter == "legacy":
        try:
            buffer = io.BytesIO()
            with _quiet(), _one_thread(), torch.no_grad():
                torch.onnx.export(
                    module,
                    (example,),
                    buffer,
                    dynamo=False,
                    opset_version=opset,
                    input_names=["input"],
                    output_names=["output"],
                    do_constant_folding=True,
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
                )
            return buffer.getvalue()
        except (TypeError, RuntimeError, AttributeError):
            pass  # no legacy exporter in this torch: fall through to dynamo
    with tempfile.TemporaryDirectory() as folder, _quiet(), _one_thread(), torch.no_grad():
        path = Path(folder) / "model.onnx"
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            opset_version=max(opset, 18),
            input_names=["input"],
            output_names=["output"],
            external_data=False,
            dynamic_shapes=dynamic_shapes,
        )
        return path.read_bytes()
