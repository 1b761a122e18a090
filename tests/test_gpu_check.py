"""bench/gpu_check.sh on a machine without a CUDA GPU: it says so and exits 0 (the part CI can run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the script would run its full check")
def test_gpu_check_says_no_cuda_gpu_and_exits_0(tmp_path):
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "HWNAS_GPU_CHECK_OUT": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU" in done.stdout
    assert not list(tmp_path.iterdir())  # nothing installed, profiled or written
