"""torchrun: N processes (Gloo on the CPU) compute what one process computes with the same global batch and seed.

Real processes throughout: ``tests/distributed_worker.py`` runs DSNAS, ProxylessNAS and SNAS searches and a training
in float64, once in one process and once under ``torchrun --nproc-per-node 2``; alpha, the supernet's weights and
buffers, the multiplier and the trained child's weights must agree to ``TOL`` (float64 rounding gives 1e-9 and
less here; a missing all-reduce of the arch gradient moves alpha by 1e-2). A rank killed mid-epoch, then ``--resume``
with one process, ends where the uninterrupted one-process run ends. The CLI runs under torchrun as it ships.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hwnas.data import make_loader
from hwnas.distributed import Dist
from hwnas.errors import HwnasError
from hwnas.search.loop import SearchConfig, SearchRun
from hwnas.search.synthetic import write_synthetic_table

from helpers import budget_between, tiny_search, tiny_space

ROOT = Path(__file__).resolve().parent.parent
WORKER = str(ROOT / "tests" / "distributed_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TOL = 1e-6
METHODS = ("dsnas", "proxyless", "snas")


def environment() -> dict[str, str]:
    """The environment of the test, with this checkout first on the path and one thread per process."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def run_worker(spec: dict, folder: Path, processes: int, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"spec-{processes}-{len(list(folder.glob('spec-*')))}.json"
    path.write_text(json.dumps(spec))
    command = [*(TORCHRUN if processes > 1 else [sys.executable]), WORKER, str(path)]
    process = subprocess.Popen(
        command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    if not wait:
        return process
    try:
        stdout, stderr = process.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its ranks: none is left behind
        raise
    assert process.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def in_one_and_two_processes(spec: dict, root: Path) -> dict:
    """``spec`` run in 1 and in 2 processes: ``{1: folder, 2: folder, "failed": {processes: message}}``.

    Ranks that diverged stop at a checkpoint ("alpha differs between ..."): that is recorded, and the tests that compare
    the runs fail on it (rather than erroring in their fixture).
    """
    runs: dict = {"failed": {}}
    for processes in (1, 2):
        try:
            run_worker({**spec, "out": str(root / str(processes))}, root, processes)
        except AssertionError as error:
            runs["failed"][processes] = str(error)
        runs[processes] = root / str(processes)
    return runs


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    return write_synthetic_table(tiny_space(), tmp_path_factory.mktemp("tables") / "synthetic.json")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, table_path) -> dict:
    """The same searches (DSNAS for 2 epochs, ProxylessNAS and SNAS for 1, 2 steps each) and training, in 1 and 2 processes."""
    root = tmp_path_factory.mktemp("runs")
    spec = {
        "table": str(table_path),
        "budget_ms": budget_between(table_path, 0.5),
        "searches": list(METHODS),
        "epochs": {"dsnas": 2},
        "train": True,
    }
    return in_one_and_two_processes(spec, root)


def assert_close(one: dict[str, torch.Tensor], two: dict[str, torch.Tensor]) -> None:
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key].double(), two[key].double(), rtol=TOL, atol=TOL), (
            f"{key}: largest gap {float((one[key].double() - two[key].double()).abs().max()):.3g}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_search_as_one_with_the_global_batch(runs, method):
    assert not runs["failed"], runs["failed"]
    one, two = (torch.load(runs[n] / f"{method}.pt", weights_only=True) for n in (1, 2))
    assert_close({"alpha": one["alpha"]}, {"alpha": two["alpha"]})
    assert_close(one["weights"], two["weights"])
    assert one["budget"]["multiplier"] == pytest.approx(two["budget"]["multiplier"], rel=TOL, abs=TOL)
    assert one["budget"]["multiplier"] != 0  # the controller moved: the latency term took part
    config = json.loads((runs[2] / method / "config.json").read_text())
    assert (config["world_size"], config["backend"]) == (2, "gloo")
    assert json.loads((runs[1] / method / "config.json").read_text())["world_size"] == 1
    # rank 0 alone wrote the folder: one history row per epoch, no stray temporary files
    assert len((runs[2] / method / "history.jsonl").read_text().splitlines()) == config["epochs"]
    assert not list((runs[2] / method).glob(".*tmp*"))


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_global_batch(runs):
    assert not runs["failed"], runs["failed"]
    one, two = (torch.load(runs[n] / "train.pt", weights_only=True) for n in (1, 2))
    assert_close(one["weights"], two["weights"])
    a, b = (json.loads((runs[n] / "train" / "train_result.json").read_text()) for n in (1, 2))
    assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-9)


def _descendants(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            children += [child, *_descendants(child)]
    return children


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [item[5:] for item in environ if item.startswith(b"RANK=")]
    return int(ranks[0]) if ranks else None


@pytest.mark.slow
def test_kill_a_rank_mid_run_then_resume_with_one_process(runs, tmp_path, table_path):
    """SIGKILL to rank 1 after the first epoch's checkpoint; --resume in one process ends as the uninterrupted run."""
    assert 1 not in runs["failed"], runs["failed"]
    spec = {
        "table": str(table_path),
        "budget_ms": budget_between(table_path, 0.5),
        "searches": ["dsnas"],
        "epochs": {"dsnas": 2},
        "out": str(tmp_path / "killed"),
    }
    launcher = run_worker(spec, tmp_path, 2, wait=False)
    checkpoint = tmp_path / "killed" / "dsnas" / "checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.02)
    victims = [pid for pid in _descendants(launcher.pid) if _rank_of(pid) == 1]
    if not (checkpoint.exists() and victims):
        os.killpg(launcher.pid, signal.SIGKILL)
        pytest.fail(f"no checkpoint or no rank 1 to kill: {launcher.communicate()[1][-3000:]}")
    os.kill(victims[0], signal.SIGKILL)
    try:
        assert launcher.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert not (tmp_path / "killed" / "dsnas" / "result.json").exists()
    run_worker({**spec, "resume": True}, tmp_path, 1)
    resumed, straight = (
        torch.load(folder, weights_only=True) for folder in (tmp_path / "killed" / "dsnas.pt", runs[1] / "dsnas.pt")
    )
    assert_close({"alpha": resumed["alpha"]}, {"alpha": straight["alpha"]})
    assert_close(resumed["weights"], straight["weights"])
    config = json.loads((tmp_path / "killed" / "dsnas" / "config.json").read_text())
    assert config["launches"] == [
        {"epoch": 0, "world_size": 2, "backend": "gloo"},
        {"epoch": 1, "world_size": 1, "backend": None},
    ]
    assert (config["world_size"], config["backend"]) == (1, None)


@pytest.mark.slow
def test_torchrun_runs_the_cli_search_and_only_rank_0_prints(tmp_path, table_path):
    out = tmp_path / "run"
    command = [
        *TORCHRUN,
        "-m",
        "hwnas",
        "search",
        *tiny_search(
            table_path,
            budget_between(table_path, 0.5),
            method="proxyless",
            eval_images=32,
            warmup_epochs=0,
            out=str(out),
            quiet=True,
            json=True,
        ),
    ]
    done = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"predicted_ms"') == 1
    result = json.loads(done.stdout)
    assert result["run"] == str(out) and result["predicted_ms"] <= result["budget_ms"]
    config = json.loads((out / "config.json").read_text())
    assert (config["world_size"], config["backend"], config["train_device"]) == (2, "gloo", "cpu")


def test_a_plain_search_sets_up_no_process_group(tmp_path, table_path):
    config = SearchConfig(
        method="dsnas",
        table=str(table_path),
        budget_ms=budget_between(table_path, 0.5),
        space_args={"resolution": 16, "in_channels": 1, "num_classes": 10, "width_mult": 0.25},
        epochs=1,
        batch_size=16,
        steps_per_epoch=1,
        bn_batches=1,
        eval_images=16,
    )
    run = SearchRun(config, tmp_path / "run", progress=False)
    assert run.net is run.supernet
    run.run()
    assert not torch.distributed.is_initialized()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["world_size"], saved["backend"]) == (1, None)


def test_methods_and_batches_that_cannot_be_shared_are_refused_before_any_work(tmp_path, table_path):
    two = Dist(rank=0, world_size=2)  # no process group is needed: the refusals come first
    options = dict(
        table=str(table_path),
        budget_ms=budget_between(table_path, 0.5),
        space_args={"resolution": 16, "in_channels": 1, "num_classes": 10, "width_mult": 0.25},
    )
    for method in ("spos", "greedynas", "random"):
        with pytest.raises(HwnasError, match=f"method {method} runs in one process only"):
            SearchRun(SearchConfig(method=method, **options), tmp_path / method, dist=two)
    with pytest.raises(HwnasError, match="a global batch of 15 does not split evenly over 2 processes"):
        SearchRun(SearchConfig(method="dsnas", batch_size=15, **options), tmp_path / "odd", dist=two)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("shuffle", [True, False])
def test_the_shards_of_each_step_make_up_the_one_process_batch(shuffle):
    data = list(range(103))
    one = make_loader(data, 16, shuffle, seed=5)
    shards = [make_loader(data, 16, shuffle, seed=5, dist=Dist(rank, 2)) for rank in range(2)]
    for _ in range(2):  # a second pass, as ProxylessNAS cycles its held-out loader, continues the same generator
        batches = [batch.tolist() for batch in one]
        parts = [[batch.tolist() for batch in shard] for shard in shards]
        assert len(parts[0]) == len(parts[1]) == len(batches)
        for k, batch in enumerate(batches[:-1]):
            assert sorted(parts[0][k] + parts[1][k]) == sorted(batch)
        # the last batch (103 = 6 x 16 + 7) is cut to a multiple of 2: one image of the epoch is left out
        assert len(parts[0][-1]) == len(parts[1][-1]) == 3 and set(parts[0][-1] + parts[1][-1]) < set(batches[-1])


# -- DSO-NAS: lambda by APG-NAG on the held-out half, its gamma controller, the pruned forward -----------------------------
def dsonas_space():
    from hwnas.spaces import get_space

    return get_space("dsonas-small", resolution=16, in_channels=1, num_classes=10, width_mult=0.25)


@pytest.fixture(scope="module")
def dsonas_runs(tmp_path_factory) -> dict:
    """DSO-NAS on dsonas-small (width 0.25, 16x16) for 2 epochs of 2 steps, lambda steps from the first, in 1 and 2 processes."""
    from hwnas.latency import LatencyTable, latency_model
    from hwnas.search.synthetic import write_synthetic_table

    root = tmp_path_factory.mktemp("dsonas")
    table = write_synthetic_table(dsonas_space(), root / "synthetic.json")
    model = latency_model(LatencyTable.load(table), dsonas_space())
    fastest, slowest = model.fastest()[1], model.slowest()[1]
    spec = {
        "table": str(table),
        "budget_ms": fastest + 0.5 * (slowest - fastest),
        "searches": ["dsonas"],
        "epochs": {"dsonas": 2},
    }
    return in_one_and_two_processes(spec, root)


@pytest.mark.slow
def test_two_processes_search_dsonas_as_one_with_the_global_batch(dsonas_runs):
    """lambda, the weights and BN buffers, APG-NAG's velocity, gamma and the pruned net's latency agree with one process."""
    assert not dsonas_runs["failed"], dsonas_runs["failed"]
    one, two = (torch.load(dsonas_runs[n] / "dsonas.pt", weights_only=True) for n in (1, 2))
    assert_close({"lambda": one["alpha"]}, {"lambda": two["alpha"]})
    assert_close(one["weights"], two["weights"])  # the state dict: weights and BN running statistics
    a, b = one["strategy"], two["strategy"]
    assert_close(
        {"velocity": a["apg"]["velocity"], "at_aim": a["at_aim"]}, {"velocity": b["apg"]["velocity"], "at_aim": b["at_aim"]}
    )
    assert (a["gamma_now"], a["pruned_ms"]) == pytest.approx((b["gamma_now"], b["pruned_ms"]), rel=TOL, abs=TOL)
    # the search moved: edges reached 0 (their ops left the forward pass) and the pruned net is below the full net
    assert int((one["alpha"] == 0).sum()) > 0 and int((one["alpha"] > 0).sum()) > 0
    config = json.loads((dsonas_runs[2] / "dsonas" / "config.json").read_text())
    assert (config["world_size"], config["backend"], config["space"]) == (2, "gloo", "dsonas-small")
    r1, r2 = (json.loads((dsonas_runs[n] / "dsonas" / "result.json").read_text()) for n in (1, 2))
    assert r1["arch"] == r2["arch"] and r1["predicted_ms"] == pytest.approx(r2["predicted_ms"], rel=1e-9)
