"""The latency table file: measured milliseconds per op spec, the device they belong to, a calibration.

One JSON file per (device, runtime, precision, batch size, space and input shape)::

    {"schema_version": 1,
     "meta": {"runtime", "runtime_version", "provider", "device", "device_name", "threads",
              "batch_size", "dtype", "space", "space_args", "hwnas_version", "created", ...},
     "entries": {"mb6_k5:c40-80:s2:h28w28": {"ms": 0.41, "p10": 0.40, "p90": 0.44, "n": 3}, ...},
     "calibration": {"a": 1.05, "b": 0.02, "per_op_ms": 0.006, ...} | null,
     "validation": {"n": 30, "mape": ..., "p90_relative_error": ..., "calibrated": {...}} | null,
     "whole_net": {"kind": "trees" | "span", ...} | null,   (hwnas.latency.whole_net; absent: null)
     "pending": {"mb6_k7:c40-80:s2:h28w28": [{"ms", "p10", "p90", "n"}, ...]}}

The table is written atomically after every single measurement, so a profile interrupted at
any point resumes from the file without losing one. An entry is measured in several
interleaved rounds; until all its rounds are done, its finished rounds wait in ``pending``
(not in ``entries``: a half-measured entry must not look complete).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError
from hwnas.files import os_reason, parse_json, write_json_atomic
from hwnas.latency.precision import precision_of_dtype
from hwnas.latency.whole_net import check_model, storable

SCHEMA_VERSION = 1

#: meta fields a table must share with what a command expects, else it belongs to another target
MATCHED_META = ("device", "device_name", "runtime", "batch_size", "dtype", "space_args", "space_sha256")
ENTRY_FIELDS = ("ms", "p10", "p90", "n")


class ForeignTableWarning(UserWarning):
    """A table from another device, runtime, batch size or shape was used on purpose."""


@dataclass
class LatencyTable:
    meta: dict[str, Any]
    entries: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    path: Path | None = None
    #: rounds measured so far of entries not yet complete: key -> [{"ms", "p10", "p90", "n"}, ...]
    pending: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    #: the whole-net model fitted on timed nets (``hwnas tables fit``), or None
    whole_net: dict[str, Any] | None = None
    #: SHA-256 of the file's bytes as read by ``load`` (a run records it: ``hwnas.run_table``)
    sha256: str | None = None

    # -- reading --------------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | Path, expect: dict[str, Any] | None = None, allow_foreign: bool = False, check_calibration: bool = True
    ) -> LatencyTable:
        """Read and check a table; ``expect`` holds meta values it must match (see ``MATCHED_META``).

        A mismatch is an error naming each differing field, or a ``ForeignTableWarning`` with
        ``allow_foreign``. ``check_calibration=False`` reads a table whose calibration is about to
        be replaced (``hwnas tables validate``) without judging that calibration.
        """
        path = Path(path)
        if not path.exists():
            raise HwnasError(f"latency table {path} does not exist")
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise HwnasError(f"latency table {path} cannot be read: {os_reason(error)}") from None
        table = cls.from_dict(parse_json(raw, f"latency table {path}"), source=str(path), check_calibration=check_calibration)
        table.path = path
        table.sha256 = hashlib.sha256(raw).hexdigest()
        if expect:
            table.check_matches(expect, allow_foreign)
        return table

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency table", check_calibration: bool = True) -> LatencyTable:
        if not isinstance(data, dict):
            raise HwnasError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise HwnasError(f"{source}: schema_version {version!r} is not supported (this hwnas reads {SCHEMA_VERSION})")
        meta, entries = data.get("meta"), data.get("entries")
        if not isinstance(meta, dict):
            raise HwnasError(f"{source}: 'meta' must be an object")
        for key in ("device", "runtime", "batch_size", "space", "space_args"):
            if key not in meta:
                raise HwnasError(f"{source}: meta lacks {key!r}")
        if not isinstance(entries, dict):
            raise HwnasError(f"{source}: 'entries' must be an object of key -> {{ms, p10, p90, n}}")
        for key, entry in entries.items():
            _check_entry(entry, f"{source}: entry {key!r}")
        pending = data.get("pending") or {}
        if not isinstance(pending, dict) or not all(isinstance(rounds, list) for rounds in pending.values()):
            raise HwnasError(f"{source}: 'pending' must be an object of key -> list of rounds")
        for key, rounds in pending.items():
            for i, entry in enumerate(rounds):
                _check_entry(entry, f"{source}: pending round {i} of {key!r}")
        calibration = data.get("calibration")
        if calibration is not None and check_calibration:
            path = source if source != "latency table" else None
            names = ("a", "b", "per_op_ms") if isinstance(calibration, dict) and "per_op_ms" in calibration else ("a", "b")
            if not isinstance(calibration, dict) or not all(
                isinstance(calibration.get(name), (int, float))
                and not isinstance(calibration.get(name), bool)
                and math.isfinite(calibration[name])
                for name in names
            ):
                raise HwnasError(
                    f"{source}: 'calibration' must be null or an object with finite numbers 'a', 'b' "
                    "(and 'per_op_ms' where given)"
                )
            if calibration["a"] <= 0:
                raise HwnasError(
                    f"{source}: calibration slope 'a' is {calibration['a']!r}: a slope that is not positive makes bigger nets "
                    f"predict as faster (or every net the same); {recalibrate(path)}"
                )
            if calibration.get("per_op_ms", 0.0) < 0:
                raise HwnasError(
                    f"{source}: calibration 'per_op_ms' is {calibration['per_op_ms']!r}: an op cannot cost less than nothing; "
                    f"{recalibrate(path)}"
                )
        validation = data.get("validation")
        if validation is not None and not isinstance(validation, dict):
            raise HwnasError(f"{source}: 'validation' must be null or an object")
        whole_net = data.get("whole_net")
        if whole_net is not None:
            check_model(whole_net, f"{source}: whole_net")
        return cls(
            meta=meta,
            entries={k: dict(v) for k, v in entries.items()},
            calibration=calibration,
            validation=validation,
            pending={k: [dict(r) for r in v] for k, v in pending.items()},
            whole_net=whole_net,
        )

    def check_matches(self, expect: dict[str, Any], allow_foreign: bool = False) -> None:
        where = self.path or "latency table"
        if "space_sha256" in expect and self.meta.get("space_sha256") != expect["space_sha256"]:  # never allowed
            has = self.meta.get("space_sha256")
            measured = f"space file {self.meta.get('space')!r} with sha256 {has}" if has else f"space {self.meta.get('space')!r}"
            raise HwnasError(
                f"{where} was measured for {measured}, not for this space file (sha256 {expect['space_sha256']}): the "
                "file changed since, or it is another one; profile this space file with `hwnas profile --space FILE.toml`"
            )
        differences = [
            f"{key}: table has {self.meta.get(key)!r}, expected {value!r}"
            for key, value in expect.items()
            if self.meta.get(key) != value
        ]
        if not differences:
            return
        message = f"{where} was measured for another target ({'; '.join(differences)})"
        if not allow_foreign:
            other_precision = "dtype" in expect and self.meta.get("dtype") != expect["dtype"]
            hint = (
                f" (or ask for its precision: --precision {precision_of_dtype(self.meta.get('dtype'))})"
                if other_precision
                else ""
            )
            raise HwnasError(
                message + f"; profile this target with `hwnas profile`{hint}, or pass --allow-foreign-table to use it anyway"
            )
        warnings.warn(message, ForeignTableWarning, stacklevel=2)

    # -- writing --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "meta": self.meta,
            "entries": self.entries,
            "calibration": self.calibration,
            "validation": self.validation,
            "pending": self.pending,
            **({"whole_net": storable(self.whole_net)} if self.whole_net else {}),
        }

    def save(self, path: str | Path | None = None) -> None:
        """Write the whole table atomically (a crash leaves the old file or the new, never half)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise HwnasError("latency table has no path to save to")
        write_json_atomic(target, self.to_dict())
        self.path = target

    # -- queries --------------------------------------------------------------------------
    def ms(self, key: str) -> float:
        return float(self.entries[key]["ms"])

    def missing(self, keys: list[str]) -> list[str]:
        return [key for key in keys if key not in self.entries]

    def require_calibration(self, uncalibrated: bool = False) -> None:
        """Refuse a table that was never calibrated against whole nets, unless raw sums were asked for.

        A raw sum of per-op timings misses a whole net by a share that depends on the machine
        (a third at 32x32 on this project's VM): a search aimed at it derives a net over budget.
        """
        if self.calibration is not None or uncalibrated:
            return
        where = self.path or "the latency table"
        raise HwnasError(
            f"latency table {where} has no calibration, so it predicts raw sums of per-op timings, which miss whole nets; "
            f"calibrate it with: hwnas tables validate {where} (or accept raw sums with --uncalibrated)"
        )

    @property
    def p90_relative_error(self) -> float | None:
        """The calibrated prediction's held-out p90 |relative error|, if the table was validated."""
        if not self.validation:
            return None
        calibrated = self.validation.get("calibrated") or {}
        value = calibrated.get("p90_relative_error", self.validation.get("p90_relative_error"))
        return float(value) if value is not None else None


def recalibrate(path: Any) -> str:
    """The fix for a calibration that cannot be right."""
    return f"fit it again with `hwnas tables validate {path or 'TABLE'}` (or set 'calibration' to null to use the plain sums)"


#: no op of a net is measured at an hour or more: a larger entry is a broken file, and sums of such entries overflow
MAX_ENTRY = 3.6e6


#: the lowest value of each entry field, and whether it is excluded
ENTRY_LOWS = {"ms": (0.0, True), "p10": (0.0, False), "p90": (0.0, False), "n": (0.0, False)}


def _check_entry(entry: Any, where: str) -> None:
    """An entry (or a pending round) is ``{"ms", "p10", "p90", "n"}``: ``ms`` in (0, MAX_ENTRY), the spread ``p10``
    and ``p90`` in [0, MAX_ENTRY) (a fast op's 10th percentile may round to 0), ``n`` the runs behind it (0: an entry
    fitted from whole nets by ``hwnas tables fit``, not measured).

    An ``ms`` of 0 or less is no measurement (every op takes some time), and it would let a sum
    of entries predict a net at 0 ms or less.
    """
    if not isinstance(entry, dict) or any(name not in entry for name in ENTRY_FIELDS):
        raise HwnasError(f"{where} must have fields {', '.join(ENTRY_FIELDS)}")
    for name in ENTRY_FIELDS:
        value, (low, open_low) = entry[name], ENTRY_LOWS[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not (value > low if open_low else value >= low) or not value < MAX_ENTRY:
            raise HwnasError(
                f"{where} field {name!r} must be a number in {'(' if open_low else '['}{low:g}, {MAX_ENTRY:g}), "
                f"got {value!r}; measure it again with `hwnas profile` (it resumes: delete the entry first)"
            )
