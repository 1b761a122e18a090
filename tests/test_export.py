"""Export: ONNX parity for both spaces, the measured verdict, refusal to overwrite, clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hwnas.arch import Arch
from hwnas.cli.export_commands import EXIT_FAIL
from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.export import check_parity, export_onnx
from hwnas.files import save_torch_atomic, write_json_atomic
from hwnas.latency import LatencyModel, LatencyTable, required_keys
from hwnas.latency.lookup import expected_meta
from hwnas.spaces import get_space

SMALL = {"resolution": 32, "num_classes": 10, "in_channels": 1, "width_mult": 0.5}
VERDICT_KEYS = {"budget_ms", "predicted_ms", "measured_ms", "measured_p90_ms", "verdict", "max_abs_error"}


@pytest.mark.parametrize("name", ["proxyless", "shufflenet"])
def test_exported_onnx_matches_pytorch(tmp_path, name):
    space = get_space(name, resolution=32, num_classes=10, in_channels=3)
    model = space.build(Arch.random(space, seed=11)).eval()
    for module in model.modules():  # non-trivial BN statistics, so folding them is actually tested
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = export_onnx(model, (1, 3, 32, 32), tmp_path / "m.onnx", dynamic_batch=True)
    parity = check_parity(model, path, (3, 3, 32, 32))  # batch 3 through the symbolic batch axis
    assert parity.max_rel_error < 1e-4 and parity.ok
    assert not list(tmp_path.glob(".*.tmp")), "the atomic export left a temporary file"


@pytest.fixture
def small_run(tmp_path) -> Path:
    """A run folder as ``hwnas search`` leaves it: arch, child weights, config and result."""
    space = get_space("proxyless", **SMALL)
    arch = Arch.random(space, seed=5)
    run = tmp_path / "run"
    run.mkdir()
    arch.save(run / "arch.json")
    save_torch_atomic(run / "child.pt", space.build(arch).state_dict())
    write_json_atomic(run / "config.json", {"runtime": "onnxruntime", "device": "cpu"})
    write_json_atomic(run / "result.json", {"budget_ms": 1000.0})
    return run


def _export(cli_runner, *args):
    return cli_runner.invoke(cli, ["export", *map(str, args), "--json", "--rounds", "1"])


def test_generous_budget_passes_and_impossible_fails_on_measurement(cli_runner, small_run, tmp_path):
    out = tmp_path / "m.onnx"
    passed = _export(cli_runner, out, "--run", small_run)
    assert passed.exit_code == 0, passed.output
    report = json.loads(passed.output)
    assert VERDICT_KEYS <= set(report) and report["verdict"] == "PASS" and report["budget_ms"] == 1000.0
    assert 0 < report["measured_ms"] <= report["measured_p90_ms"] and report["measured_runs"] > 0
    assert json.loads((tmp_path / "m.report.json").read_text())["verdict"] == "PASS"
    # an impossible budget: the measured latency, not a prediction, decides
    failed = _export(cli_runner, out, "--run", small_run, "--budget", "1us", "--force")
    assert failed.exit_code == EXIT_FAIL, failed.output
    report = json.loads(failed.output)
    assert report["verdict"] == "FAIL" and report["predicted_ms"] is None and report["measured_ms"] > 0.001


def test_nothing_is_overwritten_without_force(cli_runner, small_run, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    refused = _export(cli_runner, out, "--run", small_run)
    assert refused.exit_code == EXIT_ERROR and "--force" in refused.output
    assert out.read_bytes() == b"precious" and not (tmp_path / "m.report.json").exists()


def test_prediction_comes_from_the_table(cli_runner, small_run, tmp_path):
    space = get_space("proxyless", **SMALL)
    # a synthetic table (test fixture, not a measurement): 0.01 ms per key, calibrated 2x + 0.5
    meta = {**expected_meta("cpu", "onnxruntime", 1, False, space), "space": "proxyless", "threads": 1}
    table = LatencyTable(meta, {key: {"ms": 0.01, "p10": 0.01, "p90": 0.01, "n": 1} for key in required_keys(space)},
                         calibration={"a": 2.0, "b": 0.5})
    table.save(tmp_path / "table.json")
    arch = Arch.from_json((small_run / "arch.json").read_text())
    result = _export(cli_runner, tmp_path / "m.onnx", "--run", small_run, "--table", tmp_path / "table.json")
    assert result.exit_code == 0, result.output
    want = LatencyModel(LatencyTable.load(tmp_path / "table.json"), space).predict(arch)
    assert json.loads(result.output)["predicted_ms"] == pytest.approx(want)
    assert want == pytest.approx(2.0 * 0.01 * (2 + sum(op not in ("zero",) for op in arch.choices)) + 0.5)


def test_bad_inputs_give_clear_errors(cli_runner, small_run, tmp_path):
    out = tmp_path / "m.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    other = get_space("shufflenet", **SMALL)
    foreign = tmp_path / "foreign.pt"
    save_torch_atomic(foreign, other.build(Arch.random(other, 0)).state_dict())
    arch = Arch.from_json((small_run / "arch.json").read_text()).to_compact()
    cases = [
        (["--run", empty], "no derived child"),
        (["--arch", arch, "--weights", corrupt], "cannot be read as a state dict"),
        (["--arch", arch, "--weights", foreign], "does not fit this arch's net"),
        (["--arch", arch.rsplit("-", 1)[0]], "20 choices but space 'proxyless' has 21"),
        (["--run", small_run, "--budget", "fast"], "cannot read latency budget"),
    ]
    for args, message in cases:
        result = _export(cli_runner, out, *args)
        assert result.exit_code == EXIT_ERROR and message in result.output, (args, result.output)
    assert not out.exists()


def test_tensorrt_engine_is_built_and_measured(cli_runner, small_run, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT's Python package is not installed (extra 'tensorrt')")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU; none is present")
    out = tmp_path / "m.onnx"
    result = _export(cli_runner, out, "--run", small_run, "--runtime", "tensorrt", "--device", "cuda")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.engine").stat().st_size > 0 and json.loads(result.output)["measured_ms"] > 0
