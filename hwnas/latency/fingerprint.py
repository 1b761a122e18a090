"""What identifies the machine a latency table was measured on, and what could not be controlled."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError


def cpu_model() -> str:
    """The CPU model name as the kernel reports it (``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """The name that must match for a table to be this machine's: the CPU model or the GPU name.

    A phone's name is read over adb (``Runtime.device_name``), never guessed from the host.
    """
    if device == "android":
        raise HwnasError("the name of an android device is read from the device over adb; pass it along (a bug in hwnas)")
    if device == "cuda":
        if not torch.cuda.is_available():
            return "cuda (not available)"
        return torch.cuda.get_device_name(0)
    return cpu_model()


def device_fingerprint(device: str) -> dict[str, Any]:
    """Device facts recorded in a table's ``meta``."""
    facts: dict[str, Any] = {
        "device": device,
        "device_name": None if device == "android" else device_name(device),  # a phone's: from the runtime
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device == "cuda" and torch.cuda.is_available():
        facts["gpu_name"] = torch.cuda.get_device_name(0)
        facts["cuda"] = torch.version.cuda
        facts["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return facts


def measurement_warnings(device: str) -> list[str]:
    """Conditions that skew timings and that hwnas cannot control: recorded, never silenced."""
    warnings: list[str] = []
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor.exists():
        value = governor.read_text().strip()
        if value != "performance":
            warnings.append(f"CPU frequency governor is {value!r}, not 'performance': timings may drift")
    else:
        warnings.append("CPU frequency governor unknown (no cpufreq in /sys): frequency scaling not controlled")
    try:
        load1 = os.getloadavg()[0]
        if load1 > 0.5 * (os.cpu_count() or 1):
            warnings.append(f"1-minute load average {load1:.2f} on {os.cpu_count()} cores: other work competes")
    except OSError:
        pass
    return warnings
