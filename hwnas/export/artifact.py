"""Export a child net, check it, build the engine where asked, and measure the artifact itself.

The number that decides PASS or FAIL is measured on the file that ships (the ONNX model, or
the TensorRT engine built from it), with the profiler's protocol, not predicted.

An INT8 export (``int8=`` an ``Int8Plan``, ``hwnas.export.int8``) ships the quantized ONNX
file or ``.pte`` program: the float export is checked against PyTorch first, then quantized on the plan's images;
both are scored on the validation split, and the quantized file is what is measured (TensorRT
builds its INT8 engine from it, reading its QDQ scales).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from torch import nn

from hwnas import __version__
from hwnas.errors import HwnasError
from hwnas.export.drift import Drift, Reference
from hwnas.export.int8 import Int8Plan, compare_accuracy, quantize_artifact
from hwnas.export.onnx_file import OPSET, PARITY_TOLERANCE, check_parity, export_onnx
from hwnas.export.pte_file import check_pte_parity, export_pte
from hwnas.export.verdict import Verdict, extra_rounds
from hwnas.files import refuse_overwrite, remove_stale_temps, write_json_atomic
from hwnas.latency.precision import PRECISIONS
from hwnas.latency.protocol import Protocol, Timing, combine_rounds
from hwnas.latency.runtimes import build_engine, get_runtime

#: output suffix -> the runtimes that measure that format (the first is the default); ``.engine`` exports the
#: ONNX file and builds the engine from it (``hwnas export m.engine`` is ``hwnas export m.onnx --runtime tensorrt``)
FORMATS = {".onnx": ("onnxruntime", "tensorrt", "torch"), ".pte": ("executorch",)}


def output_format(output: Path, runtime: str | None) -> tuple[Path, str]:
    """The file to write and the runtime that measures it, from the output's suffix and the runtime asked for.

    ``m.engine`` is the ONNX file ``m.onnx`` plus its TensorRT engine ``m.engine``.
    """
    if output.suffix == ".engine":
        if runtime not in (None, "tensorrt"):
            raise HwnasError(f"{output}: a TensorRT engine is measured with --runtime tensorrt, not {runtime}")
        return output.with_suffix(".onnx"), "tensorrt"
    return output, runtime or FORMATS.get(output.suffix, ("onnxruntime",))[0]


@dataclass
class ExportRequest:
    output: Path
    runtime: str = "onnxruntime"
    device: str = "cpu"
    threads: int | None = 1
    precision: str = "fp32"
    batch_size: int = 1
    dynamic_batch: bool = False
    rounds: int = 3
    force: bool = False
    #: options of the measuring runtime (``adb``, ``serial``, ``runner`` for executorch on android)
    runtime_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise HwnasError(f"threads must be at least 1 (or None for the runtime's default), got {self.threads}")
        if self.rounds < 1 or self.batch_size < 1:
            raise HwnasError(f"rounds and batch size must be at least 1, got {self.rounds} and {self.batch_size}")
        if self.output.suffix not in FORMATS:
            raise HwnasError(f"{self.output}: the output must be a {', '.join(FORMATS)} file (its suffix chooses the format)")
        if self.runtime not in FORMATS[self.output.suffix]:
            raise HwnasError(
                f"{self.output}: a {self.output.suffix} file is measured with --runtime "
                f"{' or '.join(FORMATS[self.output.suffix])}, not {self.runtime}"
            )
        if self.device == "android" and self.runtime != "executorch":
            raise HwnasError(
                f"--device android measures .pte programs with --runtime executorch; name the output {self.output.stem}.pte"
            )
        if self.output.suffix == ".pte" and self.dynamic_batch:
            raise HwnasError("--dynamic-batch: a .pte program is exported at a fixed batch (--batch-size)")
        if self.precision not in PRECISIONS:
            raise HwnasError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS)}")

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    def staged(self) -> ExportRequest:
        """The same request writing to temporary names beside the outputs (``commit`` moves them into place)."""
        suffix = self.output.suffix
        return replace(self, output=self.output.with_name(f".{self.output.stem}.{os.getpid()}.tmp{suffix}"), force=True)

    def commit(self, staged: ExportRequest) -> None:
        """Move the staged set over the outputs: the report last, so a report always describes the files beside it."""
        for source, target in zip(staged.outputs(), self.outputs()):
            os.replace(source, target)

    @property
    def engine_path(self) -> Path | None:
        return self.output.with_suffix(".engine") if self.runtime == "tensorrt" else None

    @property
    def report_path(self) -> Path:
        return self.output.with_suffix(".report.json")

    def outputs(self) -> list[Path]:
        return [p for p in (self.output, self.engine_path, self.report_path) if p is not None]


@dataclass
class ExportReport:
    verdict: Verdict
    max_rel_error: float
    files: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    drift: Drift | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.verdict.to_dict(), "max_rel_error": self.max_rel_error, "files": self.files, **self.details}


@dataclass(frozen=True)
class Measured:
    """The artifact's timing and its references', over every round, and what the first ``rounds - extra_rounds`` read."""

    artifact: Timing
    references: list[Timing]
    runtime: dict[str, Any]
    rounds: int
    extra_rounds: int
    first_ms: float


def measure_artifact(
    request: ExportRequest,
    input_shape: tuple[int, ...],
    model: nn.Module,
    references: Sequence[nn.Module] = (),
    budget_ms: float | None = None,
) -> Measured:
    """Time what ships: the ONNX file (onnxruntime), its engine (tensorrt) or the module (torch).

    ``references`` (modules) are prepared by the same runtime and timed in the same
    interleaved rounds, so they see the machine exactly as the artifact does. A first reading
    that is a close call against ``budget_ms`` (``verdict.extra_rounds``) is followed by more
    rounds of every item, and every timing is over all rounds.
    """
    runtime = get_runtime(
        request.runtime,
        request.device,
        request.threads,
        protocol=Protocol(rounds=request.rounds),
        precision=request.precision,
        **request.runtime_options,
    )
    if request.runtime == "executorch":
        artifact = runtime.prepare_pte(request.output, input_shape)
    elif request.runtime == "torch":
        artifact = runtime.prepare_module(model, input_shape)
    elif request.runtime == "tensorrt":
        assert request.engine_path is not None
        build_engine(request.output, request.engine_path, input_shape=input_shape, precision=request.precision)
        artifact = runtime.prepare_onnx(request.engine_path, input_shape)
    else:
        artifact = runtime.prepare_onnx(request.output, input_shape)
    runners = [artifact, *(runtime.prepare_module(reference.eval(), input_shape) for reference in references)]
    rounds: list[list[Timing]] = [[] for _ in runners]
    record = lambda item, _round, timing: rounds[item].append(timing)  # noqa: E731
    runtime.measure(runners, on_measured=record)
    first_ms = combine_rounds(rounds[0]).median_ms
    extra = extra_rounds(first_ms, budget_ms, request.rounds)
    if extra:
        runtime.measure(runners, rounds=extra, on_measured=record)
    timings = [combine_rounds(item) for item in rounds]
    return Measured(timings[0], timings[1:], runtime.meta(), request.rounds + extra, extra, first_ms)


def export_and_verify(
    model: nn.Module,
    input_shape: tuple[int, ...],
    request: ExportRequest,
    budget_ms: float | None,
    predicted_ms: float | None,
    source: dict[str, Any],
    references: Sequence[Reference] = (),
    int8: Int8Plan | None = None,
) -> ExportReport:
    """Export ``model`` to ``request.output``, check parity, measure, judge; save the report beside it.

    ``input_shape`` is (C, H, W); the batch comes from the request. Existing outputs are
    refused before any work unless ``request.force``. Everything is written under temporary
    names first and moved into place together at the end, so a failed export (bad parity, a
    runtime error, an interruption) leaves an earlier set of outputs as it was. ``references``
    (nets the table's validation measured) are timed beside the artifact to measure the
    machine's drift. ``int8`` (with ``request.precision == "int8"``) quantizes the file before it is measured.
    """
    if (int8 is not None) != (request.precision == "int8"):
        raise HwnasError("an INT8 export needs both precision int8 and an Int8Plan (the calibration images)")
    for path in request.outputs():
        refuse_overwrite(path, request.force)
    remove_stale_temps(request.output.with_name(request.output.stem))  # an earlier export's, killed while staging
    staged = request.staged()
    try:
        report = _export_staged(model, input_shape, staged, request.output, budget_ms, predicted_ms, source, references, int8)
        report.files = [str(p) for p in (request.output, request.engine_path) if p is not None]
        write_json_atomic(staged.report_path, report.to_dict())
        request.commit(staged)
    finally:
        for path in staged.outputs():
            path.unlink(missing_ok=True)
    return report


def _export_staged(
    model: nn.Module,
    input_shape: tuple[int, ...],
    request: ExportRequest,
    final: Path,
    budget_ms: float | None,
    predicted_ms: float | None,
    source: dict[str, Any],
    references: Sequence[Reference],
    int8: Int8Plan | None = None,
) -> ExportReport:
    shape = (request.batch_size, *input_shape)
    model = model.eval()
    if request.output.suffix == ".pte":
        written = export_pte(model, shape, request.output)
        parity, checker = check_pte_parity(model, request.output, shape), "ExecuTorch"
    else:
        export_onnx(model, shape, request.output, request.dynamic_batch)
        written = {"format": "onnx", "opset": OPSET, "dynamic_batch": request.dynamic_batch}
        parity, checker = check_parity(model, request.output, shape), "ONNX Runtime"
    if not parity.ok:
        kept = final.with_name(f"{final.stem}.parity-failed{final.suffix}")
        os.replace(request.output, kept)
        raise HwnasError(
            f"{checker}'s outputs differ from PyTorch's (max abs error {parity.max_abs_error:.3g}, relative "
            f"{parity.max_rel_error:.3g} >= {PARITY_TOLERANCE:g}); nothing was exported, the file is kept as {kept}"
        )
    quantization = None if int8 is None else _quantize_staged(request, int8, model, shape)
    if quantization is not None and request.output.suffix == ".pte":  # what the file says of delegation: the INT8 program's
        shipped = quantization["quantization"]
        written.update({key: shipped[key] for key in ("delegated", "portable_ops", "program_bytes")})
    reference_nets = [reference.arch.build() for reference in references]
    measured = measure_artifact(request, shape, model, reference_nets, budget_ms)
    timing, reference_timings, runtime_meta = measured.artifact, measured.references, measured.runtime
    verdict = Verdict(
        budget_ms,
        predicted_ms,
        timing.median_ms,
        timing.p90_ms,
        parity.max_abs_error,
        measured.rounds,
        measured.extra_rounds,
        measured.first_ms if measured.extra_rounds else None,
    )
    drift = (
        Drift([(r.arch.to_compact(), r.validated_ms, t.median_ms) for r, t in zip(references, reference_timings)])
        if references
        else None
    )
    files = [str(p) for p in (request.output, request.engine_path) if p is not None]
    details = {
        **written,
        "input_shape": list(shape),
        "precision": request.precision,
        **({} if quantization is None else quantization),
        "measured_p10_ms": timing.p10_ms,
        "measured_runs": timing.n,
        "runtime": runtime_meta,
        "drift": None if drift is None else drift.to_dict(predicted_ms),
        "source": source,
        "versions": {
            "hwnas": __version__,
            "torch": torch.__version__,
            "onnx": importlib.metadata.version("onnx"),
            "onnxruntime": onnxruntime.__version__,
            **({"executorch": written["executorch"]} if "executorch" in written else {}),
        },
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return ExportReport(verdict, parity.max_rel_error, files, details, drift)


def _quantize_staged(request: ExportRequest, int8: Int8Plan, model: nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    """Replace the staged float file by its INT8 model; score both on the validation split; the report's part on it."""
    suffix = request.output.suffix
    float_copy = request.output.with_name(request.output.name.removesuffix(suffix) + ".float" + suffix)
    os.replace(request.output, float_copy)
    try:
        shipped = quantize_artifact(model, shape, float_copy, request.output, int8)
        accuracy = compare_accuracy(float_copy, request.output, int8, request.batch_size)
    finally:
        float_copy.unlink(missing_ok=True)
    return {
        "quantization": {
            **int8.recipe.to_dict(),
            "calibration": int8.calibration_info,
            **shipped,
            "described": int8.describe(),
        },
        "accuracy": accuracy,
    }
