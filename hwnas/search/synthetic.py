"""SYNTHETIC latency tables for tests and benchmarks of the search machinery — never measurements.

The search needs a table for every space it runs on; tests and the step-cost benchmark must
not depend on a profile of this machine. These tables put ``ms`` proportional to each op's
FLOPs (plus a per-op overhead), which keeps the ordering of real tables (bigger ops are
slower) and nothing else. Their meta says ``"synthetic": true``.
"""

from __future__ import annotations

from pathlib import Path

from hwnas.latency import LatencyTable, head_key, stem_key
from hwnas.latency.lookup import expected_meta
from hwnas.spaces import DagSpace, Space
from hwnas.spaces.nb201 import Nb201Space


def synthetic_table(space: Space, ms_per_mflop: float = 0.01, overhead_ms: float = 0.005, threads: int = 1) -> LatencyTable:
    """A table covering ``space`` with made-up ms; meta matches this machine (cpu, onnxruntime, batch 1)."""
    meta = expected_meta("cpu", "onnxruntime", 1, "fp32", space)
    meta.update(space=space.name, threads=threads, synthetic=True)
    entries = {}
    if isinstance(space, (DagSpace, Nb201Space)):  # spaces whose parts are more than one op per layer
        costs = {part.key: space._part_cost(part.key).flops for part in space.parts()}
    else:
        costs = {spec.key: space._spec_cost(spec).flops for spec in space.op_specs()}
    for key, flops in costs.items():
        ms = overhead_ms + ms_per_mflop * flops / 1e6
        entries[key] = {"ms": ms, "p10": ms, "p90": ms, "n": 1}
    fixed = overhead_ms + ms_per_mflop * Space.fixed_cost(space).flops / 1e6 / 2
    for key in (stem_key(space), head_key(space)):
        entries[key] = {"ms": fixed, "p10": fixed, "p90": fixed, "n": 1}
    # the sum is these tables' latency by construction: an identity calibration says so
    identity = {"a": 1.0, "b": 0.0, "per_op_ms": 0.0, "fit": "identity (synthetic table)", "by": "synthetic_table"}
    return LatencyTable(meta=meta, entries=entries, calibration=identity)


def write_synthetic_table(space: Space, path: Path, **kwargs: float) -> Path:
    table = synthetic_table(space, **kwargs)
    table.save(path)
    return path
