"""ExecuTorch in this process: lowering and delegation, the thread pool, the .pte export and its verdict, tables.

Skipped where the executorch package is missing (``pip install -e '.[mobile]'``), except the
test of that error itself. Lowering a block takes seconds on a 2-core machine: the quick tier
lowers few; profiling and validating whole spaces is marked slow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from hwnas.arch import Arch
from hwnas.cli.export_commands import EXIT_FAIL
from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.errors import HwnasError
from hwnas.files import save_torch_atomic, write_json_atomic
from hwnas.latency import LatencyTable
from hwnas.latency.executorch_program import import_executorch
from hwnas.latency.executorch_runtime import delegation_warnings, partly_delegated
from hwnas.spaces import get_space

executorch = pytest.importorskip("executorch.exir", reason="executorch is not installed: pip install -e '.[mobile]'")

SMALL = {"resolution": 32, "num_classes": 10, "in_channels": 1, "width_mult": 0.25}
QUICK = ["--rounds", "1", "--min-time", "0.01", "--warmup-time", "0.01", "--no-progress"]


@pytest.fixture(autouse=True)
def program_cache(tmp_path_factory, monkeypatch):
    """Lowered programs cached for the whole test session (all workers), never in the user's home."""
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path_factory.getbasetemp().parent / "hwnas-cache"))


def test_a_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch.exir", None)
    with pytest.raises(HwnasError, match=r"pip install -e '\.\[mobile\]'"):
        import_executorch()


def test_a_channel_split_is_left_to_the_portable_kernels_and_flagged():
    from hwnas.latency.runtimes import get_runtime

    space = get_space("shufflenet", **SMALL)
    part = next(p for p in space.parts() if p.key.startswith("shuffle_k3:") and ":s1:" in p.key)  # splits its input
    runtime = get_runtime("executorch", threads=1)
    from executorch.extension.pybindings import portable_lib

    assert portable_lib._threadpool_get_thread_count() == 1  # one thread, as recorded
    module = part.build().eval()
    runner = runtime.prepare_module(module, (1, *part.input_shape))
    assert runner.info["delegated"] is False and "aten.slice_copy.Tensor" in runner.info["portable_ops"]
    entries = {part.key: {"ms": 1.0, "p10": 1.0, "p90": 1.0, "n": 1, **runner.info}, "other": {"ms": 1.0, "delegated": True}}
    assert list(partly_delegated(entries)) == [part.key]
    assert part.key in delegation_warnings(entries)[0] and "slice_copy" in delegation_warnings(entries)[0]
    assert delegation_warnings({"other": {"delegated": True}}) == []
    assert runtime.meta()["delegate"] == "XnnpackPartitioner" and runtime.meta()["threads"] == 1


def test_at_one_thread_the_calling_thread_does_all_the_work_and_its_cpu_time_is_the_clock():
    """What timing a call by the thread's CPU time rests on: with a pool of one thread no other thread works."""
    import time

    from hwnas.latency.protocol import ThreadCpuClock
    from hwnas.latency.runtimes import get_runtime

    runtime = get_runtime("executorch", threads=1)
    assert runtime.meta()["clock"] == "thread_cpu"
    runner = runtime.prepare_module(torch.nn.Conv2d(16, 32, 3, padding=1), (1, 16, 32, 32))
    assert isinstance(runner.clock, ThreadCpuClock)
    process, thread = time.process_time(), time.thread_time()
    samples = runner.clock.time_runs(runner.fn, 200)
    process, thread = time.process_time() - process, time.thread_time() - thread
    assert thread > 0.9 * process, (thread, process)  # another thread doing the work would show here
    assert sum(samples) / 1e3 == pytest.approx(thread, rel=0.1)


@pytest.fixture
def small_run(tmp_path):
    space = get_space("proxyless", **SMALL)
    arch = Arch.random(space, seed=5)
    run = tmp_path / "run"
    run.mkdir()
    arch.save(run / "arch.json")
    model = space.build(arch.choices)
    for module in model.modules():  # BN statistics that are not the identity, so the check compares something
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    save_torch_atomic(run / "child.pt", model.state_dict())
    write_json_atomic(run / "config.json", {"runtime": "executorch", "device": "cpu"})
    write_json_atomic(run / "result.json", {"budget_ms": 1000.0})
    return run


def test_pte_export_is_checked_measured_and_judged(cli_runner, small_run, tmp_path):
    out = tmp_path / "m.pte"
    result = cli_runner.invoke(cli, ["export", str(out), "--run", str(small_run), "--rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "pte" and report["runtime"]["runtime"] == "executorch" and report["verdict"] == "PASS"
    assert report["delegated"] is True and report["max_rel_error"] < 1e-4 and report["measured_ms"] > 0
    assert json.loads((tmp_path / "m.report.json").read_text())["files"] == [str(out)]
    # an independent check: ExecuTorch's own Python API (not hwnas's loader) runs the file as PyTorch runs the child
    from executorch.runtime import Runtime

    arch = Arch.from_json((small_run / "arch.json").read_text())
    model = arch.build()
    model.load_state_dict(torch.load(small_run / "child.pt", weights_only=True))
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    got = Runtime.get().load_program(out).load_method("forward").execute((x,))[0]
    with torch.no_grad():
        want = model.eval()(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


@pytest.mark.slow
def test_an_impossible_budget_fails_the_pte_on_its_measurement(cli_runner, small_run, tmp_path):
    failed = cli_runner.invoke(
        cli, ["export", str(tmp_path / "m.pte"), "--run", str(small_run), "--rounds", "1", "--budget", "1us", "--json"]
    )
    assert failed.exit_code == EXIT_FAIL and json.loads(failed.stdout)["verdict"] == "FAIL", failed.output
    assert json.loads(failed.stdout)["measured_ms"] > 0.001


@pytest.mark.parametrize(
    "args, message",
    [
        (["m.pte", "--runtime", "onnxruntime"], "a .pte file is measured with --runtime executorch, not onnxruntime"),
        (["m.pte", "--dynamic-batch"], "a .pte program is exported at a fixed batch"),
        (["m.txt"], "the output must be a .onnx, .pte file"),
        (["m.onnx", "--device", "android"], "name the output m.pte"),
        (["m.engine", "--runtime", "executorch"], "a TensorRT engine is measured with --runtime tensorrt"),
    ],
)
def test_export_formats_follow_the_suffix(cli_runner, small_run, tmp_path, args, message):
    result = cli_runner.invoke(cli, ["export", str(tmp_path / args[0]), *args[1:], "--run", str(small_run)])
    assert result.exit_code == EXIT_ERROR and message in result.output, result.output
    assert not list(tmp_path.glob("m.*"))


#: three-layer stand-ins for proxyless and shufflenet (their kinds of op, 7 programs each, not 40-60): tests/fixtures/spaces
TINY_SPACES = {"proxyless": "tiny_mb.toml", "shufflenet": "tiny_shuffle.toml"}


@pytest.mark.slow
@pytest.mark.parametrize("space", list(TINY_SPACES))
def test_profile_and_validate_a_space(cli_runner, tmp_path, space):
    table_path = tmp_path / "t.json"
    args = ["--space", str(Path(__file__).parent / "fixtures" / "spaces" / TINY_SPACES[space])]
    result = cli_runner.invoke(cli, ["profile", "--runtime", "executorch", *args, *QUICK, "--no-validate", "-o", str(table_path)])
    assert result.exit_code == 0, result.output
    table = LatencyTable.load(table_path)
    assert table.meta["runtime"] == "executorch" and table.meta["delegate"] == "XnnpackPartitioner"
    assert table.meta["threads"] == 1 and table.meta["runtime_version"].startswith("1.")
    assert all(isinstance(entry["delegated"], bool) for entry in table.entries.values())
    partly = partly_delegated(table.entries)
    if space == "shufflenet":  # the stride-1 blocks split their input: the split stays in the portable kernels
        assert partly and all(":s1:" in key for key in partly) and all("aten.slice_copy.Tensor" in ops for ops in partly.values())
    else:
        assert not partly
    shown = cli_runner.invoke(cli, ["tables", "show", str(table_path)])
    assert shown.exit_code == 0 and ("only partly delegated" in shown.output) == bool(partly), shown.output
    checked = cli_runner.invoke(cli, ["tables", "validate", str(table_path), "--n", "4", *QUICK, "--json"])
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["n"] == 4 and report["mape"] >= 0
    assert any("partly delegated" in warning for warning in report["warnings"]) == bool(partly)
