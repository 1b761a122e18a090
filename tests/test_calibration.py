"""A table is calibrated before a search relies on it: ``hwnas profile`` ends with a calibration on whole nets,
and search, export and predict refuse (or say) what an uncalibrated table would give them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnas.arch import Arch
from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.latency import LatencyTable, latency_model
from hwnas.latency.accuracy import error_metrics
from hwnas.latency.calibration import calibration_formula
from hwnas.latency.lookup import shipped_tables_dir
from hwnas.latency.validate import held_out_predictions
from hwnas.search.synthetic import synthetic_table

from helpers import budget_between, tiny_search, tiny_space

TINY = ["--space", "proxyless", "--resolution", "16", "--in-channels", "1", "--num-classes", "10", "--width-mult", "0.25"]
TIMING = ["--rounds", "2", "--min-time", "0.02", "--warmup-time", "0.01"]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny space profiled on this machine the way a user runs it: entries, then the calibration on whole nets."""
    from click.testing import CliRunner

    path = tmp_path_factory.mktemp("tables") / "tiny.json"
    result = CliRunner().invoke(
        cli, ["profile", *TINY, *TIMING, "--calibration-nets", "4", "-o", str(path), "--no-progress", "--json"]
    )
    assert result.exit_code == 0, result.output
    return path, json.loads(result.stdout)


def test_held_out_predictions_leave_each_net_out_by_hand():
    # five random nets and the two anchors (last), exactly on measured = 2 * sum + 0.05, except net 2, 20 % high
    sums = [1.0, 1.5, 2.0, 2.5, 3.0, 0.5, 4.0]
    ops = [10, 12, 11, 15, 14, 6, 21]
    measured = [2 * s + 0.05 for s in sums]
    measured[2] *= 1.2
    calibration, scored, predictions = held_out_predictions(sums, ops, measured, fit_n=5, leave_one_out=True)
    assert scored == [0, 1, 2, 3, 4]
    # left out, net 2 is predicted by the six exact nets: the line itself, so its error is 0.2 / 1.2
    assert predictions[2] == pytest.approx(2 * 2.0 + 0.05, rel=1e-9)
    assert abs(predictions[2] - measured[2]) / measured[2] == pytest.approx(0.2 / 1.2, rel=1e-9)
    # the half split fits on nets 0-1 and the anchors (exact) and scores nets 2-4 with that line
    half, scored, predictions = held_out_predictions(sums, ops, measured, fit_n=2, leave_one_out=False)
    assert scored == [2, 3, 4] and predictions == pytest.approx([2 * s + 0.05 for s in sums[2:5]], rel=1e-9)


@pytest.mark.parametrize(
    ("fit", "words"),
    [
        ({"a": 1.1071, "b": -0.0388}, "measured ~ 1.1071 * sum - 0.0388 ms"),
        ({"a": 1.0668, "b": -0.141, "per_op_ms": 0.0224}, "measured ~ 1.0668 * sum + 0.0224 * ops - 0.1410 ms"),
        ({"a": 0.9, "b": 0.05, "per_op_ms": -0.004}, "measured ~ 0.9000 * sum - 0.0040 * ops + 0.0500 ms"),
    ],
)
def test_a_calibration_in_words_carries_its_signs(fit, words):
    assert calibration_formula(fit) == words


def test_profile_ends_with_a_calibration_fitted_on_whole_nets_it_timed(profiled):
    path, summary = profiled
    table = LatencyTable.load(path)
    assert table.calibration is not None and table.calibration["by"] == "hwnas profile"
    assert summary["calibrated"] and summary["calibration"]["n"] == 4 and summary["calibration"]["calibrated"]["n"] == 4
    validation = table.validation
    assert validation["held_out"] == "each" and len(validation["points"]) == 4
    fastest, slowest = validation["anchors"]
    assert (fastest["role"], slowest["role"]) == ("fastest", "slowest")
    # the anchors were really timed whole: the slowest net of the space runs slower than its fastest
    assert 0 < fastest["measured_ms"] < slowest["measured_ms"]
    # the stored line and its leave-one-out error are those of the nets stored beside them
    space = tiny_space()
    raw = latency_model(LatencyTable(meta=table.meta, entries=table.entries), space)
    nets = validation["points"] + validation["anchors"]
    archs = [Arch.from_compact(point["arch"]) for point in nets]
    assert [point["predicted_sum_ms"] for point in nets] == pytest.approx([raw.sum_ms(arch) for arch in archs])
    measured = [point["measured_ms"] for point in nets]
    ops = [space.count_ops(arch.choices) for arch in archs]
    fit, scored, predictions = held_out_predictions([p["predicted_sum_ms"] for p in nets], ops, measured, 4, True)
    assert fit["fit"] == table.calibration["fit"]
    assert [fit[k] for k in ("a", "b", "per_op_ms")] == pytest.approx([table.calibration[k] for k in ("a", "b", "per_op_ms")])
    assert validation["calibrated"]["mape"] == pytest.approx(error_metrics(predictions, measured[:4])["mape"])
    assert latency_model(table, space).predict(archs[0]) != pytest.approx(raw.predict(archs[0]))


def test_a_rerun_with_nothing_to_measure_keeps_the_calibration(cli_runner, profiled, tmp_path):
    path, _ = profiled
    copy = tmp_path / "t.json"
    copy.write_text(path.read_text())
    result = cli_runner.invoke(cli, ["profile", *TINY, *TIMING, "-o", str(copy), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "measured 0" in result.output and "calibration kept" in result.output
    assert LatencyTable.load(copy).calibration == LatencyTable.load(path).calibration


def test_no_validate_leaves_the_table_uncalibrated_and_says_so(cli_runner, tmp_path):
    path = tmp_path / "raw.json"
    result = cli_runner.invoke(
        cli,
        [
            "profile",
            *TINY,
            "--rounds",
            "1",
            "--min-time",
            "0",
            "--warmup-time",
            "0",
            "--no-validate",
            "-o",
            str(path),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "not calibrated" in result.output and f"hwnas tables validate {path}" in result.output
    assert LatencyTable.load(path).calibration is None


@pytest.fixture
def raw_table(tmp_path) -> Path:
    """A table with entries and no calibration (as ``hwnas profile --no-validate`` leaves one)."""
    table = synthetic_table(tiny_space())
    table.calibration = None
    path = tmp_path / "raw.json"
    table.save(path)
    return path


def test_search_refuses_an_uncalibrated_table_before_anything_is_written(cli_runner, raw_table, tmp_path):
    out = tmp_path / "run"
    result = cli_runner.invoke(cli, ["search", *tiny_search(raw_table, budget_between(raw_table, 0.5)), "--out", str(out)])
    assert result.exit_code == EXIT_ERROR, result.output
    assert "has no calibration" in result.output and f"hwnas tables validate {raw_table}" in result.output
    assert "--uncalibrated" in result.output and not out.exists()


def test_uncalibrated_search_and_export_say_they_predict_raw_sums(cli_runner, raw_table, tmp_path):
    out = tmp_path / "run"
    budget = budget_between(raw_table, 0.5)
    result = cli_runner.invoke(cli, ["search", *tiny_search(raw_table, budget, quiet=True), "--uncalibrated", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "result.json").read_text())["calibration"] is None
    assert json.loads((out / "config.json").read_text())["uncalibrated"] is True
    assert "**none**: predictions are raw sums" in (out / "report.md").read_text()
    model = tmp_path / "m.onnx"
    exported = cli_runner.invoke(cli, ["export", str(model), "--run", str(out), "--rounds", "1", "--references", "0"])
    assert exported.exit_code in (0, 1), exported.output  # a verdict either way: the run was searched --uncalibrated
    assert "raw sum of the table's entries" in exported.output
    assert json.loads(model.with_suffix(".report.json").read_text())["source"]["calibration"] is None


def test_export_refuses_an_uncalibrated_table_unless_told(cli_runner, raw_table, tmp_path):
    arch = Arch.random(tiny_space(), 0).to_compact()
    model = tmp_path / "m.onnx"
    refused = cli_runner.invoke(cli, ["export", str(model), "--arch", arch, "--table", str(raw_table), "--references", "0"])
    assert refused.exit_code == EXIT_ERROR and "has no calibration" in refused.output
    assert list(tmp_path.iterdir()) == [raw_table]


def test_predict_says_when_its_figure_is_a_raw_sum(cli_runner, raw_table, tmp_path):
    arch = Arch.random(tiny_space(), 0).to_compact()
    result = cli_runner.invoke(cli, ["predict", arch, "--table", str(raw_table)])
    assert result.exit_code == 0 and "raw sum" in result.output and f"hwnas tables validate {raw_table}" in result.output
    as_json = json.loads(cli_runner.invoke(cli, ["predict", arch, "--table", str(raw_table), "--json"]).output)
    assert as_json["calibrated"] is False
    calibrated = tmp_path / "calibrated.json"
    synthetic_table(tiny_space()).save(calibrated)
    assert json.loads(cli_runner.invoke(cli, ["predict", arch, "--table", str(calibrated), "--json"]).output)["calibrated"]


@pytest.mark.parametrize("path", sorted(shipped_tables_dir().glob("*.json")), ids=lambda path: path.stem)
def test_every_shipped_table_is_calibrated_on_whole_nets(path):
    table = LatencyTable.load(path)
    assert table.calibration is not None, f"{path.name} has no calibration: run hwnas tables validate on it"
    assert table.validation and table.validation.get("points"), f"{path.name} holds no validated nets"
    assert table.p90_relative_error is not None
