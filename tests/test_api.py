"""The Python API: ``import hwnas`` lends the functions, they return the objects docs/python_api.md names, print
nothing, raise HwnasError on bad input, and the commands print what they return."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hwnas
from hwnas import api
from hwnas.cli.main import cli
from hwnas.errors import HwnasError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "thumbs64.toml"
TINY = {"resolution": 16, "in_channels": 1, "num_classes": 10}
QUICK = {"rounds": 1, "min_time": 0.005, "warmup_time": 0.005}
RESULTS = [api.ProfileResult, api.ValidationResult, api.TableInfo, api.Prediction, api.SearchResult, api.TrainResult]


def test_import_hwnas_lends_the_functions_and_the_modules_of_the_same_names_call_them():
    code = (
        "import inspect, sys, hwnas, hwnas.api; "
        "assert all(callable(getattr(hwnas, n)) for n in hwnas.API); "
        "assert hwnas.profile is hwnas.api.profile and hwnas.HwnasError.__module__ == 'hwnas.errors'; "
        "import hwnas.search.loop, hwnas.train; from hwnas import search; from hwnas.search import STRATEGIES; "
        "assert search is hwnas.search is sys.modules['hwnas.search'] and hwnas.train.TrainConfig and STRATEGIES; "
        "assert inspect.signature(hwnas.export) == inspect.signature(hwnas.api.export); "
        "hwnas.api.train = lambda *a, **k: ('called', a, k); "
        "assert hwnas.train(1, epochs=2) == ('called', (1,), {'epochs': 2})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("result", RESULTS, ids=[r.__name__ for r in RESULTS])
def test_the_docs_name_every_field_of_each_result(result):
    docs = (ROOT / "docs" / "python_api.md").read_text()
    section = docs[docs.index(f"-> {result.__name__}`") :].split("\n### ")[0]
    named = set(re.findall(r"`(\w+)`", section))
    missing = [f.name for f in dataclasses.fields(result) if f.name not in named]
    assert not missing, f"docs/python_api.md does not name {result.__name__}.{missing}"


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> api.ProfileResult:
    folder = tmp_path_factory.mktemp("api")
    return api.profile(EXAMPLE, **TINY, **QUICK, output=folder / "table.json")


def test_profile_predict_and_show_return_objects_and_print_nothing(profiled, capsys):
    assert isinstance(profiled, api.ProfileResult) and profiled.path.is_file()
    assert profiled.entries == len(profiled.table.entries) == profiled.measured > 0 and not profiled.resumed
    shown = hwnas.show_table(profiled.path)
    assert shown.space.name == "thumbs64" and shown.fastest_ms < shown.slowest_ms
    predicted = hwnas.predict(shown.slowest, table=profiled.path)
    assert predicted.latency_ms == pytest.approx(shown.slowest_ms)
    # the same figure through the command, which calls the same function
    compact = str(shown.slowest)
    again = hwnas.predict(compact, table=str(profiled.path))
    assert again.latency_ms == predicted.latency_ms and again.arch == shown.slowest
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_bad_input_raises_hwnas_error(tmp_path, profiled):
    with pytest.raises(HwnasError, match="unknown space 'nope'"):
        hwnas.profile("nope", output=tmp_path / "t.json")
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("mb6_k3", "mb6_k4"))
    with pytest.raises(HwnasError, match=r"stages\[0\].ops \(line 17\).*kernel 4"):
        hwnas.profile(bad, output=tmp_path / "t.json")
    with pytest.raises(HwnasError, match="search has no option epoch"):
        hwnas.search("1ms", space=EXAMPLE, **TINY, table=profiled.path, epoch=1)
    with pytest.raises(HwnasError, match="method dsnas has no option --tau0"):
        hwnas.search("1ms", space=EXAMPLE, **TINY, table=profiled.path, tau0=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_search_train_and_export_return_what_their_commands_print(profiled, tmp_path, cli_runner, capsys):
    shown = hwnas.show_table(profiled.path)
    budget = shown.fastest_ms + 0.5 * (shown.slowest_ms - shown.fastest_ms)
    common = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "bn_batches": 1, "eval_images": 64}
    found = hwnas.search(budget, method="dsnas", space=EXAMPLE, **TINY, table=profiled.path, out=tmp_path / "run", **common)
    assert isinstance(found, api.SearchResult) and found.run == tmp_path / "run"
    assert found.arch.space == "thumbs64" and str(found.arch) == found.result["arch"]
    assert found.budget_ms == pytest.approx(budget) and found.predicted_ms == found.result["predicted_ms"]
    assert 0 <= found.child_val_acc <= 1 and (found.run / "space.toml").read_text() == EXAMPLE.read_text()
    trained = hwnas.train(run=found.run, epochs=1, batch_size=256, bn_batches=1)
    assert trained.folder == found.run and trained.arch == found.arch and trained.val_acc == trained.result["val_acc"]
    report = hwnas.export(tmp_path / "child.onnx", run=found.run, rounds=1, references=0)
    assert report.verdict.verdict in ("PASS", "FAIL") and report.files == [str(tmp_path / "child.onnx")]
    assert report.details["source"]["arch"] == str(found.arch) and report.verdict.budget_ms == found.budget_ms
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    # the command on the same run prints the same search's report as JSON
    again = cli_runner.invoke(cli, ["export", str(tmp_path / "again.onnx"), "--run", str(found.run), "--rounds", "1", "--json"])
    assert again.exit_code in (0, 1), again.output
    assert json.loads(again.stdout)["source"]["arch"] == str(found.arch)
