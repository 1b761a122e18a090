"""``hwnas tables fit``: whole-net timings into a table's whole-net model, or into a new table (alone or from priors).

The timings file is CSV with a header ``arch,ms``, one row per net timed on the target;
``arch`` in the compact form (``SPACE[,key=value...]:choices``) or, for ``nb201``, the bare
NB201 string. See ``hwnas.latency.whole_net`` for the model and the two ways a new table is made.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency.accuracy import spearman
from hwnas.latency.model import head_key, latency_model, stem_key
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import calibration_fit
from hwnas.latency.whole_net import (
    MIN_TIMINGS_ALONE,
    MIN_TIMINGS_PRIOR,
    entries_from_timings,
    feature_matrix,
    feature_names,
    fit_model,
    predict_log,
    span_model,
)
from hwnas.spaces import Space

#: a fitted entry never costs less than this (a table's entries are positive: ``hwnas.latency.table``)
MIN_FITTED_MS = 1e-6


def parse_arch(text: str, space: Space) -> tuple[str, ...]:
    """The choices of one arch of ``space``: a compact arch of it, or (its own form) the bare choices."""
    text = text.strip()
    if text.startswith(f"{space.name}:") or text.startswith(f"{space.name},"):
        arch = Arch.from_compact(text)
        if arch.build_space().args != space.args:
            raise HwnasError(f"arch {text!r} has space options {arch.space_args}, the table {space.args.to_dict()}")
        choices = arch.choices
    elif ":" in text:
        raise HwnasError(f"arch {text!r} is not of space {space.name!r}")
    else:
        choices = space.parse_choices(text)
    space.validate(choices)
    return tuple(choices)


def read_timings(path: str | Path, space: Space) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """The archs and milliseconds of a timings CSV (``arch,ms``); a clear error naming the row for anything else."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise HwnasError(f"cannot read timings {path}: {error}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0]] != ["arch", "ms"]:
        raise HwnasError(f"{path}: the first line must be the header 'arch,ms'")
    archs, ms = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise HwnasError(f"{path} line {line}: expected 2 fields (arch,ms), got {len(row)}")
        # a compact arch holds commas (its space options): the last field is the ms, the others the arch
        row = [",".join(row[:-1]), row[-1]]
        try:
            value = float(row[1])
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise HwnasError(f"{path} line {line}: ms must be a positive number, got {row[1]!r}")
        try:
            archs.append(parse_arch(row[0], space))
        except HwnasError as error:
            raise HwnasError(f"{path} line {line}: {error}") from None
        ms.append(value)
    if not archs:
        raise HwnasError(f"{path}: no timings")
    return archs, np.array(ms)


def fit_into(table: LatencyTable, space: Space, archs: Sequence[Sequence[str]], ms: np.ndarray) -> dict:
    """Fit the whole-net model on ``archs`` timed at ``ms`` and store it in ``table`` (not saved here).

    The model's line starts from the table's sum, calibrated on these nets (``table_line``).
    """
    if len(ms) < MIN_TIMINGS_PRIOR:
        raise HwnasError(f"a whole-net model needs at least {MIN_TIMINGS_PRIOR} timed nets, got {len(ms)}")
    table.whole_net = fit_model(space, archs, ms, base=table_line(table, space, archs, ms))
    return table.whole_net


def table_line(table: LatencyTable, space: Space, archs: Sequence[Sequence[str]], ms: np.ndarray) -> dict:
    """The table's sum under the calibration ``hwnas tables validate`` would fit on these nets, as a line over the model's features.

    ``a * sum + c * ops + b`` (``calibration_fit``, its physical forms, the space's fastest net
    among the checks) is linear in the counts of parts the net runs: each part's count weighs
    ``a`` times its entry, the ``ops`` feature ``c``, the intercept is ``a`` times the fixed
    parts plus ``b``. ``{"coef", "intercept", "calibration"}``.
    """
    additive = latency_model(LatencyTable(meta=table.meta, entries=table.entries), space)
    sums = [additive.sum_ms(Arch.of(space, tuple(choices))) for choices in archs]
    ops = [space.count_ops(choices) for choices in archs]
    fastest = additive.fastest()[0]
    line = calibration_fit(sums, [float(v) for v in ms], (additive.sum_ms(fastest), space.count_ops(fastest.choices)), ops)
    a, c = float(line["a"]), float(line.get("per_op_ms", 0.0))
    coef = [
        a * additive.part_ms[name.removeprefix("count:")] if name.startswith("count:") else (c if name == "ops" else 0.0)
        for name in feature_names(space)
    ]
    return {"coef": coef, "intercept": a * additive.fixed_ms + float(line["b"]), "calibration": line}


def fit_table(
    space: Space,
    archs: Sequence[Sequence[str]],
    ms: np.ndarray,
    priors: Sequence[LatencyTable] = (),
    device_name: str | None = None,
) -> LatencyTable:
    """A new table of ``space`` from whole-net timings: from the timings alone, or a span over ``priors``."""
    fixed = [stem_key(space), head_key(space), *getattr(space, "fixed_part_keys", list)()]
    for prior in priors:
        if prior.meta.get("space") != space.name or prior.meta.get("space_args") != space.args.to_dict():
            raise HwnasError(
                f"prior {prior.path}: a table of {prior.meta.get('space')} {prior.meta.get('space_args')}, "
                f"not {space.name} {space.args.to_dict()}"
            )
        if not prior.whole_net:
            raise HwnasError(
                f"prior {prior.path} has no whole-net model; fit one with: hwnas tables fit {prior.path} --timings ..."
            )
    if priors:
        if len(ms) < MIN_TIMINGS_PRIOR:
            raise HwnasError(f"--timings: at least {MIN_TIMINGS_PRIOR} timed nets with priors, got {len(ms)}")
        model = span_model([p.whole_net for p in priors], [str(p.path) for p in priors], feature_matrix(space, archs), ms)
        entries = _scaled_prior_entries(space, archs, ms, priors)
        how = f"span over {len(priors)} prior tables"
    else:
        if len(ms) < MIN_TIMINGS_ALONE:
            raise HwnasError(
                f"--timings: {len(ms)} timed nets are too few to fit a table from whole nets alone (at least "
                f"{MIN_TIMINGS_ALONE}); give tables of other devices with --prior"
            )
        entries = entries_from_timings(space, archs, ms, fixed)
        model = fit_model(space, archs, ms)
        how = "whole nets alone"
    meta = {
        "device": "external",
        "device_name": device_name or "timed whole nets",
        "runtime": "external",
        "batch_size": 1,
        "dtype": "float32",
        "space": space.name,
        "space_args": space.args.to_dict(),
        "threads": None,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "fitted_from": f"{len(ms)} whole-net timings, {how}",
    }
    table = LatencyTable(
        meta=meta,
        entries={
            key: {
                "ms": max(float(v), MIN_FITTED_MS),
                "p10": max(float(v), MIN_FITTED_MS),
                "p90": max(float(v), MIN_FITTED_MS),
                "n": 0,
            }
            for key, v in entries.items()
        },
        calibration={"a": 1.0, "b": 0.0, "fit": "whole-net timings"},
    )
    table.whole_net = model
    return table


def _scaled_prior_entries(space: Space, archs, ms: np.ndarray, priors: Sequence[LatencyTable]) -> dict[str, float]:
    """The priors' mean entries, scaled so that their sum matches the timings (median ratio): the search's surrogate."""

    keys = list(priors[0].entries)
    mean = {key: float(np.mean([p.entries[key]["ms"] if key in p.entries else 0.0 for p in priors])) for key in keys}
    probe = LatencyTable(
        meta=dict(priors[0].meta),
        entries={k: {"ms": max(v, MIN_FITTED_MS), "p10": v, "p90": v, "n": 0} for k, v in mean.items()},
    )
    model = latency_model(probe, space)
    sums = np.array([model.predict(Arch.of(space, tuple(c))) for c in archs])
    scale = float(np.median(ms / np.maximum(sums, 1e-9)))
    return {key: value * scale for key, value in mean.items()}


#: fewer timed nets than this: no held-out score, every net fits the model
MIN_HOLDOUT = 50


def score_holdout(table: LatencyTable, space: Space, archs: Sequence[Sequence[str]], ms: np.ndarray, seed: int = 0) -> dict:
    """With enough nets, fit on 80 % and score the table's sum and the whole-net model on the other 20 % (side by side)."""

    if len(ms) < MIN_HOLDOUT:
        return {"n": len(ms)}
    order = np.random.default_rng(seed).permutation(len(ms))
    cut = int(0.8 * len(ms))
    train, test = order[:cut], order[cut:]
    additive = latency_model(LatencyTable(meta=table.meta, entries=table.entries, calibration=table.calibration), space)
    held = [Arch.of(space, tuple(archs[i])) for i in test]
    trained = [archs[i] for i in train]
    model = fit_model(space, trained, ms[train], base=table_line(table, space, trained, ms[train]))
    full = np.exp(predict_log_of(model, space, [archs[i] for i in test]))
    sums = np.array([additive.predict(arch) for arch in held])
    return {
        "n": len(ms),
        "held_out": len(test),
        "holdout": {"sum": scores(sums, ms[test]), "model": scores(full, ms[test])},
    }


def predict_log_of(model: dict, space: Space, archs: Sequence[Sequence[str]]) -> np.ndarray:
    return predict_log(model, feature_matrix(space, archs))


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict:
    """Share within 10 %, MAPE (fractions) and Spearman of predictions against measurements."""
    relative = np.abs(predicted - measured) / measured
    return {
        "within_10": float(np.mean(relative <= 0.10)),
        "mape": float(np.mean(relative)),
        "spearman": spearman(predicted, measured),
    }
