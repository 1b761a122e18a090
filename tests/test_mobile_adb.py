"""The phone path's parsers on recorded outputs, and every pre-flight refusal of ``--device android``.

The runner output was recorded from the real x86 ``executor_runner`` (bench/build_runner.sh);
the logcat sample holds the same lines in logcat's threadtime format (constructed: no phone
here). ``adb`` is the stand-in in tests/fixtures/mobile (``shell`` runs locally, ``push`` copies).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.errors import HwnasError
from hwnas.latency.android import AndroidTarget, parse_cpu_list, parse_devices, parse_iterations

FIXTURES = Path(__file__).parent / "fixtures" / "mobile"
TINY = ["--space", "proxyless", "--resolution", "32", "--in-channels", "1", "--num-classes", "10", "--width-mult", "0.25"]


def _total_ms(text: str) -> float:
    """The runner's own total ("Model executed successfully N time(s) in T ms."), summed from the same clock."""
    return float(re.findall(r"successfully \d+ time\(s\) in ([0-9.]+) ms", text)[-1])


@pytest.mark.parametrize("name", ["runner_x86_output.txt", "logcat_threadtime.txt"])
def test_iterations_are_read_from_the_runner_and_from_logcat(name):
    text = (FIXTURES / name).read_text()
    times = parse_iterations(text)
    assert len(times) == 5 and times[0] == pytest.approx(0.911786)
    assert sum(times) == pytest.approx(_total_ms(text), abs=1e-5)  # the runner's own total of the same runs


def test_only_the_last_run_in_logcat_counts():
    text = (FIXTURES / "logcat_threadtime.txt").read_text()
    earlier = text.split("Model executed successfully 3")[0]
    assert parse_iterations(earlier) == pytest.approx([0.75, 0.61, 0.6])
    assert parse_iterations("Model executed successfully 5 time(s) in 1.0 ms.") == []
    assert parse_iterations("Iteration 1 of 3: 0.5 ms\nIteration 2 of 3: 0.5 ms") == []  # no iteration 0: not a run


def test_device_lists_and_core_lists():
    text = "* daemon started successfully\nList of devices attached\nR58M123\tdevice usb:1-1 product:x\nemulator-5554\tunauthorized\n\n"
    assert parse_devices(text) == [("R58M123", "device"), ("emulator-5554", "unauthorized")]
    assert parse_devices("List of devices attached\n\n") == []
    assert parse_cpu_list("0-3,6\n") == [0, 1, 2, 3, 6] and parse_cpu_list("0") == [0]


@pytest.fixture
def stand_in_adb(monkeypatch):
    """The stand-in adb first on PATH."""
    monkeypatch.setenv("PATH", f"{FIXTURES}:{Path('/usr/bin')}:{Path('/bin')}")
    return FIXTURES / "adb"


@pytest.mark.parametrize(
    "devices, serial, message",
    [
        ("", None, "no Android device attached"),
        ("A1:device,B2:device", None, "2 devices attached (A1 (device), B2 (device)): choose one with --serial"),
        ("A1:device,B2:device", "C3", "--serial C3: no such device attached"),
        ("A1:unauthorized", None, "accept the 'Allow USB debugging?' prompt"),
        ("A1:offline", None, "device A1 is offline"),
    ],
)
def test_devices_are_checked_before_anything_runs(stand_in_adb, monkeypatch, devices, serial, message):
    monkeypatch.setenv("HWNAS_FAKE_ADB_DEVICES", devices)
    with pytest.raises(HwnasError, match=re.escape(message)):
        AndroidTarget(None, serial, "/nonexistent/executor_runner")


def test_a_missing_runner_is_named_with_the_fix(stand_in_adb, tmp_path):
    with pytest.raises(HwnasError, match="no executable runner at .*docs/mobile.md.*--runner"):
        AndroidTarget(None, None, str(tmp_path / "executor_runner"))


def test_two_devices_with_serial_reach_the_one_named(stand_in_adb, monkeypatch, tmp_path):
    monkeypatch.setenv("HWNAS_FAKE_ADB_DEVICES", "A1:device,B2:device")
    target = AndroidTarget(None, "B2", str(tmp_path / "executor_runner"), check_runner=False)
    assert target.serial == "B2" and target.device_name == "android B2"  # no getprop here: named by serial
    assert target.facts["pinned_core"] == parse_cpu_list(Path("/sys/devices/system/cpu/online").read_text())[-1]


def test_profile_without_adb_is_an_error_and_writes_nothing(cli_runner, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb anywhere
    out = tmp_path / "t.json"
    result = cli_runner.invoke(cli, ["profile", "--device", "android", *TINY, "-o", str(out), "--no-progress"])
    assert result.exit_code == EXIT_ERROR and "error: no adb on PATH" in result.output and "--adb" in result.output
    assert not out.exists() and not list(tmp_path.glob("*.json"))
    given = cli_runner.invoke(cli, ["profile", "--device", "android", "--adb", str(tmp_path / "adb"), *TINY, "-o", str(out)])
    assert given.exit_code == EXIT_ERROR and f"--adb {tmp_path / 'adb'}: no executable there" in given.output


def test_phone_options_need_the_phone(cli_runner, tmp_path):
    result = cli_runner.invoke(cli, ["profile", *TINY, "--serial", "A1", "-o", str(tmp_path / "t.json")])
    assert result.exit_code == EXIT_ERROR and "--serial goes with --device android" in result.output
    result = cli_runner.invoke(cli, ["profile", "--device", "android", "--runtime", "onnxruntime", *TINY])
    assert result.exit_code == EXIT_ERROR and "a phone is measured with --runtime executorch" in result.output


def test_warm_up_runs_are_dropped_and_short_rounds_extended(monkeypatch):
    """Worked by hand: which of the runner's iterations become samples, and how many more runs are asked for."""
    from hwnas.latency.android import DeviceProgram
    from hwnas.latency.protocol import Protocol

    target = object.__new__(AndroidTarget)  # no device: the runner's outputs are given
    target.protocol = Protocol(warmup_runs=1, warmup_s=0.010, min_runs=3, min_s=0.0, rounds=1)
    calls: list[int] = []
    outputs = iter([[4.0, 4.0, 4.0, 1.0, 1.0, 1.0], [9.0, 2.0, 2.0, 2.0]])

    def iterations(remote: str, executions: int) -> list[float]:
        calls.append(executions)
        return next(outputs)

    monkeypatch.setattr(target, "iterations", iterations, raising=False)
    program = DeviceProgram(lambda: None, remote="/p.pte")
    # first round: iterations until 10 ms of warm-up have passed (4 + 4 + 4) are dropped, then 1, 1, 1
    first = target.measure_once(program, warm_up_by_time=True)
    assert calls == [1 + 3] and first.samples_ms == [1.0, 1.0, 1.0]
    # a later round drops the warm-up count only
    later = target.measure_once(program, warm_up_by_time=False)
    assert later.samples_ms == [2.0, 2.0, 2.0] and later.median_ms == 2.0
    # too short: min_s of 10 ms over samples of 1 ms asks for the 10 - 3 = 7 missing runs (plus the warm-up run)
    target.protocol = Protocol(warmup_runs=1, warmup_s=0.0, min_runs=3, min_s=0.010, rounds=1)
    calls.clear()
    outputs = iter([[5.0, 1.0, 1.0, 1.0], [5.0] + [1.0] * 7])
    short = target.measure_once(program, warm_up_by_time=False)
    assert calls == [4, 8] and short.n == 10 and sum(short.samples_ms) == 10.0
