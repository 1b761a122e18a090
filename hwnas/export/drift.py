"""Has the machine changed since the table was validated? Reference nets timed beside the artifact.

A table's calibration describes the machine as it ran while the table was validated, and shared
or throttled machines drift (measured: ``docs/latency_models.md``). So the export also times a
few of the nets the validation measured, those whose prediction is nearest the artifact's (drift
does not carry over across net sizes), interleaved with the artifact in the same rounds. The
median of their ``now / at validation`` ratios is the drift; the prediction times the drift is
what the table predicts for the machine as it runs now. A drift beyond ``DRIFT_WARNING`` is
reported with the command that re-validates the table. The validation's nets are random archs
plus the space's fastest and slowest nets, since random archs never come near the fastest.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency import LatencyPredictor

#: a drift beyond this (either way) makes the export say the table should be re-validated
DRIFT_WARNING = 0.10
DEFAULT_REFERENCES = 3


@dataclass(frozen=True)
class Reference:
    """A net the table's validation measured: the arch and its latency back then."""

    arch: Arch
    validated_ms: float


def pick_references(model: LatencyPredictor, predicted_ms: float, count: int = DEFAULT_REFERENCES) -> list[Reference]:
    """The ``count`` validation nets of the model's table predicted nearest to ``predicted_ms``.

    An empty list when the table was never validated (there is nothing to compare with) or
    ``count`` is 0: then its points are not even read, so ``--references 0`` gets past a malformed one.
    """
    if count <= 0:
        return []
    validation = model.table.validation or {}
    points = (validation.get("points") or []) + (validation.get("anchors") or [])
    candidates = []
    for index, point in enumerate(points):
        try:
            arch, validated_ms = Arch.from_compact(point["arch"]), float(point["measured_ms"])
            distance = abs(model.predict(arch) - predicted_ms)
        except (HwnasError, KeyError, TypeError, ValueError) as error:
            raise HwnasError(
                f"latency table {model.table.path}: validation point {index} is malformed ({error}); "
                f"re-validate it with hwnas tables validate, or pass --references 0"
            ) from None
        candidates.append((distance, Reference(arch, validated_ms)))
    candidates.sort(key=lambda pair: pair[0])
    return [reference for _, reference in candidates[:count]]


@dataclass(frozen=True)
class Drift:
    """Reference nets measured now against their validation figures."""

    references: list[tuple[str, float, float]]  # (compact arch, validated ms, measured now ms)

    @property
    def ratio(self) -> float:
        """Median of now / at validation: above 1 the machine runs slower than when the table was validated."""
        return statistics.median(now / then for _, then, now in self.references)

    @property
    def significant(self) -> bool:
        return abs(self.ratio - 1) > DRIFT_WARNING

    def to_dict(self, predicted_ms: float | None) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "predicted_now_ms": None if predicted_ms is None else predicted_ms * self.ratio,
            "references": [{"arch": arch, "validated_ms": then, "measured_ms": now} for arch, then, now in self.references],
        }

    def lines(self, predicted_ms: float | None, measured_ms: float, table_path: str | None) -> list[str]:
        change = f"{abs(self.ratio - 1):.0%} {'slower' if self.ratio >= 1 else 'faster'}"
        lines = [
            f"drift      {len(self.references)} nets of the table's validation, timed beside the artifact, take "
            f"{self.ratio:.2f}x their validation time ({change})"
        ]
        if predicted_ms is not None:
            now = predicted_ms * self.ratio
            lines.append(
                f"           predicted for the machine as it runs now: {now:.3f} ms (measured {(measured_ms - now) / now:+.1%} vs this)"
            )
        if self.significant:
            lines.append(f"           the table's calibration is out of date here: hwnas tables validate {table_path or 'TABLE'}")
        return lines
