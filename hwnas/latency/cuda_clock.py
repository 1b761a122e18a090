"""Timing GPU work: CUDA events recorded on the stream around each run, read after one synchronise.

The host clock would time only the kernel *launch* (ProxylessNAS's own latency script forgot
to synchronise); events measure when the GPU actually ran the work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hwnas.errors import HwnasError
from hwnas.latency.protocol import Clock


def require_cuda() -> None:
    """Raise with the reason when CUDA cannot be used here."""
    if not torch.cuda.is_available():
        raise HwnasError(f"device cuda: no CUDA GPU is available (torch {torch.__version__}, CUDA build {torch.version.cuda})")


class CudaEventClock(Clock):
    """Per-run elapsed GPU time between two ``torch.cuda.Event`` s on the current stream."""

    def time_runs(self, fn: Callable[[], object], count: int) -> list[float]:
        pairs = []
        for _ in range(count):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in pairs]


class SynchronisedClock(Clock):
    """Host clock around a run followed by ``torch.cuda.synchronize()``: for work on streams events do not see."""

    def time_runs(self, fn: Callable[[], object], count: int) -> list[float]:
        def synchronised() -> None:
            fn()
            torch.cuda.synchronize()

        torch.cuda.synchronize()
        return super().time_runs(synchronised, count)
