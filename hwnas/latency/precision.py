"""The numeric precisions a net is measured and shipped in: the only list of their names.

A precision is part of a latency table's target, like its device and runtime: it is recorded
as the table's ``meta["dtype"]`` (``float32``, ``float16``, ``int8``; tables made before
``--precision`` existed say ``float32`` or ``float16``), and a search or an export refuses a
table of another precision the way it refuses a table of another device. Each runtime says
which precisions it can run (``Runtime.precisions``); asking it for another is an error that
names the runtimes that can.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.errors import HwnasError


@dataclass(frozen=True)
class Precision:
    name: str  #: the ``--precision`` value
    dtype: str  #: what a table's ``meta["dtype"]`` says
    help: str


#: every precision by its ``--precision`` name
PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "float32", "float32 everywhere"),
        Precision("fp16", "float16", "float16 (GPU runtimes)"),
        Precision("int8", "int8", "post-training static INT8 quantization: int8 weights (per channel) and activations"),
    )
}
DEFAULT = "fp32"


def resolve_precision(precision: str | None, fp16: bool = False) -> str:
    """The precision asked for: ``precision``, or ``fp16`` where only the old ``fp16`` flag was given, else fp32."""
    if precision is not None and precision not in PRECISIONS:
        raise HwnasError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if fp16 and precision not in (None, "fp16"):
        raise HwnasError(f"--fp16 is --precision fp16; it cannot go with --precision {precision}")
    return "fp16" if fp16 else precision or DEFAULT


def dtype_of(precision: str) -> str:
    """The ``meta["dtype"]`` of tables measured at ``precision``."""
    return PRECISIONS[resolve_precision(precision)].dtype


def precision_of_dtype(dtype: str | None) -> str:
    """The precision of a table whose meta says ``dtype`` (a table without one is float32)."""
    for precision in PRECISIONS.values():
        if precision.dtype == (dtype or "float32"):
            return precision.name
    raise HwnasError(f"latency table dtype {dtype!r} is none of {', '.join(p.dtype for p in PRECISIONS.values())}")
