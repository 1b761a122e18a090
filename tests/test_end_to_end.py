"""The README's chain at tiny scale on real ONNX Runtime: profile -> validate -> search (every method) -> train -> export.

One table profiled on this machine serves every chain method, one of the DAG space every DAG
method (each registered method runs, so a new one is covered without editing a list); the test
checks that the files the commands write agree with each other, not only that each command exits 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwnas.arch import Arch, load_arch
from hwnas.cli.main import cli
from hwnas.latency import LatencyTable, latency_model
from hwnas.search import STRATEGIES
from hwnas.spaces import get_space

from helpers import flags, tiny_space

SHAPE = ["--resolution", "16", "--in-channels", "1", "--num-classes", "10", "--width-mult", "0.25"]
FAST = ["--rounds", "1", "--min-time", "0.005", "--warmup-time", "0.005"]


pytestmark = pytest.mark.slow  # profiles, searches, trains and exports for real, once per method
#: the spaces the methods search: the tiny chain space, and a DAG space for the methods that search edges
SEARCHED_SPACES = {
    "proxyless": tiny_space(),
    "dsonas-small": get_space("dsonas-small", resolution=16, in_channels=1, num_classes=10, width_mult=0.25),
}
ONE_SHOT = flags(population=6, top_k=2, mutations=2, crossovers=2, generations=2, score_images=64, score_bn_images=32)
GREEDY = flags(paths_sampled=3, paths_trained=2, rank_images=32)


def space_of(method: str) -> str:
    return next(name for name, space in SEARCHED_SPACES.items() if STRATEGIES[method].supports(space))


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Callable[[str], Path]:
    """The table of a space, profiled and validated on first use, then shared by the module's tests."""
    folder, made = tmp_path_factory.mktemp("e2e"), {}

    def table_of(space_name: str) -> Path:
        if space_name not in made:
            made[space_name] = profile_and_validate(folder / f"{space_name}.json", space_name)
        return made[space_name]

    return table_of


def profile_and_validate(path: Path, space_name: str) -> Path:
    runner = CliRunner()
    profiled = runner.invoke(cli, ["profile", "--space", space_name, *SHAPE, *FAST, "-o", str(path), "--no-progress", "--json"])
    assert profiled.exit_code == 0, profiled.output
    validated = runner.invoke(
        cli,
        [
            "tables",
            "validate",
            str(path),
            *flags(n=6, rounds=2, min_time=0.005, warmup_time=0.005, no_progress=True, json=True),
        ],
    )
    assert validated.exit_code == 0, validated.output
    assert LatencyTable.load(path).calibration is not None
    return path


@pytest.mark.parametrize("method", list(STRATEGIES))
def test_profile_validate_search_train_export_agree(cli_runner, tables, tmp_path, method):
    space_name = space_of(method)
    table = tables(space_name)
    extra = (ONE_SHOT if STRATEGIES[method].one_shot else []) + (GREEDY if method == "greedynas" else [])
    shown = json.loads(cli_runner.invoke(cli, ["tables", "show", str(table), "--json"]).stdout)
    budget = shown["fastest_ms"] + 0.5 * (shown["slowest_ms"] - shown["fastest_ms"])
    run = tmp_path / "run"
    searched = cli_runner.invoke(
        cli,
        [
            "search",
            *flags(method=method, latency=f"{budget}ms", table=str(table), space=space_name),
            *SHAPE,
            *extra,
            *flags(epochs=2, steps_per_epoch=3, batch_size=16, bn_batches=2, out=str(run), quiet=True, json=True),
        ],
    )
    assert searched.exit_code == 0, searched.output
    result = json.loads(searched.stdout)
    arch = load_arch(run / "arch.json")
    model = latency_model(LatencyTable.load(table), arch.build_space())
    assert result["arch"] == arch.to_compact() == json.loads((run / "result.json").read_text())["arch"]
    assert result["predicted_ms"] == pytest.approx(model.predict(arch))
    # the differentiable methods fill the slack to the aim; a one-shot selection of 6 x 2 evolved archs spends what it finds
    spent = 0.5 if STRATEGIES[method].one_shot else 0.8
    assert spent * result["aim_ms"] <= result["predicted_ms"] <= result["aim_ms"] <= budget

    trained = cli_runner.invoke(
        cli, ["train", "--run", str(run), "--epochs", "1", "--batch-size", "32", "--bn-batches", "2", "--json"]
    )
    assert trained.exit_code == 0, trained.output
    train_result = json.loads(trained.stdout)
    assert train_result["arch"] == arch.to_compact() and (run / "trained.pt").is_file()

    exported = cli_runner.invoke(
        cli, ["export", str(tmp_path / "model.onnx"), "--run", str(run), "--rounds", "2", "--references", "0", "--json"]
    )
    assert exported.exit_code in (0, 1), exported.output
    report = json.loads(exported.stdout)
    assert report == json.loads((tmp_path / "model.report.json").read_text())
    assert Arch.from_compact(report["source"]["arch"]) == arch
    assert report["budget_ms"] == pytest.approx(budget)  # the run's budget
    assert Path(report["source"]["table"]) == table  # the search's table, reused for the prediction
    assert report["predicted_ms"] == pytest.approx(result["predicted_ms"])
    assert Path(report["source"]["weights"]) == run / "trained.pt"  # the fine-tuned weights ship, not the search's child
    assert report["verdict"] == ("PASS" if report["measured_ms"] <= report["budget_ms"] else "FAIL")
    assert exported.exit_code == (0 if report["verdict"] == "PASS" else 1)
