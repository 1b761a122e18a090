"""Profiling with real runtimes (tiny protocol, the demo space at 32x32): resume, refusal, runtimes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency.model import LatencyModel, required_keys
from hwnas.latency.profiler import profile_items, profile_space
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import DEVICES, RUNTIMES, get_runtime
from hwnas.latency.table import LatencyTable
from hwnas.spaces import get_space

DEMO = {"resolution": 32, "in_channels": 1, "num_classes": 10}
TINY = Protocol(warmup_runs=2, warmup_s=0.0, min_runs=3, min_s=0.0, rounds=2)


class Interrupt(Exception):
    pass


def test_profile_measures_every_entry_with_onnxruntime(tmp_path):
    space = get_space("shufflenet", **DEMO)
    summary = profile_space(space, get_runtime("onnxruntime", protocol=TINY), tmp_path / "t.json", progress=False)
    table = LatencyTable.load(tmp_path / "t.json")
    assert summary.entries == len(profile_items(space)) == len(space.op_specs()) + 3
    assert set(required_keys(space)) <= set(table.entries) and not table.pending
    assert all(entry["n"] == 2 * 3 and entry["ms"] > 0 for entry in table.entries.values())
    meta = table.meta
    assert (meta["runtime"], meta["provider"], meta["threads"], meta["batch_size"]) == (
        "onnxruntime",
        "CPUExecutionProvider",
        1,
        1,
    )
    assert meta["space"] == "shufflenet" and meta["space_args"]["resolution"] == 32 and isinstance(meta["warnings"], list)
    model = LatencyModel(table, space)
    assert 0 < model.fastest()[1] < model.slowest()[1]


def test_interrupted_profile_resumes_and_loses_nothing(tmp_path, monkeypatch):
    space = get_space("shufflenet", **DEMO)
    path = tmp_path / "t.json"
    runtime = get_runtime("onnxruntime", protocol=TINY)
    stop_after = 45  # of 2 rounds x 35 items: round 1 done, round 2 partly

    count = [0]

    def interrupt(key, round_index):
        count[0] += 1
        if count[0] == stop_after:
            raise Interrupt

    with pytest.raises(Interrupt):
        profile_space(space, runtime, path, progress=False, on_measured=interrupt)
    before = LatencyTable.load(path)
    assert len(before.entries) == 45 - 35 and len(before.pending) == 35 - 10  # complete vs first-round-only
    prepared = []
    original = runtime.prepare_module
    monkeypatch.setattr(runtime, "prepare_module", lambda module, shape: prepared.append(shape) or original(module, shape))
    summary = profile_space(space, runtime, path, progress=False)
    after = LatencyTable.load(path)
    assert summary.resumed and summary.measurements == 70 - 45 and len(prepared) == 25
    assert all(after.entries[key] == entry for key, entry in before.entries.items())  # nothing re-measured
    assert len(after.entries) == 35 and not after.pending
    # removing entries by hand: exactly those are measured again
    for key in list(after.entries)[:3]:
        del after.entries[key]
    after.save()
    assert profile_space(space, runtime, path, progress=False).measurements == 3 * 2


def test_pending_rounds_of_a_longer_run_complete_a_shorter_one(tmp_path):
    space = get_space("shufflenet", **DEMO)
    path = tmp_path / "t.json"

    count = [0]

    def stop(key, round_index):
        count[0] += 1
        if count[0] == 2 * 35 + 5:  # rounds 1 and 2 of a 3-round run done, 5 items into round 3
            raise Interrupt

    three = Protocol(warmup_runs=1, warmup_s=0.0, min_runs=2, min_s=0.0, rounds=3)
    with pytest.raises(Interrupt):
        profile_space(space, get_runtime("onnxruntime", protocol=three), path, progress=False, on_measured=stop)
    assert len(LatencyTable.load(path).entries) == 5
    two = Protocol(warmup_runs=1, warmup_s=0.0, min_runs=2, min_s=0.0, rounds=2)
    summary = profile_space(space, get_runtime("onnxruntime", protocol=two), path, progress=False)
    table = LatencyTable.load(path)
    assert summary.measurements == 0 and len(table.entries) == 35 and not table.pending


def test_existing_table_of_another_target_is_refused_unless_forced(tmp_path):
    space = get_space("shufflenet", **DEMO)
    path = tmp_path / "t.json"
    data = {
        "schema_version": 1,
        "meta": {
            "device": "cpu",
            "device_name": "x",
            "runtime": "torch",
            "batch_size": 1,
            "space": "shufflenet",
            "space_args": space.args.to_dict(),
        },
        "entries": {},
    }
    path.write_text(json.dumps(data))
    quick = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=1, min_s=0.0, rounds=1)
    with pytest.raises(HwnasError, match="another target.*--force"):
        profile_space(space, get_runtime("onnxruntime", protocol=quick), path, progress=False)
    path.write_text("{ truncated")
    with pytest.raises(HwnasError, match="not valid JSON.*--force"):
        profile_space(space, get_runtime("onnxruntime", protocol=quick), path, progress=False)
    profile_space(space, get_runtime("onnxruntime", protocol=quick), path, force=True, progress=False)
    assert LatencyTable.load(path).meta["runtime"] == "onnxruntime"


def test_torch_runtime_times_a_module_and_restores_threads():
    threads = torch.get_num_threads()
    runtime = get_runtime("torch", threads=1, protocol=TINY)
    space = get_space("proxyless", **DEMO)
    timing = runtime.measure_module(Arch.random(space, 0).build(), (1, *space.input_shape))
    assert timing.median_ms > 0 and timing.n == 6 and torch.get_num_threads() == threads
    assert runtime.meta()["threads"] == 1 and runtime.meta()["runtime"] == "torch"
    with pytest.raises(HwnasError, match="not ONNX"):
        runtime.measure_onnx(b"", (1, 1, 32, 32))


def test_onnxruntime_measures_an_onnx_file_and_checks_its_shape(tmp_path):
    from hwnas.latency.onnx_export import export_onnx_bytes

    path = tmp_path / "m.onnx"
    path.write_bytes(
        export_onnx_bytes(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()), (1, 1, 16, 16))
    )
    runtime = get_runtime("onnxruntime", protocol=TINY)
    assert runtime.measure_onnx(path, (1, 1, 16, 16)).median_ms > 0
    with pytest.raises(HwnasError, match="shape"):
        runtime.measure_onnx(path, (1, 1, 32, 32))
    with pytest.raises(HwnasError, match="does not exist"):
        runtime.measure_onnx(tmp_path / "missing.onnx", (1, 1, 16, 16))


def test_onnxruntime_at_one_thread_runs_every_kernel_on_the_calling_thread_and_times_its_cpu_time():
    """What timing a run by the thread's CPU time rests on: at one thread no other thread of ONNX Runtime works."""
    import time

    from hwnas.latency.onnx_export import export_onnx_bytes

    shape = (1, 16, 32, 32)
    model = export_onnx_bytes(nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1)), shape)
    runtime = get_runtime("onnxruntime", threads=1, protocol=TINY)
    assert runtime.meta()["clock"] == "thread_cpu"
    runner = runtime.prepare_onnx(model, shape)
    process, thread = time.process_time(), time.thread_time()
    samples = runner.clock.time_runs(runner.fn, 200)
    process, thread = time.process_time() - process, time.thread_time() - thread
    assert thread > 0.9 * process, (thread, process)  # another thread doing the work would show here
    assert sum(samples) / 1e3 == pytest.approx(thread, rel=0.1)
    assert sum(runner.clock.time_runs(lambda: time.sleep(0.01), 3)) < 5.0  # waiting is not the run's cost
    wall = get_runtime("onnxruntime", threads=2, protocol=TINY)  # a pool: other threads work, the wall clock times
    assert (
        wall.meta()["clock"] == "wall" and wall.prepare_onnx(model, shape).clock.time_runs(lambda: time.sleep(0.01), 1)[0] >= 10
    )


def test_exported_block_has_batchnorm_folded():
    import onnx

    from hwnas.latency.onnx_export import export_onnx_bytes

    space = get_space("proxyless", **DEMO)
    layer = space.layers[3]
    model = onnx.load_from_string(export_onnx_bytes(space.build_op(3, "mb6_k5"), (1, layer.c_in, layer.h, layer.w)))
    kinds = {node.op_type for node in model.graph.node}
    assert "Conv" in kinds and "BatchNormalization" not in kinds


@pytest.mark.parametrize("name", list(RUNTIMES))
def test_every_runtime_times_a_module_here_or_says_why_it_cannot(name):
    """Each registered runtime measures on the first device it can use here; one that can use none says why (a skip)."""
    reasons = []
    for device in DEVICES:
        try:
            runtime = get_runtime(name, device=device, protocol=TINY)
        except HwnasError as error:
            reasons.append(f"{device}: {error}")
            continue
        timing = runtime.measure_module(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()), (1, 1, 16, 16))
        assert timing.median_ms > 0 and timing.n == 6
        assert runtime.meta()["runtime"] == name and runtime.meta()["device"] == device
        return
    assert all(len(reason) > 20 for reason in reasons), reasons
    pytest.skip(f"runtime {name} cannot run here: {'; '.join(reasons)}")


def test_unknown_and_unavailable_runtimes_say_why():
    with pytest.raises(HwnasError, match="unknown runtime"):
        get_runtime("tflite")
    with pytest.raises(HwnasError, match="unknown device"):
        get_runtime("torch", device="tpu")
    with pytest.raises(HwnasError, match="--fp16"):
        get_runtime("onnxruntime", fp16=True)
    if not torch.cuda.is_available():
        with pytest.raises(HwnasError, match="no CUDA GPU"):
            get_runtime("torch", device="cuda")
        with pytest.raises(HwnasError, match="tensorrt|CUDA"):
            get_runtime("tensorrt", device="cuda")


def test_a_table_timed_by_another_clock_is_not_resumed(tmp_path):
    """An executorch table from before its thread-CPU-time clock (no ``clock`` in meta) must not get entries of the new one."""
    from hwnas.latency.profiler import open_table

    space = get_space("shufflenet", **DEMO)
    path = tmp_path / "t.json"
    meta = {"device": "cpu", "device_name": "x", "runtime": "executorch", "batch_size": 1, "space": "shufflenet"}
    meta.update(space_args=space.args.to_dict(), threads=1, created="now", warnings=[])
    path.write_text(json.dumps({"schema_version": 1, "meta": meta, "entries": {}}))
    assert open_table(path, meta, force=False)[1]  # the same meta: resumed
    with pytest.raises(HwnasError, match="clock: file has None, this run 'thread_cpu'"):
        open_table(path, {**meta, "clock": "thread_cpu"}, force=False)
