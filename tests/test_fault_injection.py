"""kill -9 at a seeded random moment of every command; what a user runs next ends as the uninterrupted run does.

Each case runs its command once without interruption (the reference; its wall time is T), then again, killed with SIGKILL
at a moment drawn from U(0.1 T, 0.9 T) by the case's seed, so the kill lands anywhere from Python's start-up to the last
file written. Then it runs what the command's messages tell a user to run next: ``--resume`` for a search (at any point)
or a training (once it has a checkpoint), else the same command again. That must end with the reference's result, and no
``.NAME.PID.tmp*`` file of the killed writer may be left under the outputs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch

from hwnas.latency import LatencyTable, latency_model
from hwnas.search import STRATEGIES
from hwnas.search.synthetic import write_synthetic_table
from hwnas.spaces import get_space

from helpers import budget_between, flags, tiny_space

pytestmark = pytest.mark.slow  # every case starts real processes and kills them with kill -9

HWNAS = [sys.executable, "-m", "hwnas"]
DAG_SPACE = get_space("dsonas-small", resolution=16, in_channels=1, num_classes=10, width_mult=0.25)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SEARCH = [
    *flags(
        width_mult=0.25,
        resolution=16,
        epochs=2,
        steps_per_epoch=2,
        batch_size=16,
        bn_batches=2,
        eval_images=64,
        quiet=True,
        json=True,
    ),
]
ONE_SHOT = [
    *flags(population=6, top_k=2, mutations=2, crossovers=2, generations=2, score_images=64, score_bn_images=32),
]
GREEDY = ["--paths-sampled", "3", "--paths-trained", "2", "--rank-images", "32"]
#: result fields that are timings or paths: they differ between any two runs
VARYING = {"run", "table", "selection_seconds", "selection_share_of_time", "folder", "weights"}
#: (method, seed of the kill moment): every method, each at its own moment
SEARCH_CASES = [(method, seed) for seed, method in enumerate(STRATEGIES)]
ARCH = "proxyless,resolution=16,num_classes=10,in_channels=1,width_mult=0.25:" + "-".join(
    ["mb3_k3", "mb6_k5", "zero", "mb3_k7"] * 5 + ["mb3_k3"]
)
TRAIN = [
    "train",
    *flags(arch=ARCH, from_scratch=True, seed=3, epochs=3, batch_size=128, bn_batches=2, json=True),
]
PROFILE = [
    "profile",
    *flags(
        space="shufflenet",
        resolution=32,
        in_channels=1,
        num_classes=10,
        rounds=1,
        min_time=0.02,
        warmup_time=0,
        no_progress=True,
        json=True,
    ),
]
QUICK_TIMING = ["--rounds", "1", "--min-time", "0", "--warmup-time", "0", "--no-progress"]


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    return write_synthetic_table(tiny_space(), tmp_path_factory.mktemp("tables") / "synthetic.json")


@pytest.fixture(scope="module")
def dag_table_path(tmp_path_factory) -> Path:
    """For the methods that search DAG spaces (DSO-NAS): the small DSO-NAS space at the tiny space's size."""
    return write_synthetic_table(DAG_SPACE, tmp_path_factory.mktemp("tables") / "dag.json")


class References:
    """Where the uninterrupted runs write, and what each printed and how long it took: made once per module fixture.

    The results live with the folder: xdist's worksteal can run a module's tests on one worker in two spells, and
    pytest then makes the module's fixtures anew (a cache kept beside the fixture pointed at the first spell's folder).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[str, tuple[dict, float]] = {}

    def __truediv__(self, name: str) -> Path:
        return self.folder / name

    def get(self, name: str, command: list[str]) -> tuple[dict, float]:
        """The uninterrupted run of ``command``: its JSON output and wall time (start-up included), made once."""
        if name not in self.made:
            started = time.monotonic()
            done = run(command)
            assert done.returncode == 0, done.stderr
            self.made[name] = json.loads(done.stdout), time.monotonic() - started
        return self.made[name]


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> References:
    return References(tmp_path_factory.mktemp("references"))


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


def kill_at(command: list[str], seed: int, reference_s: float) -> bool:
    """Start ``command``, SIGKILL it at the seed's moment of its reference time; True if it was still running then."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=random.Random(seed).uniform(0.1, 0.9) * reference_s)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp*"))


def comparable(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in VARYING}


def same_tensors(a: Path, b: Path) -> bool:
    first, second = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def search_command(method: str, table_path: Path, out: Path, dag_table_path: Path | None = None) -> list[str]:
    extra = (ONE_SHOT if STRATEGIES[method].one_shot else []) + (GREEDY if method == "greedynas" else [])
    if STRATEGIES[method].supports(tiny_space()):
        budget = budget_between(table_path, 0.5)
    else:  # a DAG method: its own space and table
        model = latency_model(LatencyTable.load(dag_table_path), DAG_SPACE)
        budget = model.fastest()[1] + 0.5 * (model.slowest()[1] - model.fastest()[1])
        table_path, extra = dag_table_path, [*extra, "--space", DAG_SPACE.name]
    return [
        *HWNAS,
        "search",
        *flags(method=method, latency=f"{budget}ms", table=str(table_path)),
        *SEARCH,
        *extra,
        "--out",
        str(out),
    ]


@pytest.mark.parametrize(("method", "seed"), SEARCH_CASES)
def test_search_killed_anywhere_resumes_to_the_uninterrupted_result(
    tmp_path, references, table_path, dag_table_path, method, seed
):
    straight = references / f"search-{method}"
    expected, seconds = references.get(f"search-{method}", search_command(method, table_path, straight, dag_table_path))
    out = tmp_path / "run"
    landed = kill_at(search_command(method, table_path, out, dag_table_path), seed, seconds)
    if (out / "config.json").is_file():  # resumable from here on, even before the first checkpoint
        again = run([*HWNAS, "search", "--resume", str(out), "--quiet", "--json"])
    else:  # killed before the run folder was made: nothing to resume, the same command again
        again = run([*search_command(method, table_path, out, dag_table_path), "--force"])
    assert again.returncode == 0, again.stderr
    assert comparable(json.loads(again.stdout)) == comparable(expected), f"kill landed: {landed}"
    assert (out / "arch.json").read_text() == (straight / "arch.json").read_text()
    assert same_tensors(out / "child.pt", straight / "child.pt")
    assert temp_files(out) == []


@pytest.mark.parametrize("seed", [0, 1])
def test_training_killed_anywhere_ends_with_the_uninterrupted_weights(tmp_path, references, seed):
    straight = references / "train"
    expected, seconds = references.get("train", [*HWNAS, *TRAIN, "--out", str(straight)])
    out = tmp_path / "train"
    landed = kill_at([*HWNAS, *TRAIN, "--out", str(out)], seed, seconds)
    if (out / "train_checkpoint.pt").is_file():
        again = run([*HWNAS, "train", "--arch", ARCH, "--out", str(out), "--resume", "--json"])
    else:  # "nothing to resume": the same command, over what the killed start wrote
        again = run([*HWNAS, *TRAIN, "--out", str(out), "--force"])
    assert again.returncode == 0, again.stderr
    assert comparable(json.loads(again.stdout)) == comparable(expected), f"kill landed: {landed}"
    assert same_tensors(out / "trained.pt", straight / "trained.pt")
    assert temp_files(out) == []


@pytest.mark.parametrize("seed", [0, 1])
def test_profile_killed_anywhere_then_rerun_gives_the_whole_table(tmp_path, references, seed):
    """The rerun measures what the killed run had not saved (measured values differ run to run; the entries may not)."""
    _, seconds = references.get("profile", [*HWNAS, *PROFILE, "-o", str(references / "profile.json")])
    path = tmp_path / "table.json"
    landed = kill_at([*HWNAS, *PROFILE, "-o", str(path)], seed, seconds)
    saved = LatencyTable.load(path).entries if path.exists() else {}  # what the kill left is a whole table, never half a file
    again = run([*HWNAS, *PROFILE, "-o", str(path)])
    assert again.returncode == 0, again.stderr
    table, straight = LatencyTable.load(path), LatencyTable.load(references / "profile.json")
    assert table.entries.keys() == straight.entries.keys() and table.meta["space"] == straight.meta["space"], (
        f"kill landed: {landed}"
    )
    assert all(table.entries[key] == entry for key, entry in saved.items())  # nothing saved was measured again
    assert table.calibration is not None and table.calibration["by"] == "hwnas profile"  # a kill in the calibration too
    assert json.loads(again.stdout)["measured"] == len(straight.entries) - len(saved)
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("seed", [0, 1])
def test_validation_killed_anywhere_leaves_the_table_whole_and_the_rerun_calibrates_it(tmp_path, references, seed):
    profiled = references / "profile.json"
    references.get("profile", [*HWNAS, *PROFILE, "-o", str(profiled)])
    straight = references / "validated.json"
    if not straight.exists():
        shutil.copy(profiled, straight)
    validate = ["tables", "validate", "--n", "4", *QUICK_TIMING, "--json"]
    expected, seconds = references.get("validate", [*HWNAS, *validate[:2], str(straight), *validate[2:]])
    path = tmp_path / "table.json"
    shutil.copy(profiled, path)
    landed = kill_at([*HWNAS, *validate[:2], str(path), *validate[2:]], seed, seconds)
    killed = LatencyTable.load(path)  # whole: the old table, or the calibrated one
    assert killed.entries == LatencyTable.load(profiled).entries
    again = run([*HWNAS, *validate[:2], str(path), *validate[2:]])
    assert again.returncode == 0, again.stderr
    table = LatencyTable.load(path)
    assert table.entries == LatencyTable.load(profiled).entries and table.calibration is not None, f"kill landed: {landed}"
    assert json.loads(again.stdout).keys() == expected.keys() and json.loads(again.stdout)["n"] == expected["n"] == 4
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("seed", [0, 1])
def test_export_killed_anywhere_leaves_no_half_set_and_the_rerun_exports_the_same_model(tmp_path, references, table_path, seed):
    run_folder = references / "search-dsnas"
    references.get("search-dsnas", search_command("dsnas", table_path, run_folder))
    export = ["export", "--run", str(run_folder), "--budget", "1000ms", "--rounds", "1", "--references", "0", "--json"]
    straight = references / "model.onnx"
    expected, seconds = references.get("export", [*HWNAS, *export, str(straight)])
    output = tmp_path / "model.onnx"
    landed = kill_at([*HWNAS, *export, str(output)], seed, seconds)
    report = output.with_suffix(".report.json")
    assert output.exists() == report.exists()  # the model and its report appear together or not at all
    again = run([*HWNAS, *export, str(output)])
    if output.exists() and again.returncode != 0:  # the killed run had finished its set: the rerun refuses to overwrite it
        assert "--force" in again.stderr, again.stderr
    else:
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["verdict"] == expected["verdict"] == "PASS", f"kill landed: {landed}"
    assert onnx.load(output).graph == onnx.load(straight).graph
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.report.json"]
    assert temp_files(tmp_path) == []
