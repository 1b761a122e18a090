"""A phone over adb: ExecuTorch programs pushed once, timed by ``executor_runner`` on one pinned core.

Everything is checked before anything is measured or written (``AndroidTarget.__init__``): adb
exists, exactly one usable device is meant (``--serial`` picks among several), it is authorised,
a runner is at ``--runner``, and a probe program run by it prints per-iteration lines, on its
output or in logcat (tag ``ExecuTorch``), whichever has them (``output`` in the table meta).

Measuring: each program goes to ``<runner's folder>/programs/<sha256>.pte`` (named by content, so
a rerun pushes only what the device lacks) in one ``adb push``. One round of one item is one
runner call ``taskset MASK RUNNER --model_path=F --num_executions=W+N --cpu_threads=1``: the
runner has no warm-up flag, so its first ``W`` iterations (``Protocol.warmup_runs``; in an item's
first round at least ``warmup_s`` of them) are dropped and the rest are the round's samples; a
call that leaves fewer than ``min_runs`` samples or less than ``min_s`` of them is followed by
another. Items are measured in interleaved rounds like on the host (``measure_interleaved``).
The core is the highest-numbered online one (the big cluster on most phones); with more than
one thread nothing is pinned and ``--cpu_threads`` says how many.

A device that stops answering mid-run is an error that says so; the profiler has saved every
finished measurement, so the same command resumes.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
import shlex
import shutil
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas.files import write_bytes_atomic
from hwnas.latency.executorch_program import cache_dir, lowered_program
from hwnas.latency.protocol import Protocol, Runner, Timing

DEFAULT_RUNNER = "/data/local/tmp/hwnas/executor_runner"
LOGCAT_TAG = "ExecuTorch"
OUTPUTS = ("stdout", "logcat")
#: one timed run of the runner: "Iteration 3 of 30: 1.0312 ms" (after ET_LOG's or logcat's prefix)
ITERATION = re.compile(r"Iteration (\d+) of (\d+): ([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?) ms")
#: seconds an adb call may take (a run of many iterations of a large net gets more)
ADB_TIMEOUT_S = 60
RUN_TIMEOUT_S = 900
#: where adb's own messages say the device went away
LOST = ("no devices/emulators found", "device offline", "not found", "device unauthorized", "closed", "disconnected")
BUILD_HINT = "build it for the phone and push it: docs/mobile.md, 'Build executor_runner'"


def parse_devices(text: str) -> list[tuple[str, str]]:
    """``adb devices`` output -> ``[(serial, state), ...]`` (state: device, unauthorized, offline, ...)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) >= 2:
            found.append((parts[0], parts[1]))
    return found


def parse_iterations(text: str) -> list[float]:
    """Per-run milliseconds from a runner's output or from logcat, in iteration order.

    Works on ET_LOG's lines (``I 00:00:00.010 executorch:executor_runner.cpp:123] Iteration 0 of 5:
    0.91 ms``) and on logcat's (``12-06 13:00:00.123  4242  4242 I ExecuTorch: Iteration 0 of 5:
    0.91 ms``). Logcat keeps the lines of earlier runs: only the last sequence that starts at
    iteration 0 is returned (the caller checks that it has as many runs as it asked for).
    """
    runs: list[list[float]] = []
    for match in ITERATION.finditer(text):
        index, ms = int(match.group(1)), float(match.group(3))
        if index == 0:
            runs.append([ms])
        elif runs and len(runs[-1]) == index:
            runs[-1].append(ms)
    return runs[-1] if runs else []


def parse_cpu_list(text: str) -> list[int]:
    """``/sys/devices/system/cpu/online`` (``0-3,6``) -> ``[0, 1, 2, 3, 6]``."""
    cores: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cores += list(range(int(low), int(high or low) + 1))
    return cores


def find_adb(path: str | None) -> str:
    """The adb to use: ``path`` if given, else ``adb`` on PATH; an error with the fix when there is none."""
    if path is None:
        found = shutil.which("adb")
        if found is None:
            raise HwnasError("no adb on PATH: install Android's platform-tools (e.g. apt-get install adb) or pass --adb PATH")
        return found
    candidate = Path(path)
    if not candidate.is_file() or not shutil.which(str(candidate)):
        raise HwnasError(f"--adb {path}: no executable there; install Android's platform-tools or give adb's path")
    return str(candidate)


@dataclass
class DeviceProgram(Runner):
    """A program on the device: the runner runs it, not this process (``fn`` refuses)."""

    remote: str = ""
    local: Path | None = None
    sha: str = ""


def _not_here() -> None:
    raise HwnasError("a program on an android device is run by its executor_runner, not in this process")


@dataclass
class AndroidTarget:
    """One phone, checked on creation; ``prepare`` / ``measure`` are what ``ExecuTorchRuntime`` delegates to it."""

    adb_path: str | None = None
    serial: str | None = None
    runner: str | None = None
    threads: int | None = 1
    protocol: Protocol = field(default_factory=Protocol)
    #: False: reach the device and read its facts only (its name, for finding its table), no runner checks
    check_runner: bool = True
    facts: dict[str, Any] = field(default_factory=dict)
    output: str = "stdout"

    def __post_init__(self) -> None:
        self.adb_path = find_adb(self.adb_path)
        self.serial = self._choose_device(self.serial)
        self.runner = self.runner or DEFAULT_RUNNER
        self.programs_dir = posixpath.join(posixpath.dirname(self.runner), "programs")
        self.facts = self._read_facts()
        if self.check_runner:
            self._check_runner()
            self.output = self._probe()

    # -- adb ------------------------------------------------------------------------------
    def _adb(self, *args: str, timeout: float = ADB_TIMEOUT_S, device: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.adb_path), *(["-s", str(self.serial)] if device else []), *args]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise HwnasError(f"adb {' '.join(args[:2])} on {self.serial} did not answer in {timeout:.0f} s") from None
        except OSError as error:
            raise HwnasError(f"cannot run adb {self.adb_path}: {error}") from None

    def shell(self, command: str, timeout: float = ADB_TIMEOUT_S) -> subprocess.CompletedProcess:
        return self._adb("shell", command, timeout=timeout)

    def _read(self, command: str) -> str | None:
        """A shell command's output where it works, else None (facts are recorded where readable)."""
        result = self.shell(command)
        text = result.stdout.strip()
        return text if result.returncode == 0 and text else None

    def _choose_device(self, serial: str | None) -> str:
        result = self._adb("devices", device=False)
        if result.returncode != 0:
            raise HwnasError(f"adb devices failed: {(result.stderr or result.stdout).strip()}")
        devices = parse_devices(result.stdout)
        if serial is not None:
            states = dict(devices)
            if serial not in states:
                listed = ", ".join(f"{s} ({state})" for s, state in devices) or "none"
                raise HwnasError(f"--serial {serial}: no such device attached (adb devices lists: {listed})")
            chosen = [(serial, states[serial])]
        elif not devices:
            raise HwnasError(
                "no Android device attached (adb devices lists none): connect the phone by USB with USB debugging on "
                "(Settings > Developer options), or over Wi-Fi with adb connect"
            )
        elif len(devices) > 1:
            listed = ", ".join(f"{s} ({state})" for s, state in devices)
            raise HwnasError(f"{len(devices)} devices attached ({listed}): choose one with --serial")
        else:
            chosen = devices
        name, state = chosen[0]
        if state == "unauthorized":
            raise HwnasError(
                f"device {name} is unauthorized: unlock the phone and accept the 'Allow USB debugging?' prompt, then rerun"
            )
        if state != "device":
            raise HwnasError(f"device {name} is {state}: reconnect it (adb reconnect) and rerun")
        return name

    # -- checks before anything is written --------------------------------------------------
    def _check_runner(self) -> None:
        quoted = shlex.quote(str(self.runner))
        result = self.shell(f"test -x {quoted} && echo hwnas-runner-ok")
        if "hwnas-runner-ok" not in result.stdout:
            raise HwnasError(f"no executable runner at {self.runner} on {self.serial}: {BUILD_HINT}, or pass --runner PATH")

    def _probe(self) -> str:
        """Run a tiny program; where its iteration lines appear (stdout or logcat) is how this runner is read."""

        probe = self.prepare(lowered_program(torch.nn.Conv2d(1, 1, 1), (1, 1, 4, 4)).program, (1, 1, 4, 4))
        self._push([probe])
        self._adb("logcat", "-c")
        result = self._run(probe.remote, 2)
        if len(parse_iterations(result.stdout + result.stderr)) == 2:
            return "stdout"
        logcat = self._adb("logcat", "-d", "-v", "threadtime", "-s", LOGCAT_TAG)
        if logcat.returncode == 0 and len(parse_iterations(logcat.stdout)) == 2:
            return "logcat"
        shown = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise HwnasError(
            f"the runner {self.runner} printed no 'Iteration i of N: x ms' lines, on its output or in logcat "
            f"(a Release build without logging?): rebuild it with -DEXECUTORCH_ENABLE_LOGGING=ON "
            f"(docs/mobile.md){'; it printed: ' + ' | '.join(shown) if shown else ''}"
        )

    def _read_facts(self) -> dict[str, Any]:
        online = self._read("cat /sys/devices/system/cpu/online")
        cores = parse_cpu_list(online) if online else []
        core = cores[-1] if cores and self.threads == 1 else None
        cpu = f"/sys/devices/system/cpu/cpu{core if core is not None else 0}/cpufreq"
        model = self._read("getprop ro.product.model")
        maker = self._read("getprop ro.product.manufacturer")
        max_khz = self._read(f"cat {cpu}/cpuinfo_max_freq")
        temps = self._read("cat /sys/class/thermal/thermal_zone*/temp")
        return {
            "serial": self.serial,
            "model": " ".join(part for part in (maker, model) if part) or None,
            "android_version": self._read("getprop ro.build.version.release"),
            "abi": self._read("getprop ro.product.cpu.abi"),
            "cores_online": online,
            "pinned_core": core,
            "governor": self._read(f"cat {cpu}/scaling_governor"),
            "max_freq_mhz": int(max_khz) / 1000 if max_khz and max_khz.isdigit() else None,
            "thermal_max_c": _hottest(temps),
        }

    @property
    def device_name(self) -> str:
        """What a table of this phone must match: its maker and model, else its serial."""
        return self.facts.get("model") or f"android {self.serial}"

    def meta(self) -> dict[str, Any]:
        return {
            "device_name": self.device_name,
            "android": {**self.facts, "runner": self.runner, "output": self.output},
        }

    def warnings(self) -> list[str]:
        found = []
        governor = self.facts.get("governor")
        if governor is None:
            found.append("the phone's CPU frequency governor is unreadable: frequency scaling not controlled")
        elif governor != "performance":
            found.append(f"the phone's CPU frequency governor is {governor!r}, not 'performance': timings may drift")
        if self.threads == 1 and self.facts.get("pinned_core") is None:
            found.append("the phone's online cores are unreadable: the runner is not pinned to one core")
        hottest = self.facts.get("thermal_max_c")
        if hottest is not None and hottest >= 45:
            found.append(f"the phone is warm ({hottest:.0f} C at its hottest sensor): it may throttle")
        return found

    # -- programs ----------------------------------------------------------------------------
    def prepare(self, program: bytes, input_shape: tuple[int, ...]) -> DeviceProgram:
        """Keep ``program`` on the host under its content hash; ``measure`` pushes it."""

        sha = hashlib.sha256(program).hexdigest()[:32]
        local = cache_dir() / "programs" / f"{sha}.pte"
        if not local.is_file():
            write_bytes_atomic(local, program)
        remote = posixpath.join(self.programs_dir, f"{sha}.pte")
        return DeviceProgram(_not_here, label=remote, remote=remote, local=local, sha=sha)

    def _push(self, programs: Sequence[Runner]) -> None:
        """Push the programs the device lacks, in one ``adb push``."""
        folder = shlex.quote(self.programs_dir)
        self._check(self.shell(f"mkdir -p {folder}"), "mkdir")
        listing = self.shell(f"ls {folder}")
        present = set(listing.stdout.split()) if listing.returncode == 0 else set()
        missing = {}
        for program in programs:
            if not isinstance(program, DeviceProgram):
                raise HwnasError("only programs prepared for the android device can run on it")
            if f"{program.sha}.pte" not in present:
                missing[program.sha] = str(program.local)
        if missing:
            self._check(self._adb("push", *missing.values(), self.programs_dir + "/", timeout=RUN_TIMEOUT_S), "push")

    def _run(self, remote: str, executions: int) -> subprocess.CompletedProcess:
        command = [str(self.runner), f"--model_path={remote}", f"--num_executions={executions}"]
        if self.threads is not None:
            command.append(f"--cpu_threads={self.threads}")
        core = self.facts.get("pinned_core")
        if core is not None:
            command = ["taskset", format(1 << core, "x"), *command]
        result = self.shell(" ".join(shlex.quote(part) for part in command), timeout=RUN_TIMEOUT_S)
        return self._check(result, f"{self.runner} on {posixpath.basename(remote)}")

    def _logcat(self) -> str:
        return self._check(self._adb("logcat", "-d", "-v", "threadtime", "-s", LOGCAT_TAG), "logcat").stdout

    def _check(self, result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
        if result.returncode == 0:
            return result
        said = (result.stderr or result.stdout).strip()
        state = self._adb("get-state")
        if state.returncode != 0 or state.stdout.strip() != "device" or any(word in said for word in LOST):
            raise HwnasError(
                f"the device {self.serial} stopped answering during {what} ({said.splitlines()[-1] if said else 'no message'}): "
                "everything measured so far is saved; reconnect it and run the same command again to resume"
            )
        raise HwnasError(f"{what} failed on {self.serial} (exit {result.returncode}): {said[-500:]}")

    # -- measuring ---------------------------------------------------------------------------
    def iterations(self, remote: str, executions: int) -> list[float]:
        """One runner call: the milliseconds of each of its ``executions`` runs."""
        if self.output == "logcat":
            self._adb("logcat", "-c")
        result = self._run(remote, executions)
        times = parse_iterations(self._logcat() if self.output == "logcat" else result.stdout + result.stderr)
        if len(times) != executions:
            raise HwnasError(
                f"the runner printed {len(times)} iteration lines for {executions} runs of {remote} ({self.output}); "
                "is another process logging the same lines?"
            )
        return times

    def measure_once(self, program: Runner, warm_up_by_time: bool) -> Timing:
        """One round of one program (see the module docstring for how warm-up runs are dropped)."""
        assert isinstance(program, DeviceProgram)
        protocol = self.protocol
        samples: list[float] = []
        wanted = protocol.min_runs
        first = warm_up_by_time
        while True:
            times = self.iterations(program.remote, protocol.warmup_runs + wanted)
            drop = protocol.warmup_runs
            if first:  # the item's first call: warm up for warmup_s too, as on the host
                spent, drop_at = 0.0, len(times)  # all of them, unless warm-up ends within the call
                for index, ms in enumerate(times):
                    if index >= drop and spent >= protocol.warmup_s * 1e3:
                        drop_at = index
                        break
                    spent += ms
                drop = max(drop, drop_at)
                first = False
            samples += times[drop:]
            if len(samples) >= protocol.max_runs or (len(samples) >= protocol.min_runs and sum(samples) >= protocol.min_s * 1e3):
                break
            estimate = statistics.median(samples or times)
            short_ms = protocol.min_s * 1e3 - sum(samples)
            wanted = max(protocol.min_runs - len(samples), math.ceil(short_ms / max(estimate, 1e-6)), 1)
            wanted = min(wanted, protocol.max_runs - len(samples))
        return Timing.from_samples(samples[: protocol.max_runs])

    def round_measurer(self, runners: Sequence[Runner]) -> Callable[[Runner, bool], Timing]:
        """Push every program; the runtime's interleaved rounds are then each a runner call (``measure_once``)."""
        self._push(runners)
        return self.measure_once


def _hottest(text: str | None) -> float | None:
    """The hottest of ``thermal_zone*/temp`` readings (millidegrees, or degrees on some kernels)."""
    if not text:
        return None
    values = [int(v) for v in text.split() if v.lstrip("-").isdigit()]
    if not values:
        return None
    hottest = max(values)
    return hottest / 1000 if hottest > 1000 else float(hottest)


def phone_options(device: str, adb: str | None, serial: str | None, runner: str | None) -> dict[str, Any]:
    """The runtime options that reach a phone (``device == "android"``); refused with any other device."""
    given = {"adb": adb, "serial": serial, "runner": runner}
    if device != "android":
        named = [f"--{name}" for name, value in given.items() if value is not None]
        if named:
            raise HwnasError(f"{', '.join(named)} go{'es' if len(named) == 1 else ''} with --device android")
        return {}
    return given


def phone_name(options: dict[str, Any], threads: int | None) -> str | None:
    """The attached phone's name (what its table records), or None when ``options`` reach no phone."""
    if not options:
        return None
    return AndroidTarget(options["adb"], options["serial"], options["runner"], threads, check_runner=False).device_name
