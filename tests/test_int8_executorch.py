"""INT8 through ExecuTorch: PT2E quantization with the XNNPACK quantizer, INT8 tables, the INT8 ``.pte`` export.

Skipped where the executorch package is missing (``pip install -e '.[mobile]'``). Lowering takes
seconds per program on a 2-core machine: the quick tier quantizes one block; profiling a space,
validating it and exporting a trained child are marked slow. The INT8 ``.pte`` export with its
accuracies is tested beside the ONNX one in ``test_int8.py`` (they share the trained child).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.errors import HwnasError
from hwnas.latency import LatencyTable
from hwnas.spaces import get_space

pytest.importorskip("executorch.exir", reason="executorch is not installed: pip install -e '.[mobile]'")

from hwnas.latency.executorch_program import load_program, lower, run_program  # noqa: E402
from hwnas.latency.executorch_quantize import XNNPACK_RECIPE, lower_int8, xnnpack_recipe  # noqa: E402
from hwnas.latency.runtimes import get_runtime  # noqa: E402

SMALL = {"resolution": 32, "num_classes": 10, "in_channels": 1, "width_mult": 0.25}
QUICK = ["--rounds", "1", "--min-time", "0.01", "--warmup-time", "0.01", "--no-progress"]


@pytest.fixture(autouse=True)
def program_cache(tmp_path_factory, monkeypatch):
    """Lowered programs cached for the whole test session (all workers), never in the user's home."""
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path_factory.getbasetemp().parent / "hwnas-cache"))


def _outputs(program: bytes, x: torch.Tensor) -> np.ndarray:
    loaded = load_program(program)
    return run_program(loaded, [x])[0].numpy().astype(np.float64)


def test_an_int8_entry_is_quantized_inside_the_delegate_and_computes_near_float():
    space = get_space("proxyless", **SMALL)
    part = next(p for p in space.parts() if p.key.startswith("mb6_k3:") and ":s1:" in p.key)
    module, shape = part.build().eval(), (1, *part.input_shape)
    runtime = get_runtime("executorch", threads=1, precision="int8")
    runner = runtime.prepare_module(module, shape)
    inside = runner.info["delegated_quantized_ops"]
    assert runner.info["delegated"] is True and runner.info["portable_ops"] == []
    # three convolutions with per-channel weights, their activations quantized per tensor, all inside XNNPACK
    assert inside["quantized_decomposed.dequantize_per_channel.default"] == 3
    assert inside["quantized_decomposed.quantize_per_tensor.default"] >= 3
    float_lowered = lower(module, shape)
    assert "delegated_quantized_ops" not in float_lowered.info()  # a float program has none
    # the INT8 program computes the block within 8-bit error, and visibly not in float32 (which agrees to ~1e-6)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = module(x).numpy().astype(np.float64)
    scale = float(np.abs(want).max())
    int8_error = float(np.abs(_outputs(runtime.lowered(module, shape).program, x) - want).max()) / scale
    float_error = float(np.abs(_outputs(float_lowered.program, x) - want).max()) / scale
    assert float_error < 1e-4 and 1e-3 < int8_error < 0.15, (float_error, int8_error)


def test_calibration_decides_the_scales():
    """Calibrated on inputs 100 times larger, the activation scales (and so the outputs) of a small input change."""
    from hwnas.latency.quantize import CalibrationSet

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU()).eval()
    shape = (1, 1, 8, 8)
    rng = np.random.default_rng(0)
    small = CalibrationSet(tuple(rng.standard_normal(shape).astype(np.float32) for _ in range(4)), "N(0, 1)")
    large = CalibrationSet(tuple(100 * batch for batch in small.batches), "N(0, 100^2)")
    x = torch.from_numpy(small.batches[0])
    with torch.no_grad():
        want = module(x).numpy()
    fit, wide = (_outputs(lower_int8(module, shape, c).program, x) for c in (small, large))
    scale = float(np.abs(want).max())
    assert np.abs(fit - want).max() < 0.02 * scale < np.abs(wide - want).max()


def test_the_int8_runtime_records_its_recipe_and_refuses_other_methods():
    meta = get_runtime("executorch", threads=1, precision="int8").meta()
    assert meta["dtype"] == "int8" and meta["delegate"] == "XnnpackPartitioner"
    recipe = meta["quantization"]
    assert recipe == {**XNNPACK_RECIPE.to_dict(), "calibration": recipe["calibration"]}
    assert recipe["per_channel"] and recipe["weights"] == recipe["activations"] == "int8" and "random" in recipe["calibration"]
    with pytest.raises(HwnasError, match="calibrates with minmax here"):
        xnnpack_recipe("entropy")
    with pytest.raises(HwnasError, match="executorch runtime has no FP16 path"):
        get_runtime("executorch", fp16=True)


def test_int8_pte_export_with_another_calibration_method_is_refused_before_writing(cli_runner, tmp_path):
    from test_int8 import _run_folder

    run = _run_folder(tmp_path, {"runtime": "executorch", "device": "cpu", "data": "digits", "seed": 0})
    out = tmp_path / "out" / "m.pte"
    out.parent.mkdir()
    result = cli_runner.invoke(
        cli, ["export", str(out), "--run", str(run), "--precision", "int8", "--calibration-method", "entropy"]
    )
    assert result.exit_code == EXIT_ERROR and "calibrates with minmax here" in result.output, result.output
    assert list(out.parent.iterdir()) == []


TINY_SPACE = """
name = "int8tiny"
resolution = 32
in_channels = 1
num_classes = 10
width_mult = 0.25
[stem]
channels = 16
[[stages]]
channels = 24
repeats = 1
stride = 2
ops = ["mb3_k3", "mb6_k5"]
[[stages]]
channels = 40
repeats = 1
stride = 2
ops = ["mb3_k3", "mb6_k5"]
[head]
channels = 64
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # lowers ~15 INT8 programs: minutes on 2 shared cores
def test_profile_and_validate_an_int8_table_through_executorch(cli_runner, tmp_path):
    space_file = tmp_path / "int8tiny.toml"
    space_file.write_text(TINY_SPACE)
    table_path = tmp_path / "t8.json"
    args = ["--space", str(space_file), "--runtime", "executorch", "--precision", "int8", *QUICK]
    result = cli_runner.invoke(cli, ["profile", *args, "--no-validate", "-o", str(table_path)])
    assert result.exit_code == 0, result.output
    table = LatencyTable.load(table_path)
    assert table.meta["runtime"] == "executorch" and table.meta["dtype"] == "int8"
    assert table.meta["quantization"]["format"] == "PT2E" and "random" in table.meta["quantization"]["calibration"]
    ops = [entry for key, entry in table.entries.items() if key.startswith(("mb", "stem", "head"))]
    assert len(ops) == 6 and all(entry["delegated"] is True for entry in table.entries.values())
    # every entry with a convolution holds quantize / dequantize ops inside the delegate: INT8 was timed, not float
    assert all(entry["delegated_quantized_ops"]["quantized_decomposed.dequantize_per_channel.default"] >= 1 for entry in ops)
    checked = cli_runner.invoke(cli, ["tables", "validate", str(table_path), "--n", "4", *QUICK, "--json"])
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["n"] == 4 and report["mape"] >= 0 and not any("partly delegated" in w for w in report["warnings"])
    assert LatencyTable.load(table_path).meta["dtype"] == "int8"
    wrong = cli_runner.invoke(cli, ["tables", "validate", str(table_path), "--n", "4", *QUICK, "--precision", "fp32"])
    assert wrong.exit_code == EXIT_ERROR and "--precision int8" in wrong.output
