"""examples/own_space.py runs from start to end: a space file, generated images, profile, DSNAS search, export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_own_space_example_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_space.py"), str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("profiled ") and "of thumbs64" in lines[0] and lines[1].startswith("calibrated on whole nets")
    assert lines[2].startswith("derived thumbs64,resolution=32,num_classes=5:")
    assert lines[3].endswith(("PASS", "FAIL"))
    table = json.loads((tmp_path / "table.json").read_text())
    assert table["meta"]["space_file"]["text"] == (ROOT / "examples" / "thumbs64.toml").read_text()
    assert table["calibration"] is not None
    assert (tmp_path / "run" / "space.toml").is_file() and (tmp_path / "child.onnx").is_file()
    report = json.loads((tmp_path / "child.report.json").read_text())
    assert report["verdict"] in ("PASS", "FAIL") and report["source"]["run"] == str(tmp_path / "run")
    assert len(list((tmp_path / "images" / "train").iterdir())) == 5
