"""The latency model of a space under a table: ``latency_model`` picks the chain, DAG or cell model.

Each implements ``hwnas.latency.predictor.LatencyPredictor``; a table with a whole-net model
predicts through it (``hwnas.latency.whole_net``). The table keys and the calibration live in
``hwnas.latency.keys`` and ``hwnas.latency.calibration`` and stay importable from here.
"""

from __future__ import annotations

import math

from hwnas.errors import HwnasError
from hwnas.latency.calibration import apply_calibration, calibration_formula, calibration_record, count_ops
from hwnas.latency.cell_model import CellLatencyModel
from hwnas.latency.chain_model import LatencyModel
from hwnas.latency.dag_model import DagLatencyModel
from hwnas.latency.keys import check_covers, head_key, overhead_key, profile_command, required_keys, stem_key
from hwnas.latency.predictor import LatencyPredictor
from hwnas.latency.table import LatencyTable, recalibrate
from hwnas.latency.whole_net import with_whole_net
from hwnas.spaces import DagSpace, Space
from hwnas.spaces.nb201 import Nb201Space

# Kept importable from here, where they lived before their own modules (keys, calibration, chain_model).
__all__ = [
    "LatencyModel",
    "LatencyPredictor",
    "apply_calibration",
    "calibration_formula",
    "calibration_record",
    "check_covers",
    "check_positive",
    "count_ops",
    "head_key",
    "latency_model",
    "overhead_key",
    "profile_command",
    "required_keys",
    "stem_key",
]


def latency_model(table: LatencyTable, space: Space) -> LatencyPredictor:
    """The latency model of ``space`` under ``table``: ``LatencyModel`` for a chain space, ``DagLatencyModel`` for a DAG
    space, ``CellLatencyModel`` for ``nb201``; its ``predict`` goes through the table's whole-net model where it has one
    (``hwnas.latency.whole_net``)."""
    if isinstance(space, DagSpace):
        model = DagLatencyModel(table, space)
    elif isinstance(space, Nb201Space):
        model = CellLatencyModel(table, space)
    else:
        model = LatencyModel(table, space)
    check_positive(model)
    return with_whole_net(model, table.whole_net) if table.whole_net else model


def check_positive(model: LatencyPredictor) -> None:
    """Refuse a table whose calibration predicts a net of the space at 0 ms or less.

    With a positive slope and a per-op cost >= 0 (``LatencyTable`` checks both when it reads the
    file), the lowest prediction of the space is its fastest net's: if that is positive, every
    prediction the table can make is.
    """
    fastest_ms = model.fastest()[1]
    if not math.isfinite(fastest_ms) or fastest_ms <= 0:
        table = model.table
        raise HwnasError(
            f"latency table {table.path or ''}: its calibration ({calibration_formula(table.calibration or {'a': 1, 'b': 0})}) "
            f"predicts the fastest net of space {model.space.name} at {fastest_ms:.4g} ms, and a net takes more than 0 ms: "
            f"the intercept 'b' is too low; {recalibrate(table.path)}"
        )
