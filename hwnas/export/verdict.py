"""The budget verdict: the artifact's measured latency against the budget, beside the prediction.

A close call is measured again. On a shared machine a burst of other work can move the median of
a few rounds by more than the distance between a net and its budget (measured: a demo export read
+4 % over its budget where two re-exports a minute later read 3.9 % and 4.6 % under it,
docs/demo.md). So a first reading within ``CLOSE_CALL`` of the budget, on either side, gets
twice as many rounds again, and the verdict is the median over all of them: the rule does not
look at which side the first reading fell on, so it leans neither to PASS nor to FAIL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: a first reading this close to the budget (a share of it, either side) is measured again
CLOSE_CALL = 0.10


def extra_rounds(first_ms: float, budget_ms: float | None, rounds: int) -> int:
    """How many more rounds a first reading of ``first_ms`` over ``rounds`` rounds needs: ``2 x rounds`` within
    ``CLOSE_CALL`` of the budget, either side, else 0 (and 0 without a budget)."""
    if budget_ms is None or abs(first_ms - budget_ms) > CLOSE_CALL * budget_ms:
        return 0
    return 2 * rounds


@dataclass(frozen=True)
class Verdict:
    """PASS when the measured median is at or under the budget; ``None`` fields were not asked for.

    ``measured_ms`` is the median over every round; where the first ``rounds`` rounds were a close
    call (``extra_rounds``), ``first_ms`` is what they read and ``extra_rounds`` how many followed.
    """

    budget_ms: float | None
    predicted_ms: float | None
    measured_ms: float
    measured_p90_ms: float
    max_abs_error: float
    rounds: int = 1
    extra_rounds: int = 0
    first_ms: float | None = None

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
        lines = [
            f"budget     {ms(self.budget_ms)}",
            f"predicted  {ms(self.predicted_ms)}",
            f"measured   {ms(self.measured_ms)} median, {ms(self.measured_p90_ms)} p90{off}",
        ]
        if self.extra_rounds:
            first = self.rounds - self.extra_rounds
            lines.append(
                f"           a close call: the first {first} rounds read {ms(self.first_ms)}, within {CLOSE_CALL:.0%} of the "
                f"budget; {self.extra_rounds} more rounds were measured and the median is over all {self.rounds}"
            )
        return [*lines, f"verdict    {self.verdict or 'none (no budget given)'}"]
