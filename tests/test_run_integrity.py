"""A run is tied to its table, folders and tables have one writer, and interrupted or torn work is never lost (issue 30).

Each test runs the real CLI (or the real lock on real processes) and checks what the user sees (exit code, message) and
what is on disk afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwnas.cli import options
from hwnas.cli.main import EXIT_ERROR, EXIT_INTERRUPTED, cli
from hwnas.errors import HwnasError
from hwnas.files import file_sha256, lock_path, locked, read_jsonl
from hwnas.latency import LatencyTable
from hwnas.search.loop import SearchRun
from hwnas.search.synthetic import write_synthetic_table

from helpers import budget_between, tiny_search, tiny_space

QUICK = ["--epochs", "2", "--steps-per-epoch", "1", "--bn-batches", "1", "--eval-images", "32", "--quiet", "--json"]


@pytest.fixture
def two_tables(tmp_path) -> tuple[Path, Path]:
    """``a/t.json`` and ``b/t.json``: the same space, b's entries three times a's (another arch, other predictions)."""
    first = write_synthetic_table(tiny_space(), tmp_path / "a" / "t.json")
    data = json.loads(first.read_text())
    for entry in data["entries"].values():
        entry.update(ms=3 * entry["ms"], p10=3 * entry["p10"], p90=3 * entry["p90"])
    second = tmp_path / "b" / "t.json"
    second.parent.mkdir()
    second.write_text(json.dumps(data))
    return first, second


def search(runner: CliRunner, *args: str):
    return runner.invoke(cli, ["search", *args])


def test_a_run_keeps_its_table_from_any_folder_and_refuses_a_changed_one(tmp_path, two_tables, monkeypatch):
    """The issue's case: a run made with ``--table t.json`` in a/, resumed and exported from b/ beside another t.json."""
    runner = CliRunner()
    first, second = two_tables
    budget = budget_between(first, 0.5)
    monkeypatch.chdir(first.parent)
    made = search(runner, *tiny_search(Path("t.json"), budget), *QUICK, "--out", "../run")
    assert made.exit_code == 0, made.output
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["table"] == str(first) and config["table_sha256"] == file_sha256(first)
    assert (run / "table.json").read_bytes() == first.read_bytes() and config["resolved"]["table_copy"] == "table.json"

    monkeypatch.chdir(second.parent)  # another t.json here: the run still predicts with a's
    exported = runner.invoke(cli, ["export", "m.onnx", "--run", "../run", "--rounds", "1", "--references", "0", "--json"])
    assert exported.exit_code in (0, 1), exported.output
    report = json.loads(exported.stdout)
    assert report["source"]["table"] == str(first) and report["source"]["table_sha256"] == file_sha256(first)
    assert report["predicted_ms"] == pytest.approx(json.loads((run / "result.json").read_text())["predicted_ms"])

    (run / "arch.json").unlink()  # as if the search had stopped before its end: resume it from b/
    resumed = search(runner, "--resume", "../run", "--quiet", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["table"] == str(first)

    first.write_bytes(second.read_bytes())  # the table at the run's path changes
    for args in (["search", "--resume", "../run"], ["export", "m2.onnx", "--run", "../run"]):
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        refused = runner.invoke(cli, args)
        assert refused.exit_code == EXIT_ERROR, refused.output
        assert config["table_sha256"] in refused.stderr and file_sha256(first) in refused.stderr, refused.stderr
        assert f"cp {run / 'table.json'} {first}" in refused.stderr.replace("../run", str(run))
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before and not Path("m2.onnx").exists()

    retargeted = runner.invoke(  # an explicit choice, named in the report
        cli, ["export", "m3.onnx", "--run", "../run", "--table", str(first), "--rounds", "1", "--references", "0"]
    )
    assert retargeted.exit_code in (0, 1), retargeted.output
    assert f"given with --table; the run searched with {first}, sha256 {config['table_sha256']}" in retargeted.stdout
    source = json.loads(Path("m3.report.json").read_text())["source"]
    assert source["table_given"] and source["run_table"] == {"path": str(first), "sha256": config["table_sha256"]}

    first.unlink()  # gone: the run's copy is the same bytes, used with a warning line
    again = runner.invoke(cli, ["export", "m4.onnx", "--run", "../run", "--rounds", "1", "--references", "0", "--json"])
    assert again.exit_code in (0, 1), again.output
    assert json.loads(again.stdout)["source"]["table"].endswith("run/table.json")
    assert "warning: the run's table" in again.stderr and "Warning" not in again.stderr


def test_a_second_writer_of_a_run_folder_is_refused_with_the_holders_pid(tmp_path, two_tables):
    """Two ``--force`` searches into one --out: the second is refused before it changes anything."""
    first, _ = two_tables
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.jsonl").write_text('{"epoch": 0}\n')
    space_args = tiny_space().args.to_dict()
    config = {"method": "dsnas", "table": str(first), "budget_ms": budget_between(first, 0.5), "space_args": space_args}
    (run / "config.json").write_text(json.dumps(config))
    with locked(run, "run folder"):  # the first search, as far as the lock can tell
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        second = search(CliRunner(), *tiny_search(first, budget_between(first, 0.5)), *QUICK, "--out", str(run), "--force")
        assert second.exit_code == EXIT_ERROR, second.output
        assert f"is in use by process {os.getpid()}" in second.stderr, second.stderr
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before
        resumed = search(CliRunner(), "--resume", str(run))
        assert resumed.exit_code == EXIT_ERROR and f"process {os.getpid()}" in resumed.stderr
    assert not lock_path(run).exists()  # released and removed


def test_a_lock_is_released_when_its_holder_is_killed_and_a_stale_lock_file_never_blocks(tmp_path):
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:  # the holder: takes the lock, says so, waits to be killed
        os.close(ready_read)
        with locked(tmp_path, "run folder"):
            os.write(ready_write, b"x")
            time.sleep(60)
        os._exit(0)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"x"
    try:
        with pytest.raises(HwnasError, match=f"in use by process {child}"):
            with locked(tmp_path, "run folder"):
                pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert lock_path(tmp_path).read_text().startswith(f"{child}\n")  # the killed holder's file is left ...
    with locked(tmp_path, "run folder"):  # ... and does not block
        assert lock_path(tmp_path).read_text().startswith(f"{os.getpid()}\n")
    assert not lock_path(tmp_path).exists()


def test_a_table_being_profiled_is_locked(tmp_path):
    table = tmp_path / "t.json"
    with locked(table, "latency table"):
        refused = CliRunner().invoke(
            cli, ["profile", "--resolution", "16", "--in-channels", "1", "--width-mult", "0.25", "-o", str(table)]
        )
    assert refused.exit_code == EXIT_ERROR and f"latency table {table} is in use by process {os.getpid()}" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ctrl_c_exits_130_and_names_the_resume_command_which_finishes_the_run(tmp_path, two_tables, monkeypatch):
    first, _ = two_tables
    run, args = tmp_path / "run", [*tiny_search(first, budget_between(first, 0.5)), *QUICK]
    straight = search(CliRunner(), *args, "--out", str(tmp_path / "straight"))
    original = SearchRun.train_epoch

    def interrupted(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(SearchRun, "train_epoch", interrupted)
    stopped = search(CliRunner(), *args, "--out", str(run))
    assert stopped.exit_code == EXIT_INTERRUPTED, stopped.output
    assert f"continue with: hwnas search --resume {run}" in stopped.stderr and "Aborted" not in stopped.output
    assert not lock_path(run).exists()
    monkeypatch.setattr(SearchRun, "train_epoch", original)
    resumed = search(CliRunner(), "--resume", str(run), "--quiet", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["arch"] == json.loads(straight.stdout)["arch"]


def test_a_torn_last_history_line_is_dropped_and_the_run_resumes(tmp_path, two_tables):
    first, _ = two_tables
    run, args = tmp_path / "run", [*tiny_search(first, budget_between(first, 0.5)), *QUICK]
    assert search(CliRunner(), *args, "--out", str(run)).exit_code == 0
    (run / "arch.json").unlink()
    whole = (run / "history.jsonl").read_text()
    (run / "history.jsonl").write_text(whole + '{"epoch": 2, "lr": 0.0')  # a kill during an append
    resumed = search(CliRunner(), "--resume", str(run), "--quiet", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert [row["epoch"] for row in read_jsonl(run / "history.jsonl")] == [0, 1]


def test_read_jsonl_drops_a_torn_last_line_only(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": \xff')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_bytes(b'{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(HwnasError, match="line 2"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n' + "[" * 100_000 + "\n")  # nested too deep, last: torn
    assert read_jsonl(path) == [{"a": 1}]


def test_validate_refits_a_table_whose_calibration_is_refused(tmp_path):
    """The fix the refusal names (``hwnas tables validate TABLE``) works on the refused table."""
    table = write_synthetic_table(tiny_space(), tmp_path / "t.json")
    data = json.loads(table.read_text())
    table.write_text(json.dumps({**data, "calibration": {"a": -1.0, "b": 0.0}}))
    refused = CliRunner().invoke(cli, ["tables", "show", str(table)])
    assert refused.exit_code == EXIT_ERROR and f"hwnas tables validate {table}" in refused.stderr
    fixed = CliRunner().invoke(
        cli,
        ["tables", "validate", str(table), "--n", "4", "--rounds", "1", "--min-time", "0", "--warmup-time", "0", "--json"],
    )
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["replaced"].startswith("measured ~ -1.0000 * sum")
    assert LatencyTable.load(table).calibration["a"] > 0
    assert CliRunner().invoke(cli, ["tables", "show", str(table)]).exit_code == 0


def test_a_foreign_table_warning_is_one_warning_line(tmp_path):
    table = write_synthetic_table(tiny_space(), tmp_path / "t.json")
    data = json.loads(table.read_text())
    data["meta"]["device_name"] = "another machine"
    table.write_text(json.dumps(data))
    result = search(CliRunner(), *tiny_search(table, 1e-9), "--allow-foreign-table", "--out", str(tmp_path / "run"))
    assert result.exit_code == EXIT_ERROR and "fastest" in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("warning: ") and "another machine" in lines[0] and "ForeignTableWarning" not in result.stderr
    assert not (tmp_path / "run").exists()


def _phone_table(tmp_path: Path) -> Path:
    """A (synthetic) table as ``hwnas profile --device android`` writes it: the phone's name, executorch."""
    table = write_synthetic_table(tiny_space(), tmp_path / "phone.json")
    data = json.loads(table.read_text())
    data["meta"].update(device="android", device_name="android Google Pixel 7", runtime="executorch")
    table.write_text(json.dumps(data))
    return table


def test_a_phones_table_is_searched_here_without_naming_the_phone(tmp_path):
    """The table names its target (the phone); the search trains on this machine's CPU, and no override is needed."""
    table = _phone_table(tmp_path)
    result = search(CliRunner(), *tiny_search(table, budget_between(table, 0.5)), "--quiet", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["device"], config["runtime"], config["train_device"]) == ("android", "executorch", "cpu")
    assert config["resolved"]["table_meta"]["device_name"] == "android Google Pixel 7"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--runtime", "onnxruntime"], "runtime: table has 'executorch'"),  # asked for another target: the phone's is foreign
        (["--device", "cpu"], "device: table has 'android'"),
    ],
)
def test_a_phones_table_is_still_foreign_to_another_target(tmp_path, flags, words):
    table = _phone_table(tmp_path)
    result = search(CliRunner(), *tiny_search(table, 1.0), *flags, "--out", str(tmp_path / "run"))
    assert result.exit_code == EXIT_ERROR and words in result.stderr and "--allow-foreign-table" in result.stderr, result.output
    assert not (tmp_path / "run").exists()


def test_another_machines_cpu_table_is_foreign_without_the_override(tmp_path):
    table = write_synthetic_table(tiny_space(), tmp_path / "t.json")
    data = json.loads(table.read_text())
    data["meta"]["device_name"] = "another machine"
    table.write_text(json.dumps(data))
    result = search(CliRunner(), *tiny_search(table, 1.0), "--out", str(tmp_path / "run"))
    assert result.exit_code == EXIT_ERROR and "another machine" in result.stderr and "--allow-foreign-table" in result.stderr


def test_a_phone_target_without_its_table_is_an_error(tmp_path):
    result = search(CliRunner(), "--latency", "80ms", "--device", "android", "--out", str(tmp_path / "run"))
    assert result.exit_code == EXIT_ERROR and "--device android: name the phone's table with --table" in result.stderr


def _bench(name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--workers", "0"], "--workers: 0 must be at least 1"),
        (["--methods", "nosuch"], "unknown method(s) nosuch"),
        (["--search-steps", "x"], "'x' is not an integer"),
        (["--work", "/proc/hwnas-work"], "cannot write /proc/hwnas-work"),
        (["--table", "/nonexistent/t.json"], "/nonexistent/t.json does not exist"),
        ([], "Fashion-MNIST folder"),  # the data set is missing (pointed elsewhere here)
    ],
)
def test_the_quality_bench_refuses_bad_flags_and_missing_data_with_an_error_line(tmp_path, monkeypatch, capsys, flags, words):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    bench = _bench("search_quality", monkeypatch)
    monkeypatch.setattr("hwnas.data.FASHION_MNIST_DIR", tmp_path / "no-fashion-mnist")
    work = ["--work", str(tmp_path / "work")] if "--work" not in flags else []
    monkeypatch.setattr(sys, "argv", ["search_quality.py", "--quick", *work, "--out", str(tmp_path / "out"), *flags])
    try:
        code = bench.bench_cli.run(bench.main)
    except SystemExit as exit:  # a refused flag
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


class ExperimentalWarning(UserWarning):
    """Named like ExecuTorch's notice that an API is experimental."""


@pytest.mark.parametrize(
    ("category", "where", "shown"),
    [
        (UserWarning, "library", True),
        (RuntimeWarning, "library", True),
        (DeprecationWarning, "library", False),
        (PendingDeprecationWarning, "library", False),
        (ExperimentalWarning, "library", False),
        (DeprecationWarning, "hwnas", True),
        (UserWarning, "hwnas", True),
    ],
)
def test_a_library_notice_to_its_own_developers_is_not_a_warning_line(category, where, shown, capsys):
    filename = options.__file__ if where == "hwnas" else str(Path(pytest.__file__))
    options.warning_line(f"a {category.__name__}\n  over two lines", category, filename, 1)
    err = capsys.readouterr().err
    assert err == (f"warning: a {category.__name__} over two lines\n" if shown else "")
