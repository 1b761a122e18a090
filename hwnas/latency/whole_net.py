"""A whole-net latency model on top of the table: learnt from whole nets timed on the target.

The table's sum of parts is additive; phones, small boards and fused runtimes are not. From
timings of whole nets (``hwnas tables fit TABLE --timings FILE.csv``) this module learns
``log(ms)`` of a net as a function of its features (``features``): how often it runs each
part of the table (the sum's own information), plus, where the space describes its graph
(``graph_features``, e.g. ``nb201``: which edges feed the cell output, which are reached from
its input, the paths and their convolutions), what a sum of parts cannot see. The learner is
a ridge line on those features (in ms, weighted for relative error: a sum of parts) with
gradient-boosted regression trees (scikit-learn's ``HistGradientBoostingRegressor``) on
``log(ms / line)``, fitted for absolute error: the median net, not the mean, since timings
of the same net differ by heavy-tailed noise on phones and small boards (squared error, the
first choice, measured beside it); ``bench/latency_devices.py`` measures it against the
additive least-squares fit, the ridge line alone, the trees alone and squared error, and
estimates each device's noise floor (``docs/latency_devices.md``). Fitting in log space weighs
every net's relative error alike.

Stored in the table under ``whole_net`` as plain JSON (the line's coefficients, each tree's
node arrays), evaluated here with numpy: no pickle, nothing executable is loaded.

A table for a device where only whole nets can be timed (``fit_table``): the part entries
come from a non-negative least-squares fit of the timings over the part counts, or, with
tables of other devices as the prior, from their entries scaled to the timings; the model is
then either fitted on the timings (many of them) or a *span* over the priors' models:
``ms = b + sum_d w_d f_d(net)`` with non-negative weights fitted on the few timings for relative
error (with one or two timings, the priors' mean in log, shifted). The search uses the model's
prediction wherever it holds a net (the controller's aim, derive's budget check, evolution,
export's verdict); the expected-latency gradient keeps the additive, calibrated table as its
surrogate (``LatencyModel.expected``, ``reachable_ms``), since the model is not differentiable
in the arch probabilities.

scikit-learn is imported by the functions that fit, not at import (``tests/test_imports.py``,
``SLOW_TO_IMPORT``): evaluating a stored model is numpy alone, and every command imports this module.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.spaces import Space

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingRegressor

VERSION = 1
#: the learner's settings (the bench's choice, docs/latency_devices.md)
TREES, LEAVES, MIN_LEAF, LEARNING_RATE, RIDGE_ALPHA = 500, 31, 20, 0.1, 1e-3
#: the ridge strengths tried (leave-one-out) for the departure from a base line (``fit_model_on``'s ``base``)
BASE_ALPHAS = np.logspace(-3, 4, 15)
#: on top of a base line, the trees only from this many timed nets: at 62 nets they moved proxyless's held-out share within
#: +-10 % from 88 to 72 % and left dsonas-small's as it was (docs/latency_models.md); the NB201 devices fit them on thousands
TREES_FROM_WITH_BASE = 200
#: the trees' loss on log(ms): absolute error (the median), not squared error (the mean), since whole-net
#: timings on phones and boards have heavy tails (nets timed twice, docs/latency_devices.md); squared error
#: chases the tail
LOSS = "absolute_error"
#: where the line is fitted: 'ms' (a sum, trees on log(ms / sum)) or 'log'
LINE_SPACE = "ms"
#: fewer whole nets than this and no prior: too few to fit a model of this many features
MIN_TIMINGS_ALONE = 30
MIN_TIMINGS_PRIOR = 3


# -- features ------------------------------------------------------------------------------------
def feature_names(space: Space) -> list[str]:
    return list(_features(space, space.random_choices(random.Random(0))))


def _features(space: Space, choices: Sequence[str]) -> dict[str, float]:
    counts = {f"count:{part.key}": 0.0 for part in space.parts()}
    run = space.run_parts(choices)
    for key in run:
        counts[f"count:{key}"] += 1.0
    counts["ops"] = float(len(run))
    graph = getattr(space, "graph_features", None)
    return counts | (graph(choices) if graph else {})


def feature_matrix(space: Space, archs: Sequence[Sequence[str]]) -> np.ndarray:
    """Rows of ``features`` for many archs' choices (float64, ``feature_names`` order)."""
    return np.array([list(_features(space, choices).values()) for choices in archs], dtype=np.float64)


# -- the stored model ---------------------------------------------------------------------------------
def _trees_to_dict(booster: HistGradientBoostingRegressor) -> dict[str, Any]:
    """The fitted trees as plain lists (a split sends ``x <= threshold`` left; leaves have no children, -1).

    scikit-learn keeps them in ``_predictors`` (each node's ``feature_idx``, ``num_threshold``,
    ``left``, ``right``, ``is_leaf`` and ``value``, the learning rate already in the value) and
    the start in ``_baseline_prediction``; ``tests/test_nb201.py`` checks the walk against its
    ``predict``. Splits are numeric only (no categorical features are declared).
    """
    trees = []
    for (predictor,) in booster._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            {
                "feature": np.where(leaf, -2, nodes["feature_idx"].astype(np.int64)).tolist(),
                "threshold": np.where(leaf, 0.0, nodes["num_threshold"]).astype(float).tolist(),
                "left": np.where(leaf, -1, nodes["left"].astype(np.int64)).tolist(),
                "right": np.where(leaf, -1, nodes["right"].astype(np.int64)).tolist(),
                "value": nodes["value"].astype(float).tolist(),
            }
        )
    return {"learning_rate": 1.0, "init": float(np.ravel(booster._baseline_prediction)[0]), "trees": trees}


def fit_model(
    space: Space,
    archs: Sequence[Sequence[str]],
    ms: Sequence[float],
    trees: int = TREES,
    line: bool = True,
    base: dict | None = None,
) -> dict:
    """A whole-net model (the stored dict) from ``archs`` timed at ``ms``: a ridge line, boosted trees on its residual.

    ``base`` (``{"coef", "intercept"}`` over ``feature_names``): the table's calibrated sum as a line on the features
    (``hwnas.latency.fit.table_line``); the ridge line then starts from it (``fit_model_on``).
    """
    X = feature_matrix(space, archs)
    return fit_model_on(X, np.asarray(ms, dtype=np.float64), feature_names(space), trees=trees, line=line, base=base)


def fit_model_on(
    X: np.ndarray,
    ms: np.ndarray,
    names: list[str],
    trees: int = TREES,
    line: bool = True,
    seed: int = 0,
    space: str = LINE_SPACE,
    loss: str = LOSS,
    base: dict | None = None,
) -> dict:
    """``fit_model`` on a ready feature matrix (the bench fits many devices over one matrix).

    ``base``: a line in ms over the features that the line starts from (the table's calibrated sum, refitted to these
    nets): the ridge then fits only the nets' departure from it, shrunk towards 0 with its strength chosen by
    cross-validation (``BASE_ALPHAS``), so a part few of the nets run keeps its table cost instead of a cost near 0; nets
    the base misses by more than 3 times the median miss (and 2 %) are left out of it, as in the per-op calibration.
    Without it the ridge fits every part's cost from the timings alone: with about as many nets as parts (40 timed nets
    of ``dsonas-small`` or ``proxyless``, 66 features) that missed held-out nets by more than the table's calibrated sum
    did (docs/latency_models.md, "The DAG model on this machine").

    ``space="ms"``: the line is additive in milliseconds (a sum of parts, fitted on relative
    error) and the trees learn ``log(ms / line)``, how the net departs from the sum;
    ``space="log"``: the line is fitted on ``log(ms)`` and the trees on its residual. ``loss``: the
    trees' loss on that residual, ``absolute_error`` or ``squared_error``.
    """
    if len(ms) < 2 or not np.all(np.isfinite(ms)) or np.any(ms <= 0):
        raise HwnasError("whole-net timings must be at least 2 positive finite milliseconds")
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge, RidgeCV

    y = np.log(ms)
    model: dict[str, Any] = {"version": VERSION, "kind": "trees", "features": names, "n": len(ms), "space": space}
    model["line"] = {"coef": [0.0] * X.shape[1], "intercept": 0.0, "floor_ms": float(np.min(ms)) / 2}
    if line and space == "ms" and base is not None:
        weight = 1.0 / np.maximum(ms, np.quantile(ms, 0.05)) ** 2
        start = np.asarray(base["coef"], dtype=np.float64)
        offset = X @ start + float(base["intercept"])
        # a net the base misses by far more than the others (timed while another process took the core) is left out
        missed = np.abs(offset - ms) / ms
        weight = weight * (missed <= max(3 * float(np.median(missed)), 0.02))
        ridge = RidgeCV(alphas=BASE_ALPHAS).fit(X, ms - offset, sample_weight=weight)
        model["line"].update(
            coef=(start + ridge.coef_).tolist(),
            intercept=float(base["intercept"] + ridge.intercept_),
            base_alpha=float(ridge.alpha_),
        )
    elif line and space == "ms":
        weight = 1.0 / np.maximum(ms, np.quantile(ms, 0.05)) ** 2
        ridge = Ridge(alpha=RIDGE_ALPHA).fit(X, ms, sample_weight=weight)
        model["line"].update(coef=ridge.coef_.tolist(), intercept=float(ridge.intercept_))
    elif line:
        ridge = Ridge(alpha=RIDGE_ALPHA).fit(X, y)
        model["line"].update(coef=ridge.coef_.tolist(), intercept=float(ridge.intercept_))
    model["trees"] = None
    residual = y - predict_log(model, X)
    if trees and (base is None or len(ms) >= TREES_FROM_WITH_BASE):
        booster = HistGradientBoostingRegressor(
            loss=loss,
            max_iter=trees,
            max_leaf_nodes=LEAVES,
            min_samples_leaf=min(MIN_LEAF, max(1, len(ms) // 4)),
            learning_rate=LEARNING_RATE,
            early_stopping=False,
            random_state=seed,
        )
        with threadpool_limits(limits=1, user_api="openmp"):  # one thread: reproducible, and no spinning on a shared machine
            booster.fit(X, residual)
        model["trees"] = _trees_to_dict(booster)
    model["fitted"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return model


def predict_log(model: dict, X: np.ndarray) -> np.ndarray:
    """``log(ms)`` of each row of ``X`` under a stored model (a ``trees`` model or a ``span`` over priors)."""
    if model["kind"] == "span":
        return span_log(model, np.stack([predict_log(prior, X) for prior in model["priors"]], axis=1))
    line = model["line"]
    out = X @ np.asarray(line["coef"]) + line["intercept"]
    if model.get("space", "log") == "ms":
        out = np.log(np.maximum(out, line["floor_ms"]))
    if model.get("trees"):
        out = out + _trees_sum(model["trees"], X)
    return out


def span_log(model: dict, logs: np.ndarray) -> np.ndarray:
    """A span's ``log(ms)`` from its priors' ``log(ms)`` ([nets, priors]): the mix in ms or in log."""
    if model.get("space", "log") == "ms":
        return np.log(np.maximum(model["bias"] + np.exp(logs) @ np.asarray(model["weights"]), model["floor_ms"]))
    return model["bias"] + logs @ np.asarray(model["weights"])


def _trees_sum(trees: dict, X: np.ndarray) -> np.ndarray:
    """The boosted trees' output: init + learning rate * sum of leaf values (all trees walked at once)."""
    stacked = _stacked(trees)
    feature, threshold, left, right, value = stacked
    n, t = len(X), feature.shape[0]
    node = np.zeros((n, t), dtype=np.int64)
    cols = np.arange(t)
    rows = np.arange(n)[:, None]
    for _ in range(64):
        is_leaf = left[cols, node] < 0
        if is_leaf.all():
            break
        f = np.where(is_leaf, 0, feature[cols, node])
        go_left = X.astype(np.float32)[rows, f] <= threshold[cols, node]
        node = np.where(is_leaf, node, np.where(go_left, left[cols, node], right[cols, node]))
    return trees["init"] + trees["learning_rate"] * value[cols, node].sum(axis=1)


def _stacked(trees: dict) -> tuple[np.ndarray, ...]:
    cached = trees.get("_stacked")
    if cached is None:
        size = max(len(tree["left"]) for tree in trees["trees"])
        arrays = []
        for name, dtype, fill in (
            ("feature", np.int64, 0),
            ("threshold", np.float64, 0.0),
            ("left", np.int64, -1),
            ("right", np.int64, -1),
            ("value", np.float64, 0.0),
        ):
            out = np.full((len(trees["trees"]), size), fill, dtype=dtype)
            for i, tree in enumerate(trees["trees"]):
                out[i, : len(tree[name])] = tree[name]
            arrays.append(out)
        cached = tuple(arrays)
        trees["_stacked"] = cached
    return cached


def check_model(model: Any, where: str = "whole_net") -> None:
    """Raise ``HwnasError`` unless ``model`` is a well-formed stored model (numbers where numbers belong, trees that end)."""

    def fail(why: str) -> None:
        raise HwnasError(f"{where}: {why}")

    if not isinstance(model, dict) or model.get("version") != VERSION or model.get("kind") not in ("trees", "span"):
        fail(f"expected an object with version {VERSION} and kind 'trees' or 'span'")
    if model["kind"] == "span":
        priors, weights = model.get("priors"), model.get("weights")
        if not isinstance(priors, list) or not priors or not isinstance(weights, list) or len(weights) != len(priors):
            fail("a span needs 'priors' and as many 'weights'")
        if not _finite(weights) or not _finite([model.get("bias")]):
            fail("weights and bias must be finite numbers")
        if model.get("space", "log") not in ("ms", "log"):
            fail("'space' must be 'ms' or 'log'")
        if model.get("space") == "ms" and not (_finite([model.get("floor_ms")]) and model["floor_ms"] > 0):
            fail("a span in ms needs a positive 'floor_ms'")
        for i, prior in enumerate(priors):
            check_model(prior, f"{where} prior {i}")
        if any(prior.get("features") != priors[0].get("features") for prior in priors):
            fail("the priors were fitted on different features")
        model["features"] = priors[0]["features"]
        return
    names = model.get("features")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        fail("'features' must be a list of names")
    line = model.get("line")
    if not isinstance(line, dict) or not _finite(line.get("coef")) or len(line["coef"]) != len(names):
        fail("'line' must hold one finite coefficient per feature")
    if not _finite([line.get("intercept"), line.get("floor_ms", 1.0)]) or not line.get("floor_ms", 1.0) > 0:
        fail("'line.intercept' must be a finite number, 'line.floor_ms' a positive one")
    if model.get("space", "log") not in ("ms", "log"):
        fail("'space' must be 'ms' or 'log'")
    trees = model.get("trees")
    if trees is None:
        return
    if not isinstance(trees, dict) or not _finite([trees.get("learning_rate"), trees.get("init")]):
        fail("'trees' must hold finite 'learning_rate' and 'init'")
    if not isinstance(trees.get("trees"), list) or not trees["trees"]:
        fail("'trees.trees' must be a non-empty list")
    for i, tree in enumerate(trees["trees"]):
        _check_tree(tree, len(names), f"{where} tree {i}")


def _check_tree(tree: Any, n_features: int, where: str) -> None:
    fields = ("feature", "threshold", "left", "right", "value")
    if not isinstance(tree, dict) or any(not isinstance(tree.get(f), list) for f in fields):
        raise HwnasError(f"{where}: needs lists {', '.join(fields)}")
    size = len(tree["left"])
    if size == 0 or any(len(tree[f]) != size for f in fields) or not all(_finite(tree[f]) for f in fields):
        raise HwnasError(f"{where}: its lists must be non-empty, of one length, of finite numbers")
    for node in range(size):
        left, right, feature = tree["left"][node], tree["right"][node], tree["feature"][node]
        if left == -1 and right == -1:
            continue
        # children after their parent: every walk ends
        if not (isinstance(left, int) and isinstance(right, int) and node < left < size and node < right < size):
            raise HwnasError(f"{where}: node {node} has children {left}, {right} outside ({node}, {size})")
        if not isinstance(feature, int) or not 0 <= feature < n_features:
            raise HwnasError(f"{where}: node {node} splits on feature {feature}, not one of {n_features}")


def _finite(values: Any) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


# -- few-shot: a span over prior devices ----------------------------------------------------------
def fit_span(prior_logs: np.ndarray, y_log: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights ``w`` and bias ``b`` with ``y ~ b + prior_logs @ w``: ridge towards the priors' mean, strength by leave-one-out.

    ``prior_logs``: [n nets, d priors] log predictions; ``y_log``: the n nets' log timings.
    With one timing only the bias is fitted (the priors' mean shifted).
    """
    n, d = prior_logs.shape
    base = np.full(d, 1.0 / d)
    residual = y_log - prior_logs @ base
    if n < 3:
        return base, float(np.mean(residual))
    P = prior_logs - prior_logs.mean(axis=0)
    r = residual - residual.mean()
    best = (math.inf, base)
    scale = float(np.trace(P.T @ P)) / d or 1.0
    for lam in scale * np.logspace(-4, 3, 15):
        A = P.T @ P + lam * np.eye(d)
        hat = P @ np.linalg.solve(A, P.T) + 1.0 / n  # the centring is a fitted intercept
        v = np.linalg.solve(A, P.T @ r)
        fitted = P @ v
        loo = (r - fitted) / np.maximum(1.0 - np.diag(hat), 1e-9)
        score = float(np.mean(loo**2))
        if score < best[0]:
            best = (score, base + v)
    weights = best[1]
    bias = float(np.mean(y_log - prior_logs @ weights))
    return weights, bias


def fit_span_ms(prior_ms: np.ndarray, ms: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights ``w`` and a bias ``b >= 0`` with ``ms ~ b + prior_ms @ w``, least squares on relative error.

    ``prior_ms``: [n nets, d priors] the priors' predictions in ms. A non-negative mix of
    other devices' latencies is again a sum of non-negative op costs; with few timings the
    non-negativity is the regulariser (most weights end at 0).
    """
    from sklearn.linear_model import LinearRegression

    weight = 1.0 / ms
    A = np.hstack([prior_ms, np.ones((len(ms), 1))]) * weight[:, None]
    fitted = LinearRegression(positive=True, fit_intercept=False).fit(A, ms * weight)
    return fitted.coef_[:-1], float(fitted.coef_[-1])


def span_model(priors: Sequence[dict], names: Sequence[str], X: np.ndarray, ms: np.ndarray) -> dict:
    """A ``span`` model: the priors' models (stored inside) weighted to fit ``ms`` of the nets ``X``.

    From 3 timings on, a non-negative mix of the priors' predictions in ms (``fit_span_ms``);
    the ridge mix of their logs (``fit_span``) is measured beside it in docs/latency_devices.md;
    with fewer, the priors' mean in log, shifted.
    """
    for prior in priors:
        if prior.get("features") != priors[0].get("features") and prior.get("kind") != "span":
            raise HwnasError("the prior tables' whole-net models were fitted on different features")
    logs = np.stack([predict_log(prior, X) for prior in priors], axis=1)
    extra: dict[str, Any] = {"space": "log"}
    if len(ms) >= 3:
        weights, bias = fit_span_ms(np.exp(logs), np.asarray(ms, dtype=np.float64))
        extra = {"space": "ms", "floor_ms": float(np.min(ms)) / 2}
    else:
        weights, bias = fit_span(logs, np.log(ms))
    flat = [_strip(prior) for prior in priors]
    return {
        "version": VERSION,
        "kind": "span",
        **extra,
        "priors": flat,
        "prior_names": list(names),
        "weights": weights.tolist(),
        "bias": bias,
        "n": len(ms),
        "fitted": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _strip(model: dict) -> dict:
    """A stored model without its evaluation cache; a span prior stays a span (nested spans are allowed)."""
    out = {k: v for k, v in model.items() if k != "_stacked"}
    if isinstance(out.get("trees"), dict):
        out["trees"] = {k: v for k, v in out["trees"].items() if k != "_stacked"}
    if out.get("kind") == "span":
        out["priors"] = [_strip(p) for p in out["priors"]]
    return out


def storable(model: dict) -> dict:
    """``model`` as it is written to the table (caches dropped)."""
    return _strip(model)


# -- part entries from whole nets ------------------------------------------------------------------
def part_counts(space: Space, archs: Sequence[Sequence[str]], keys: Sequence[str]) -> np.ndarray:
    index = {key: i for i, key in enumerate(keys)}
    counts = np.zeros((len(archs), len(keys)))
    for row, choices in enumerate(archs):
        for key in space.run_parts(choices):
            counts[row, index[key]] += 1.0
    return counts


def entries_from_timings(space: Space, archs: Sequence[Sequence[str]], ms: np.ndarray, fixed: Sequence[str]) -> dict[str, float]:
    """Part entries (ms) fitted to whole-net timings: non-negative least squares on relative error.

    ``fixed`` are the keys every net runs once (stem, head, reductions): only their total is
    identifiable, so it goes to the first of them and the others get 0.
    """
    from sklearn.linear_model import LinearRegression

    parts = [part for part in space.parts() if part.key not in fixed]
    keys = [part.key for part in parts]
    counts = part_counts(space, archs, keys)
    A = np.hstack([counts, np.ones((len(archs), 1))])
    weight = 1.0 / np.maximum(ms, np.quantile(ms, 0.05))
    fitted = LinearRegression(positive=True, fit_intercept=False).fit(A * weight[:, None], ms * weight)
    solution = fitted.coef_
    entries = {part.key: float(cost) * part.repeats for part, cost in zip(parts, solution[:-1])}
    entries.update({key: 0.0 for key in fixed})
    entries[fixed[0]] = float(solution[-1])
    return entries


# -- the hook: a latency model whose predict goes through the whole-net model -----------------------------
class WholeNetPrediction:
    """Mixed into a latency model (``with_whole_net``): ``predict`` and ``columns_ms`` use the whole-net model.

    Everything else (``expected``, ``reachable_ms``, per-layer and per-block costs) stays the
    additive, calibrated table: the search's differentiable surrogate and its repair steps.
    ``additive_predict`` is the table's own prediction.
    """

    whole_net: dict
    space: Space

    def additive_predict(self, arch: Arch) -> float:
        return super().predict(arch)  # type: ignore[misc]

    def predict_choices(self, archs: Sequence[Sequence[str]]) -> np.ndarray:
        """The whole-net prediction (ms) of many archs' choices at once."""
        return np.exp(predict_log(self.whole_net, feature_matrix(self.space, archs)))

    def predict(self, arch: Arch) -> float:
        choices = arch.choices_in(self.space)
        cache = self.__dict__.setdefault("_whole_net_cache", {})
        if choices not in cache:
            cache[choices] = float(self.predict_choices([choices])[0])
        return cache[choices]

    def columns_ms(self, columns: list[int]) -> float:
        names = self.space.candidates  # type: ignore[attr-defined]
        return self.predict(Arch.of(self.space, tuple(names[int(c)] for c in columns)))


_MIXED: dict[type, type] = {}


def with_whole_net(model: Any, whole_net: dict) -> Any:
    """``model`` (any latency model) predicting through ``whole_net``; an error if it was fitted on other features."""
    check_model(whole_net)
    names = feature_names(model.space)
    if whole_net["features"] != names:
        raise HwnasError(
            f"the table's whole-net model was fitted on {len(whole_net['features'])} features that are not those of space "
            f"{model.space.name} {model.space.args.to_dict()} ({len(names)}); fit it again with hwnas tables fit"
        )
    cls = type(model)
    if cls not in _MIXED:
        _MIXED[cls] = type(f"WholeNet{cls.__name__}", (WholeNetPrediction, cls), {})
    model.__class__ = _MIXED[cls]
    model.whole_net = whole_net
    return model
