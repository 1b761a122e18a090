"""Packaging: every subpackage is installed, and a wheel carries the shipped latency tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "hwnas").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert "hwnas.latency_tables" in listed


@pytest.mark.slow
def test_a_built_wheel_carries_the_tables_and_finds_them_installed(tmp_path):
    """Build the wheel for real, install it into a folder of its own, and load every shipped table from there."""
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("hwnas-*.whl")
    tables = sorted(p.name for p in (ROOT / "latency_tables").glob("*.json"))
    with zipfile.ZipFile(wheel) as archive:
        assert (
            sorted(Path(n).name for n in archive.namelist() if n.startswith("hwnas/latency_tables/") and n.endswith(".json"))
            == tables
        )
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    probe = (
        "import json, hwnas; from hwnas.latency import LatencyTable; from hwnas.latency.lookup import shipped_tables_dir; "
        "d = shipped_tables_dir(); print(json.dumps({'package': hwnas.__file__, 'dir': str(d), "
        "'tables': sorted(p.name for p in d.glob('*.json') if LatencyTable.load(p).entries)}))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    found = json.loads(
        subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    )
    assert Path(found["package"]).is_relative_to(target)  # the wheel's copy, not this checkout
    assert Path(found["dir"]).is_relative_to(target) and found["tables"] == tables
