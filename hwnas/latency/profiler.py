"""``hwnas profile``: measure every unique op spec of a space (plus its stem and head) into a table.

The first item is an identity model: the runtime's fixed cost per call, which ``LatencyModel``
takes off the parts so that a sum of 23 separately timed calls counts it once, like the net.

Each item is built alone (a candidate op at its layer's shape, with the layer's shortcut add
where it has one, so the table times what the net runs), prepared by the runtime (exported to
ONNX for ONNX Runtime / TensorRT) and measured in interleaved rounds. The table file is
rewritten atomically after every single measurement; a rerun reads it back and measures only
what is missing, so a profile killed at any point loses at most the measurement in flight.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hwnas import __version__
from hwnas.errors import HwnasError
from hwnas.latency.fingerprint import device_fingerprint
from hwnas.latency.lookup import expected_meta, space_file_meta
from hwnas.latency.model import head_key, overhead_key, stem_key
from hwnas.latency.protocol import Timing, combine_rounds
from hwnas.latency.runtime_base import Runtime
from hwnas.latency.table import MATCHED_META, LatencyTable
from hwnas.progress import progress_bar
from hwnas.spaces import Space

#: meta fields that must agree before a rerun may resume an existing table (``clock``: how a runtime timed a call,
#: where it says, e.g. executorch's thread CPU time; entries timed by two clocks do not belong in one table)
RESUME_META = (*MATCHED_META, "space", "threads", "clock")


@dataclass(frozen=True)
class ProfileItem:
    """One table entry to measure: its key, how to build its module, and its input shape (batch included)."""

    key: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]


def profile_items(space: Space, batch_size: int = 1) -> list[ProfileItem]:
    """The runtime's per-call cost, the stem, every part a net of the space can run (``space.parts()``), the head."""
    items = [
        ProfileItem(overhead_key(space), nn.Identity, (batch_size, *space.input_shape)),
        ProfileItem(stem_key(space), space.build_stem, (batch_size, *space.input_shape)),
    ]
    items += [ProfileItem(part.key, part.build, (batch_size, *part.input_shape)) for part in space.parts()]
    items.append(ProfileItem(head_key(space), space.build_head, (batch_size, *space.head_in_shape)))
    return items


def table_meta(space: Space, runtime: Runtime, batch_size: int) -> dict[str, Any]:
    """Everything a table records about where and how it was measured."""
    return {
        **device_fingerprint(runtime.device),
        **runtime.meta(),
        **expected_meta(runtime.device, runtime.name, batch_size, runtime.precision, space, runtime.device_name()),
        "space": space.name,
        **space_file_meta(space),
        "threads": runtime.threads,
        "protocol": runtime.protocol.to_dict(),
        "hwnas_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "warnings": runtime.warnings(),
    }


def open_table(path: Path, meta: dict[str, Any], force: bool) -> tuple[LatencyTable, bool]:
    """The table to fill: the existing one at ``path`` if it belongs to this target (resume), else a new one.

    An existing file of another target, or one that cannot be read, is refused unless ``force``.
    Returns the table and whether it was resumed.
    """
    if path.exists() and not force:
        try:
            table = LatencyTable.load(path)
        except HwnasError as error:
            raise HwnasError(f"{error}; pass --force to replace it with a new profile") from None
        differences = [
            f"{key}: file has {table.meta.get(key)!r}, this run {meta.get(key)!r}"
            for key in RESUME_META
            if table.meta.get(key) != meta.get(key)
        ]
        if differences:
            raise HwnasError(
                f"{path} holds a table of another target ({'; '.join(differences)}); "
                "pass --force to replace it, or choose another -o"
            )
        table.meta.setdefault("resumed", [])
        table.meta["resumed"].append({"at": meta["created"], "warnings": meta["warnings"]})
        return table, True
    return LatencyTable(meta=meta, path=path), False


@dataclass
class ProfileSummary:
    table: str
    entries: int
    measured: int
    measurements: int
    resumed: bool
    wall_s: float
    warnings: list[str]  # what could not be controlled during this run (also recorded in the table)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def profile_space(
    space: Space,
    runtime: Runtime,
    output: str | Path,
    batch_size: int = 1,
    force: bool = False,
    progress: bool = True,
    on_measured: Callable[[str, int], None] | None = None,
) -> ProfileSummary:
    """Measure every entry ``space`` needs that ``output`` lacks, saving after each measurement.

    ``on_measured(key, round)`` is called after each save (tests use it to interrupt a run).
    """
    if batch_size < 1:
        raise HwnasError(f"--batch-size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    path = Path(output)
    meta = table_meta(space, runtime, batch_size)
    table, resumed = open_table(path, meta, force)
    rounds = runtime.protocol.rounds
    items = profile_items(space, batch_size)
    table.pending = {key: value for key, value in table.pending.items() if key in {item.key for item in items}}
    for key in list(table.pending):  # a run with more rounds left enough for this one
        _complete_if_done(table, key, rounds)
    todo = [item for item in items if item.key not in table.entries]
    table.save(path)
    done = [len(table.pending.get(item.key, [])) for item in todo]
    remaining = sum(rounds - d for d in done)
    bar = _progress_bar(remaining, f"profile {space.name} ({runtime.name}, {runtime.device})", progress)
    runners = _prepare(runtime, todo, bar)

    def save(index: int, round_index: int, timing: Timing) -> None:
        key = todo[index].key
        table.pending.setdefault(key, []).append(timing.to_entry())
        _complete_if_done(table, key, rounds)
        if key in table.entries:  # what the runtime found while preparing it (ExecuTorch: how much was delegated)
            table.entries[key].update(runners[index].info)
        table.save(path)
        bar.update(1)
        if on_measured is not None:
            on_measured(key, round_index)

    try:
        runtime.measure(runners, rounds, save, done)
    finally:
        bar.close()
    return ProfileSummary(
        str(path), len(table.entries), len(todo), remaining, resumed, time.perf_counter() - started, meta["warnings"]
    )


def _complete_if_done(table: LatencyTable, key: str, rounds: int) -> None:
    """Move ``key`` from ``pending`` to ``entries`` once it has ``rounds`` rounds (median over them)."""
    measured = table.pending.get(key, [])
    if len(measured) >= rounds:
        table.entries[key] = combine_rounds([Timing.from_entry(entry) for entry in measured]).to_entry()
        del table.pending[key]


def _prepare(runtime: Runtime, todo: list[ProfileItem], bar) -> list:
    """Build and prepare (export, load) every item before the first round, so rounds time only runs."""
    if todo:
        bar.set_postfix_str(f"preparing {len(todo)} items", refresh=True)
    runners = [runtime.prepare_module(item.build(), item.input_shape) for item in todo]
    bar.set_postfix_str("", refresh=False)
    return runners


def _progress_bar(total: int, description: str, enabled: bool):
    return progress_bar(total=total, desc=description, unit="meas", enabled=enabled and total > 0, leave=True)
