"""The budget verdict: the artifact's measured latency against the budget, beside the prediction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """PASS when the measured median is at or under the budget; ``None`` fields were not asked for."""

    budget_ms: float | None
    predicted_ms: float | None
    measured_ms: float
    measured_p90_ms: float
    max_abs_error: float

    @property
    def verdict(self) -> str | None:
        if self.budget_ms is None:
            return None
        return "PASS" if self.measured_ms <= self.budget_ms else "FAIL"

    @property
    def prediction_error(self) -> float | None:
        """(measured - predicted) / predicted: how far the table's prediction was off."""
        if self.predicted_ms is None:
            return None
        return (self.measured_ms - self.predicted_ms) / self.predicted_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}

    def lines(self) -> list[str]:
        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f} ms"

        error = self.prediction_error
        off = "" if error is None else f" ({error:+.1%} vs predicted)"
        return [
            f"budget     {ms(self.budget_ms)}",
            f"predicted  {ms(self.predicted_ms)}",
            f"measured   {ms(self.measured_ms)} median, {ms(self.measured_p90_ms)} p90{off}",
            f"verdict    {self.verdict or 'none (no budget given)'}",
        ]
