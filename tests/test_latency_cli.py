"""``hwnas profile``, ``hwnas tables validate|show``, ``hwnas predict``: outputs, exit codes, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwnas.arch import Arch
from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.latency import LatencyModel
from hwnas.latency.table import LatencyTable
from hwnas.spaces import SKIP_OPS

SPACE = ["--space", "shufflenet", "--resolution", "32", "--in-channels", "1", "--num-classes", "10"]
QUICK = ["--rounds", "1", "--min-time", "0", "--warmup-time", "0"]
VALIDATION_KEYS = {"n", "mape", "rmspe", "within_5", "within_10", "kendall_tau", "mean_signed_error"}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    from click.testing import CliRunner

    path = tmp_path_factory.mktemp("tables") / "shufflenet.json"
    result = CliRunner().invoke(cli, ["profile", *SPACE, *QUICK, "--no-validate", "-o", str(path), "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["entries"] == 35 and summary["measured"] == 35 and not summary["resumed"]
    return path


def test_show_json(cli_runner, table_path):
    result = cli_runner.invoke(cli, ["tables", "show", str(table_path), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert set(shown) == {"meta", "entries", "fastest_ms", "slowest_ms", "partly_delegated"}
    assert shown["partly_delegated"] == {}  # ONNX Runtime entries record no delegation
    assert shown["entries"] == 35 and 0 < shown["fastest_ms"] < shown["slowest_ms"]


@pytest.mark.slow  # long training or real timing: the whole suite (CI) runs it
def test_validate_json_stores_calibration_and_predict_uses_it(cli_runner, table_path, tmp_path):
    copy = tmp_path / "t.json"
    copy.write_text(table_path.read_text())
    plot = tmp_path / "v.png"
    result = cli_runner.invoke(
        cli,
        ["tables", "validate", str(copy), "--n", "6", *QUICK, "--rounds", "2", "--plot", str(plot), "--no-progress", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # warnings, if any, go to stderr
    assert VALIDATION_KEYS | {"calibrated"} <= set(report) and VALIDATION_KEYS <= set(report["calibrated"])
    assert report["replaced"] is None and isinstance(report["warnings"], list)  # the profiled table had no calibration
    assert report["n"] == 6 and report["calibrated"]["n"] == 3
    assert 0 <= report["within_5"] <= report["within_10"] <= 1 and "p90_relative_error" in report["calibrated"]
    assert plot.read_bytes().startswith(b"\x89PNG")
    table = LatencyTable.load(copy)
    assert table.calibration["a"] == pytest.approx(report["calibration"]["a"])
    assert table.p90_relative_error == pytest.approx(report["calibrated"]["p90_relative_error"])
    assert len(table.validation["points"]) == 6  # the scored random archs; the anchors are kept apart
    model = LatencyModel(
        LatencyTable(table.meta, table.entries), Arch.from_compact(table.validation["points"][0]["arch"]).build_space()
    )
    anchors = {a["role"]: a for a in table.validation["anchors"]}
    assert anchors["fastest"]["arch"] == model.fastest()[0].to_compact() and anchors["fastest"]["measured_ms"] > 0
    assert anchors["slowest"]["predicted_sum_ms"] == pytest.approx(model.slowest()[1])
    arch = table.validation["points"][0]["arch"]
    raw = table.validation["points"][0]["predicted_sum_ms"]
    predicted = json.loads(cli_runner.invoke(cli, ["predict", arch, "--table", str(copy), "--json"]).output)
    assert set(predicted) == {"latency_ms", "calibrated"} and predicted["calibrated"] is True
    ops = sum(op not in SKIP_OPS for op in Arch.from_compact(arch).choices)
    fit = table.calibration
    assert predicted["latency_ms"] == pytest.approx(fit["a"] * raw + fit.get("per_op_ms", 0) * ops + fit["b"])
    again = cli_runner.invoke(cli, ["tables", "validate", str(copy), "--n", "4", *QUICK, "--plot", str(plot), "--no-progress"])
    assert again.exit_code == EXIT_ERROR and "exists" in again.output
    assert LatencyTable.load(copy).calibration == table.calibration  # a refused run leaves the table as it was
    revalidated = cli_runner.invoke(cli, ["tables", "validate", str(copy), "--n", "4", *QUICK, "--no-progress"])
    assert revalidated.exit_code == 0, revalidated.output
    per_op = f" {'-' if fit['per_op_ms'] < 0 else '+'} {abs(fit['per_op_ms']):.4f} * ops" if fit.get("per_op_ms") else ""
    first = f"measured ~ {fit['a']:.4f} * sum{per_op} {'-' if fit['b'] < 0 else '+'} {abs(fit['b']):.4f} ms"
    assert f"it replaces: {first}" in revalidated.stdout and table.calibration["fitted"] in revalidated.stdout


def test_a_validation_point_combines_all_its_rounds(table_path, monkeypatch):
    """Median, p10 and noise floor of a point rest on every round (timings set by hand), as the export's do."""
    from hwnas.latency.protocol import Protocol, Timing, combine_rounds
    from hwnas.latency.runtimes import get_runtime
    from hwnas.latency.validate import validate_table
    from hwnas.spaces import get_space

    table = LatencyTable.load(table_path)
    space = get_space(table.meta["space"], **table.meta["space_args"])
    runtime = get_runtime("torch", "cpu", 1, protocol=Protocol(rounds=3))
    per_round = [(1.0, 0.9), (3.0, 2.5), (2.0, 1.2)]  # (median, p10): the first round's p10 is nobody's answer

    def measure(runners, on_measured=None, **_):
        timings = [[Timing(m * (i + 1), p * (i + 1), 4.0 * (i + 1), 20) for m, p in per_round] for i in range(len(runners))]
        for round_index in range(len(per_round)):
            for index, rounds in enumerate(timings):
                on_measured(index, round_index, rounds[round_index])
        return [combine_rounds(rounds) for rounds in timings]

    monkeypatch.setattr(runtime, "measure", measure)
    report = validate_table(table, space, runtime, n=4, progress=False)
    for index, point in enumerate(report["points"] + report["anchors"]):
        assert point["measured_ms"] == pytest.approx(2.0 * (index + 1))  # median of 1, 3, 2
        assert point["p10_ms"] == pytest.approx(1.2 * (index + 1))  # median of 0.9, 2.5, 1.2; the first round's was 0.9
    # even rounds (medians 1 and 2 -> 1.5) against the odd round (3): |1.5 - 3| / 3 for every arch
    assert report["noise_floor"]["mape"] == pytest.approx(0.5)


def test_foreign_table_refused_then_allowed_with_a_warning(cli_runner, table_path, tmp_path):
    data = json.loads(table_path.read_text())
    data["meta"]["device_name"] = "Another CPU 9000"
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(data))
    refused = cli_runner.invoke(cli, ["tables", "validate", str(foreign), "--n", "4", *QUICK, "--no-progress"])
    assert refused.exit_code == EXIT_ERROR and "another target" in refused.output and "--allow-foreign-table" in refused.output
    allowed = cli_runner.invoke(
        cli, ["tables", "validate", str(foreign), "--n", "4", *QUICK, "--no-progress", "--allow-foreign-table"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert (
        "warning: " in allowed.stderr
        and "was measured for another target (device_name: table has 'Another CPU 9000'" in allowed.stderr
    )


def test_profile_prints_what_it_could_not_control(cli_runner, table_path, tmp_path, monkeypatch):
    import hwnas.latency.runtime_base as runtime_base

    monkeypatch.setattr(runtime_base, "measurement_warnings", lambda device: ["the test's own warning"])
    copy = tmp_path / "t.json"
    copy.write_text(table_path.read_text())  # complete: the rerun measures nothing
    result = cli_runner.invoke(cli, ["profile", *SPACE, *QUICK, "-o", str(copy), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: the test's own warning\n" and "35 entries (resumed" in result.stdout
    assert LatencyTable.load(copy).meta["resumed"][-1]["warnings"] == ["the test's own warning"]


def test_errors_exit_2_with_a_message(cli_runner, table_path, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text(table_path.read_text()[:200])
    result = cli_runner.invoke(cli, ["tables", "show", str(broken)])
    assert result.exit_code == EXIT_ERROR and "error:" in result.output and "not valid JSON" in result.output
    result = cli_runner.invoke(
        cli,
        [
            "predict",
            "proxyless,resolution=32,in_channels=1,num_classes=10:" + "-".join(["mb3_k3"] * 21),
            "--table",
            str(table_path),
        ],
    )
    assert result.exit_code == EXIT_ERROR and "arch is for proxyless" in result.output
    data = json.loads(table_path.read_text())
    data["entries"].pop(next(key for key in data["entries"] if key.startswith("shuffle_")))
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(data))
    result = cli_runner.invoke(cli, ["tables", "show", str(partial)])
    assert (
        result.exit_code == EXIT_ERROR
        and "lacks 1 entry" in result.output
        and "hwnas profile --space shufflenet" in result.output
    )
    result = cli_runner.invoke(cli, ["tables", "validate", str(table_path), "--n", "2"])
    assert result.exit_code == EXIT_ERROR and "'--n'" in result.output and "x>=4" in result.output


@pytest.mark.slow
def test_kill_9_mid_profile_then_rerun_measures_only_the_rest(tmp_path):
    path = tmp_path / "killed.json"
    command = [
        sys.executable,
        "-m",
        "hwnas",
        "profile",
        *SPACE,
        "--rounds",
        "1",
        "--min-time",
        "0.05",
        "--warmup-time",
        "0",
        "-o",
        str(path),
        "--no-progress",
        "--json",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    entries = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            entries = len(json.loads(path.read_text())["entries"])
        except (OSError, ValueError):
            entries = 0
        if entries >= 5:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "profile finished before it could be killed"
    killed = LatencyTable.load(path)  # whole, never half written
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["resumed"] and summary["measured"] == 35 - len(killed.entries) and summary["entries"] == 35
    final = LatencyTable.load(path)
    assert all(final.entries[key] == entry for key, entry in killed.entries.items())


def test_profile_with_the_torch_runtime(cli_runner, tmp_path):
    path = tmp_path / "torch.json"
    shape = ["--space", "proxyless", "--resolution", "16", "--in-channels", "1", "--num-classes", "10", "--width-mult", "0.25"]
    result = cli_runner.invoke(cli, ["profile", *shape, "--runtime", "torch", *QUICK, "-o", str(path), "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    table = LatencyTable.load(path)
    assert table.meta["runtime"] == "torch" and table.meta["provider"] == "cpu-eager"
    from hwnas.spaces import get_space

    space = get_space("proxyless", resolution=16, in_channels=1, num_classes=10, width_mult=0.25)
    model = LatencyModel(table, space)  # every key of the space is there (the model refuses a table that lacks one)
    assert all(entry["ms"] > 0 for entry in table.entries.values())
    assert model.fastest()[1] < model.slowest()[1]
