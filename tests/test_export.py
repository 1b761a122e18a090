"""Export: ONNX parity for both spaces, the measured verdict, refusal to overwrite, clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hwnas.arch import Arch
from hwnas.cli.export_commands import EXIT_FAIL
from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.errors import HwnasError
from hwnas.export import check_parity, export_onnx
from hwnas.export.drift import Drift, pick_references
from hwnas.files import save_torch_atomic, write_json_atomic
from hwnas.latency import LatencyModel, LatencyTable, required_keys
from hwnas.latency.lookup import expected_meta
from hwnas.spaces import get_space

SMALL = {"resolution": 32, "num_classes": 10, "in_channels": 1, "width_mult": 0.5}
VERDICT_KEYS = {"budget_ms", "predicted_ms", "measured_ms", "measured_p90_ms", "verdict", "max_abs_error"}


@pytest.mark.parametrize("name", ["proxyless", "shufflenet"])
def test_exported_onnx_matches_pytorch(tmp_path, name):
    space = get_space(name, resolution=32, num_classes=10, in_channels=3)
    model = Arch.random(space, seed=11).build().eval()
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
    save_torch_atomic(run / "child.pt", space.build(arch.choices).state_dict())
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
    _synthetic_table(space, calibration={"a": 2.0, "b": 0.5}).save(tmp_path / "table.json")
    arch = Arch.from_json((small_run / "arch.json").read_text())
    result = _export(cli_runner, tmp_path / "m.onnx", "--run", small_run, "--table", tmp_path / "table.json")
    assert result.exit_code == 0, result.output
    want = LatencyModel(LatencyTable.load(tmp_path / "table.json"), space).predict(arch)
    assert json.loads(result.output)["predicted_ms"] == pytest.approx(want)
    assert want == pytest.approx(2.0 * 0.01 * (2 + sum(op not in ("zero",) for op in arch.choices)) + 0.5)


def test_a_prediction_under_the_budget_does_not_pass_a_measurement_over_it(cli_runner, small_run, tmp_path):
    """The table predicts 1000x under the real latency: the verdict must follow the measurement, not the table."""
    space = get_space("proxyless", **SMALL)
    _synthetic_table(space, calibration={"a": 0.001, "b": 0.0}).save(tmp_path / "table.json")
    result = _export(cli_runner, tmp_path / "m.onnx", "--run", small_run, "--table", tmp_path / "table.json", "--budget", "1us")
    assert result.exit_code == EXIT_FAIL, result.output
    report = json.loads(result.output)
    assert report["budget_ms"] == pytest.approx(0.001)
    assert report["predicted_ms"] < report["budget_ms"] < report["measured_ms"]
    assert report["verdict"] == "FAIL"


@pytest.mark.parametrize(
    ("first", "then", "verdict"),
    [(1.04, 0.90, "PASS"), (0.96, 1.10, "FAIL"), (1.50, None, "FAIL")],
)
def test_a_close_call_is_measured_again_and_judged_on_every_round(
    cli_runner, small_run, tmp_path, monkeypatch, first, then, verdict
):
    """The artifact's rounds read ``first`` x budget, then ``then`` x budget: a first reading within 10 % of the budget,
    either side, gets 6 more rounds and the verdict is their median; a clear one is judged as it is (real ONNX file and
    session, scripted clock readings)."""
    from hwnas.latency import protocol

    readings = iter([first] * 3 + ([then] * 6 if then is not None else []))
    monkeypatch.setattr(
        protocol, "measure_once", lambda runner, proto, warm=True: protocol.Timing.from_samples([next(readings)] * 20)
    )
    result = cli_runner.invoke(cli, ["export", str(tmp_path / "m.onnx"), "--run", str(small_run), "--budget", "1ms", "--json"])
    assert result.exit_code == (0 if verdict == "PASS" else EXIT_FAIL), result.output
    report = json.loads(result.output)
    assert report["verdict"] == verdict
    assert next(readings, None) is None, "fewer rounds measured than the rule asks for"
    if then is None:
        assert (report["rounds"], report["extra_rounds"], report["first_ms"]) == (3, 0, None)
        assert report["measured_ms"] == pytest.approx(first)
    else:
        assert (report["rounds"], report["extra_rounds"], report["first_ms"]) == (9, 6, pytest.approx(first))
        assert report["measured_ms"] == pytest.approx(then)  # the median of 3 readings of first and 6 of then
    if verdict == "PASS":  # what a person reads
        readings = iter([first] * 3 + [then] * 6)
        shown = cli_runner.invoke(
            cli, ["export", str(tmp_path / "m.onnx"), "--run", str(small_run), "--budget", "1ms", "--force"]
        )
        assert "a close call: the first 3 rounds read 1.040 ms, within 10% of the budget; 6 more" in shown.output, shown.output


def test_bad_inputs_give_clear_errors(cli_runner, small_run, tmp_path):
    out = tmp_path / "m.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"")
    whole_model = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), whole_model)  # the model object, not its state dict
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    other = get_space("shufflenet", **SMALL)
    foreign = tmp_path / "foreign.pt"
    save_torch_atomic(foreign, Arch.random(other, 0).build().state_dict())
    arch = Arch.from_json((small_run / "arch.json").read_text()).to_compact()
    cases = [
        (["--run", empty], "not a search run folder"),
        (
            ["--run", unfinished],
            f"no derived child (no arch.json): has its search finished? (`hwnas search --resume {unfinished}`)",
        ),
        (["--arch", arch, "--weights", corrupt], "cannot be read as a state dict: not a PyTorch file (Unsupported operand"),
        (["--arch", arch, "--weights", truncated], "cannot be read as a state dict: EOFError (empty or cut short?)"),
        (
            ["--arch", arch, "--weights", whole_model],
            "it holds a Python object (torch.nn.modules.linear.Linear), not only tensors: save model.state_dict(), not the model",
        ),
        (["--arch", arch, "--weights", foreign], "does not fit this arch's net"),
        (["--arch", arch.rsplit("-", 1)[0]], "20 choices but space 'proxyless' has 21"),
        (["--run", small_run, "--budget", "fast"], "cannot read latency budget"),
    ]
    for args, message in cases:
        result = _export(cli_runner, out, *args)
        assert result.exit_code == EXIT_ERROR and message in result.output, (args, result.output)
        assert "weights_only" not in result.output  # never the advice to load untrusted pickles
    assert not out.exists()


def test_tensorrt_engine_is_built_and_measured(cli_runner, small_run, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT's Python package is not installed (extra 'tensorrt')")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU; none is present")
    out = tmp_path / "m.onnx"
    result = _export(cli_runner, out, "--run", small_run, "--runtime", "tensorrt", "--device", "cuda")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.engine").stat().st_size > 0 and json.loads(result.output)["measured_ms"] > 0


def _synthetic_table(space, calibration: dict | None = None) -> LatencyTable:
    """A table for this machine (test fixture, not a measurement): 0.01 ms per entry."""
    meta = {**expected_meta("cpu", "onnxruntime", 1, False, space), "space": space.name, "threads": 1}
    entries = {key: {"ms": 0.01, "p10": 0.01, "p90": 0.01, "n": 1} for key in required_keys(space)}
    return LatencyTable(meta, entries, calibration=calibration)


def _validated_table(tmp_path: Path, space, archs: list[Arch], validated_ms: list[float]) -> Path:
    """The synthetic table, as if its validation had measured ``archs`` at ``validated_ms`` (and fitted the identity)."""
    table = _synthetic_table(space, calibration={"a": 1.0, "b": 0.0})
    table.validation = {
        "points": [
            {"arch": a.to_compact(), "predicted_sum_ms": 0.0, "measured_ms": ms, "p10_ms": ms}
            for a, ms in zip(archs, validated_ms)
        ]
    }
    path = tmp_path / "validated.json"
    table.save(path)
    return path


def test_references_nearest_in_prediction_are_picked():
    space = get_space("proxyless", **SMALL)
    fastest = Arch(
        space.name,
        tuple(layer.candidates[0] if "zero" not in layer.candidates else "zero" for layer in space.layers),
        space.args.to_dict(),
    )
    archs = [Arch.random(space, seed) for seed in range(6)] + [fastest]
    table = _synthetic_table(space)
    model = LatencyModel(table, space)
    assert pick_references(model, 1.0) == []  # not validated: nothing to compare with
    table.validation = {"points": [{"arch": a.to_compact(), "measured_ms": 1.0 + i} for i, a in enumerate(archs)]}
    target = model.predict(fastest)
    picked = pick_references(model, target, count=3)
    distances = sorted(abs(model.predict(a) - target) for a in archs)
    assert [abs(model.predict(r.arch) - target) for r in picked] == distances[:3]
    assert picked[0].arch == fastest and picked[0].validated_ms == 7.0
    table.validation["anchors"] = [{"arch": fastest.to_compact(), "measured_ms": 0.5, "role": "fastest"}]
    assert [r.validated_ms for r in pick_references(model, target, count=2)] in ([7.0, 0.5], [0.5, 7.0])
    table.validation["points"].append({"arch": "proxyless:nonsense"})
    with pytest.raises(HwnasError, match="validation point 7 is malformed.*--references 0"):
        pick_references(model, target)
    assert pick_references(model, target, count=0) == []  # the remedy the message names works


def test_drift_is_the_median_ratio_of_references():
    drift = Drift([("a", 1.0, 1.5), ("b", 2.0, 2.16), ("c", 4.0, 2.0)])
    assert drift.ratio == pytest.approx(1.08) and not drift.significant
    assert drift.to_dict(2.0)["predicted_now_ms"] == pytest.approx(2.16)
    slow = Drift([("a", 1.0, 1.4)])
    lines = "\n".join(slow.lines(1.0, 1.05, "t.json"))
    assert slow.significant and "hwnas tables validate t.json" in lines
    assert "now: 1.400 ms (measured -25.0% vs this)" in lines  # (1.05 - 1.4) / 1.4


@pytest.mark.slow  # long training or real timing: the whole suite (CI) runs it
def test_export_times_reference_nets_beside_the_artifact(cli_runner, small_run, tmp_path):
    space = get_space("proxyless", **SMALL)
    archs = [Arch.random(space, seed) for seed in (1, 2)]
    table = _validated_table(tmp_path, space, archs, [0.5, 0.25])
    result = _export(cli_runner, tmp_path / "m.onnx", "--run", small_run, "--table", table)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    drift = report["drift"]
    assert {r["arch"] for r in drift["references"]} == {a.to_compact() for a in archs}
    ratios = [r["measured_ms"] / r["validated_ms"] for r in drift["references"]]
    assert all(r["measured_ms"] > 0 for r in drift["references"])
    assert drift["ratio"] == pytest.approx(sum(ratios) / 2)  # median of two
    assert drift["predicted_now_ms"] == pytest.approx(report["predicted_ms"] * drift["ratio"])
    text = cli_runner.invoke(
        cli, ["export", str(tmp_path / "t.onnx"), "--run", str(small_run), "--table", str(table), "--rounds", "1"]
    )
    assert text.exit_code == 0 and "timed beside the artifact" in text.output, text.output
    none = _export(cli_runner, tmp_path / "n.onnx", "--run", small_run, "--table", table, "--references", "0")
    assert none.exit_code == 0 and json.loads(none.output)["drift"] is None
