"""LatencyTable loading and LatencyModel arithmetic, on synthetic tables (no timing: exact checks)."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import torch

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency.dag_model import DagLatencyModel
from hwnas.latency.lookup import expected_meta
from hwnas.latency.model import LatencyModel, head_key, latency_model, overhead_key, required_keys, stem_key
from hwnas.latency.predictor import LatencyPredictor
from hwnas.latency.table import ForeignTableWarning, LatencyTable
from hwnas.spaces import SKIP_OPS, SPACES, get_space
from hwnas.spaces.base import SpaceArgs
from hwnas.spaces.proxyless import ProxylessSpace

DEMO = {"resolution": 32, "in_channels": 1, "num_classes": 10}


def synthetic_table(space, seed=0, overhead=None) -> LatencyTable:
    rng = np.random.default_rng(seed)
    meta = {**expected_meta("cpu", "onnxruntime", 1, False, space), "space": space.name, "threads": 1}
    entries = {key: {"ms": float(rng.uniform(0.05, 1.0)), "p10": 0.0, "p90": 2.0, "n": 10} for key in required_keys(space)}
    if overhead is not None:
        entries[overhead_key(space)] = {"ms": overhead, "p10": overhead, "p90": overhead, "n": 10}
    return LatencyTable(meta=meta, entries=entries)


class TinyProxyless(ProxylessSpace):
    """The first three layers of the proxyless space: small enough to enumerate every arch."""

    def _build_layers(self):
        return super()._build_layers()[:3]


@pytest.mark.parametrize("per_op_ms", [0.04, -0.3])  # -0.3: not physical, but it makes some ops cheaper than a skip
def test_fastest_and_slowest_equal_brute_force_on_a_tiny_space(per_op_ms):
    space = TinyProxyless(SpaceArgs(**DEMO))
    table = synthetic_table(space, seed=3)
    table.calibration = {"a": 0.9, "b": 0.05, "per_op_ms": per_op_ms}
    model = LatencyModel(table, space)
    latencies = {
        choices: model.predict(Arch(space.name, choices, space.args.to_dict()))
        for choices in itertools.product(*(layer.candidates for layer in space.layers))
    }
    (fast_arch, fast_ms), (slow_arch, slow_ms) = model.fastest(), model.slowest()
    assert fast_ms == pytest.approx(min(latencies.values())) and slow_ms == pytest.approx(max(latencies.values()))
    assert latencies[fast_arch.choices] == pytest.approx(fast_ms) and latencies[slow_arch.choices] == pytest.approx(slow_ms)


def test_expected_latency_and_its_gradient_match_float64_enumeration():
    space = get_space("proxyless", **DEMO)
    table = synthetic_table(space, seed=1, overhead=0.01)
    table.calibration = {"a": 1.3, "b": -0.2, "per_op_ms": 0.03}
    model = LatencyModel(table, space)
    columns, mask = space.candidates, space.candidate_mask()
    varying = [0, 5, 9]  # layers with a spread of probability; the others are one-hot
    rng = np.random.default_rng(0)
    probs = torch.zeros(mask.shape, dtype=torch.float64)
    for layer in space.layers:
        legal = [columns.index(op) for op in layer.candidates]
        if layer.index in varying:
            probs[layer.index, legal] = torch.from_numpy(rng.dirichlet(np.ones(len(legal))))
        else:
            probs[layer.index, legal[0]] = 1.0

    def enumerated(p: np.ndarray) -> float:
        """sum over every arch with non-zero probability of P(arch) * predict(arch)."""
        choices_per_layer = [[op for op in layer.candidates if p[layer.index, columns.index(op)] > 0] for layer in space.layers]
        total = 0.0
        for choices in itertools.product(*choices_per_layer):
            weight = np.prod([p[i, columns.index(op)] for i, op in enumerate(choices)])
            total += weight * model.predict(Arch(space.name, choices, space.args.to_dict()))
        return total

    leaf = probs.clone().requires_grad_(True)
    expected = model.expected(leaf)
    expected.backward()
    # the value on the simplex: the probability-weighted mean of every arch's prediction
    assert expected.item() == pytest.approx(enumerated(probs.numpy()), rel=1e-12)

    # the gradient: central differences of sum p*T written out from the table entries, in float64
    def independent(p: np.ndarray) -> float:
        total, ops = table.ms(stem_key(space)) + table.ms(head_key(space)) - 0.01, 0.0
        for layer in space.layers:
            for op in layer.candidates:
                if op not in SKIP_OPS:
                    total += p[layer.index, columns.index(op)] * (table.ms(layer.op_spec(op).key) - 0.01)
                    ops += p[layer.index, columns.index(op)]  # the expected number of layers that run an op
        return 1.3 * total + 0.03 * ops - 0.2

    base = probs.numpy()
    for layer in space.layers:
        for op in layer.candidates:
            k, step = columns.index(op), 1e-4
            plus, minus = base.copy(), base.copy()
            plus[layer.index, k] += step
            minus[layer.index, k] -= step
            numeric = (independent(plus) - independent(minus)) / (2 * step)
            assert leaf.grad[layer.index, k].item() == pytest.approx(numeric, rel=1e-7, abs=1e-9)
    assert not leaf.grad[~mask].any()


def test_overhead_entry_is_counted_once():
    space = get_space("shufflenet", **DEMO)
    plain = synthetic_table(space, seed=2)
    with_overhead = synthetic_table(space, seed=2, overhead=0.02)
    arch = Arch.random(space, 5)
    calls = 2 + sum(op not in SKIP_OPS for op in arch.choices)
    difference = LatencyModel(plain, space).predict(arch) - LatencyModel(with_overhead, space).predict(arch)
    assert difference == pytest.approx(0.02 * (calls - 1))


def test_calibration_is_applied_to_predictions():
    space = get_space("shufflenet", **DEMO)
    table = synthetic_table(space)
    arch = Arch.random(space, 1)
    raw = LatencyModel(table, space).predict(arch)
    table.calibration = {"a": 2.0, "b": 0.5}
    assert LatencyModel(table, space).predict(arch) == pytest.approx(2 * raw + 0.5)
    table.calibration = {"a": 2.0, "b": 0.5, "per_op_ms": 0.01}
    ops = sum(op not in SKIP_OPS for op in arch.choices)
    assert LatencyModel(table, space).predict(arch) == pytest.approx(2 * raw + 0.01 * ops + 0.5)


def test_missing_entries_are_listed_with_the_profile_command():
    space = get_space("proxyless", **DEMO)
    table = synthetic_table(space)
    del table.entries[stem_key(space)], table.entries[head_key(space)]
    with pytest.raises(HwnasError, match=r"lacks 2 entries.*stem:proxyless.*hwnas profile --space proxyless --resolution 32"):
        LatencyModel(table, space)


def write(tmp_path, data, name="table.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d.pop("meta"), "'meta' must be an object"),
        (lambda d: d["meta"].pop("runtime"), "meta lacks 'runtime'"),
        (lambda d: d["entries"].update({"x": {"ms": 1.0}}), "entry 'x' must have fields"),
        (lambda d: d["entries"].update({"x": {"ms": -1.0, "p10": 0, "p90": 0, "n": 1}}), "field 'ms' must be a number in"),
        (lambda d: d.update(calibration={"a": "x", "b": 0}), "'calibration' must be null"),
        (lambda d: d.update(calibration={"a": 1, "b": 0, "per_op_ms": float("nan")}), "'per_op_ms' where given"),
        (lambda d: d.update(pending={"x": [{"ms": 1}]}), "pending round 0 of 'x'"),
    ],
)
def test_malformed_tables_name_what_is_wrong(tmp_path, mutate, message):
    space = get_space("shufflenet", **DEMO)
    data = synthetic_table(space).to_dict()
    mutate(data)
    with pytest.raises(HwnasError, match=message):
        LatencyTable.load(write(tmp_path, data))


def test_truncated_and_missing_files(tmp_path):
    space = get_space("shufflenet", **DEMO)
    text = json.dumps(synthetic_table(space).to_dict())
    with pytest.raises(HwnasError, match="not valid JSON"):
        LatencyTable.load(write(tmp_path, text[: len(text) // 2]))
    with pytest.raises(HwnasError, match="does not exist"):
        LatencyTable.load(tmp_path / "nope.json")


def test_foreign_table_refused_or_warned(tmp_path):
    space = get_space("shufflenet", **DEMO)
    table = synthetic_table(space)
    table.meta["device_name"] = "Some Other CPU"
    path = write(tmp_path, table.to_dict())
    expect = expected_meta("cpu", "onnxruntime", 1, False, space)
    with pytest.raises(HwnasError, match="another target.*device_name.*--allow-foreign-table"):
        LatencyTable.load(path, expect=expect)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LatencyTable.load(path, expect=expect, allow_foreign=True)
    assert any(issubclass(w.category, ForeignTableWarning) for w in caught)
    batch4 = expected_meta("cpu", "onnxruntime", 4, False, space)
    with pytest.raises(HwnasError, match="batch_size"):
        LatencyTable.load(write(tmp_path, synthetic_table(space).to_dict(), "ok.json"), expect=batch4)


def test_predict_equals_a_sum_written_out_by_hand():
    """Three layers, every entry its own number: the prediction checked against the arithmetic done by hand."""
    space = TinyProxyless(SpaceArgs(**DEMO))  # layer 0: 16 -> 32 s2 at 32x32; layers 1, 2: 32 -> 32 s1 at 16x16 (zero legal)
    table = synthetic_table(space)
    ms = {
        stem_key(space): 0.30,
        head_key(space): 0.20,
        overhead_key(space): 0.01,
        space.layers[0].op_spec("mb6_k5").key: 0.11,
        space.layers[1].op_spec("mb3_k3").key: 0.05,
    }
    for key, value in ms.items():
        table.entries[key] = {"ms": value, "p10": value, "p90": value, "n": 1}
    table.calibration = {"a": 1.1, "b": 0.04, "per_op_ms": 0.02}
    arch = Arch(space.name, ("mb6_k5", "mb3_k3", "zero"), space.args.to_dict())
    # the per-call overhead is counted once: it comes off the head and every op, the stem keeps it
    parts = 0.30 + (0.20 - 0.01) + (0.11 - 0.01) + (0.05 - 0.01) + 0.0  # 0.63 ms
    assert LatencyModel(table, space).predict(arch) == pytest.approx(1.1 * parts + 0.02 * 2 + 0.04)  # 0.773 ms
    assert LatencyModel(table, space).predict(arch) == pytest.approx(0.773)


# -- one interface ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_space_s_latency_model_implements_the_predictor_interface(name):
    from hwnas.search.synthetic import synthetic_table as flops_table

    space = get_space(name, **DEMO, width_mult=0.25)
    model = latency_model(flops_table(space), space)
    assert isinstance(model, LatencyPredictor)
    (fastest, fastest_ms), (slowest, slowest_ms) = model.fastest(), model.slowest()
    assert model.predict(fastest) == pytest.approx(fastest_ms) and model.predict(slowest) == pytest.approx(slowest_ms)
    assert fastest_ms < slowest_ms
    for arch in (fastest, slowest, Arch.random(space, seed=1)):
        per_layer = model.layer_ms(arch)
        assert len(per_layer) == len(space.layers) and min(per_layer) >= 0
        if type(model) in (LatencyModel, DagLatencyModel):  # separable sums (nb201: a cell skips the ops no output uses)
            assert model.fixed_ms + sum(per_layer) == pytest.approx(model.sum_ms(arch))


def test_an_object_without_predict_is_no_latency_predictor():
    space = ProxylessSpace(SpaceArgs(**DEMO))
    model = LatencyModel(synthetic_table(space), space)
    assert isinstance(model, LatencyPredictor)
    stripped = type("NoPredict", (), {name: getattr(model, name) for name in ("table", "space", "fastest", "slowest")})()
    assert not isinstance(stripped, LatencyPredictor)
