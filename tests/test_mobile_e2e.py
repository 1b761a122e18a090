"""``--device android`` end to end: the real executor_runner built for x86 from the wheel, reached through the stand-in adb.

The runner is built by bench/build_runner.sh (cached); the stand-in adb (tests/fixtures/mobile)
runs ``shell`` commands here and copies ``push``ed files, so everything else is the phone path
as it ships: pre-flight checks, pushing content-named programs, ``taskset`` + runner calls,
parsing their output, resuming after the device went away. Skipped without executorch or a
C++ compiler, with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.arch import Arch
from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.files import save_torch_atomic, write_json_atomic
from hwnas.latency import LatencyTable
from hwnas.run_folder import SPACE_COPY
from hwnas.spaces import get_space

pytest.importorskip("executorch.exir", reason="executorch is not installed: pip install -e '.[mobile]'")
if shutil.which("c++") is None and shutil.which("g++") is None and shutil.which("clang++") is None:
    pytest.skip("no C++ compiler to build executor_runner (apt-get install g++)", allow_module_level=True)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "mobile"
#: three MBConv layers of proxyless's kinds of op: 7 programs to lower and time, not proxyless's 57 (the phone path is the same)
TINY = ROOT / "tests" / "fixtures" / "spaces" / "tiny_mb.toml"
SPACE = ["--space", str(TINY)]
QUICK = ["--rounds", "1", "--min-time", "0.01", "--warmup-time", "0.01", "--no-progress"]


def _cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp().parent / "hwnas-cache"


def build_runner(cache: Path, logging: str = "ON") -> Path:
    environment = {**os.environ, "PYTHON": sys.executable, "HWNAS_CACHE": str(cache), "HWNAS_RUNNER_LOGGING": logging}
    done = subprocess.run([str(ROOT / "bench" / "build_runner.sh")], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr[-2000:]
    binary = Path(done.stdout.strip().splitlines()[-1])
    assert binary.is_file() and os.access(binary, os.X_OK)
    return binary


@pytest.fixture(scope="module")
def runner_binary(tmp_path_factory) -> Path:
    return build_runner(_cache(tmp_path_factory))


@pytest.fixture
def phone(tmp_path, tmp_path_factory, monkeypatch, runner_binary) -> Path:
    """The stand-in adb on PATH and the runner pushed to the "device" (a folder here); the runner's path there."""
    monkeypatch.setenv("HWNAS_CACHE", str(_cache(tmp_path_factory)))
    monkeypatch.setenv("PATH", f"{FIXTURES}:{os.environ['PATH']}")
    device_runner = tmp_path / "device" / "hwnas" / "executor_runner"
    subprocess.run(["adb", "push", str(runner_binary), str(device_runner.parent) + "/"], check=True, capture_output=True)
    return device_runner


def test_build_script_reuses_its_build(runner_binary, tmp_path_factory):
    assert build_runner(_cache(tmp_path_factory)) == runner_binary  # cached: the same binary at once


def test_profile_resumes_after_the_device_went_away_then_validates_and_exports(cli_runner, phone, tmp_path, monkeypatch):
    table_path = tmp_path / "phone.json"
    profile = ["profile", "--device", "android", "--runner", str(phone), *SPACE, *QUICK, "--no-validate", "-o", str(table_path)]
    monkeypatch.setenv("HWNAS_FAKE_ADB_STATE", str(tmp_path / "adb-calls"))
    # 13 shell calls of pre-flight checks and the push, then 2-3 runner calls an entry: gone partway through the 7 entries
    monkeypatch.setenv("HWNAS_FAKE_ADB_LOSE_AFTER", "18")
    lost = cli_runner.invoke(cli, profile)
    assert lost.exit_code == EXIT_ERROR and "stopped answering" in lost.output and "resume" in lost.output, lost.output
    kept = LatencyTable.load(table_path)
    # some entries finished before the device went, not all (how many depends on the runner calls each took)
    assert 0 < len(kept.entries) < len(get_space(TINY).parts()) + 3
    monkeypatch.delenv("HWNAS_FAKE_ADB_LOSE_AFTER")
    resumed = cli_runner.invoke(cli, profile)
    assert resumed.exit_code == 0 and "(resumed;" in resumed.output, resumed.output
    table = LatencyTable.load(table_path)
    for key, entry in kept.entries.items():
        assert table.entries[key] == entry  # finished entries were not measured again
    meta = table.meta
    assert meta["device"] == "android" and meta["runtime"] == "executorch" and meta["device_name"] == "android hwnas-x86"
    assert meta["android"]["output"] == "stdout" and meta["android"]["pinned_core"] is not None
    assert all(entry["delegated"] is True for entry in table.entries.values())

    checked = cli_runner.invoke(
        cli, ["tables", "validate", str(table_path), "--runner", str(phone), "--n", "4", *QUICK, "--json"]
    )
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["n"] == 4

    space = get_space(TINY)
    arch = Arch.random(space, seed=5)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(TINY, run / SPACE_COPY)  # what a search of a space file keeps beside its arch
    arch.save(run / "arch.json")
    save_torch_atomic(run / "child.pt", space.build(arch.choices).state_dict())
    write_json_atomic(run / "config.json", {"runtime": "executorch", "device": "android", "table": str(table_path)})
    write_json_atomic(run / "result.json", {"budget_ms": 1000.0})
    out = tmp_path / "m.pte"
    exported = cli_runner.invoke(
        cli, ["export", str(out), "--run", str(run), "--device", "android", "--runner", str(phone), "--rounds", "1", "--json"]
    )
    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.stdout)
    assert report["verdict"] == "PASS" and report["predicted_ms"] > 0 and report["measured_ms"] > 0
    assert report["runtime"]["device"] == "android" and report["drift"] is not None  # the validation's nets, timed beside it


def test_a_runner_without_iteration_lines_is_refused_before_anything_is_written(cli_runner, phone, tmp_path, tmp_path_factory):
    silent = build_runner(_cache(tmp_path_factory), logging="OFF")  # a Release build without logging
    subprocess.run(["adb", "push", str(silent), str(phone)], check=True, capture_output=True)
    out = tmp_path / "t.json"
    result = cli_runner.invoke(cli, ["profile", "--device", "android", "--runner", str(phone), *SPACE, *QUICK, "-o", str(out)])
    assert result.exit_code == EXIT_ERROR and "printed no 'Iteration i of N: x ms' lines" in result.output, result.output
    assert "-DEXECUTORCH_ENABLE_LOGGING=ON" in result.output and not out.exists()


def test_in_process_time_agrees_with_the_runner_while_busy_processes_share_every_core(runner_binary, tmp_path):
    """One .pte timed in this process (as profile, validate and export time it) and by executor_runner.

    A busy process on every core during the in-process measurement, as neighbours on a shared
    machine: one takes about half of the timing thread's core, so a call timed by the wall clock
    took about twice the runner's time (the in-process clock before; docs/mobile.md); the others
    keep any helper thread of the process waiting for its core (torch's OpenMP pool copying the
    program's large output held the calling thread at its barrier for a scheduler tick per call:
    1.9x here before torch ran at one thread while measuring). Timed by the thread's CPU time,
    with no other thread in the call, the two agree.
    """
    import torch

    from hwnas.latency.android import parse_iterations
    from hwnas.latency.executorch_program import lower
    from hwnas.latency.protocol import Protocol
    from hwnas.latency.runtimes import get_runtime
    from hwnas.latency.threads import torch_threads

    shape = (1, 64, 56, 56)  # one 3x3 convolution, ~4 ms a call here: longer than a scheduler slice
    pte = tmp_path / "conv.pte"
    pte.write_bytes(lower(torch.nn.Conv2d(64, 64, 3, padding=1), shape).program)
    runtime = get_runtime("executorch", "cpu", 1, protocol=Protocol(rounds=3, min_runs=20, min_s=0.1))
    assert runtime.meta()["clock"] == "thread_cpu"
    runner = runtime.prepare_pte(pte, shape)

    mine = os.sched_getaffinity(0)
    core = min(mine)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in mine]
    try:
        for process, its_core in zip(busy, sorted(mine)):
            os.sched_setaffinity(process.pid, {its_core})
        os.sched_setaffinity(0, {core})  # this thread only: the one that runs the program
        with torch_threads(2):  # torch's default here, one per core (the suite runs it at one)
            in_process = runtime.measure([runner])[0].median_ms
    finally:
        os.sched_setaffinity(0, mine)
        for process in busy:
            process.kill()
            process.wait()

    medians = []
    for _ in range(3):
        done = subprocess.run(
            [str(runner_binary), f"--model_path={pte}", "--num_executions=40", "--cpu_threads=1"],
            capture_output=True,
            text=True,
            check=True,
        )
        medians.append(sorted(parse_iterations(done.stdout + done.stderr)[10:])[15])  # median of 30, warm-up dropped
    through_runner = sorted(medians)[1]
    assert 0.67 < in_process / through_runner < 1.5, (in_process, medians)
