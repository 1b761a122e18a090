"""Property tests of every parser a person feeds: latency strings, compact archs, arch JSON, table JSON.

Whatever the input, a parser returns a value or raises ``HwnasError`` (the CLI's clear
``error:`` line), never another exception; what it writes, it reads back exactly.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwnas.arch import Arch, load_arch
from hwnas.errors import HwnasError
from hwnas.latency.table import LatencyTable
from hwnas.search.budget import parse_latency
from hwnas.search.synthetic import synthetic_table
from hwnas.spaces import SPACES, get_space

from helpers import tiny_space

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def only_hwnas_errors(function, *args):
    try:
        return function(*args)
    except HwnasError:
        return None


# -- latency strings -------------------------------------------------------------------------------
@SETTINGS
@given(st.text(max_size=24))
def test_any_latency_string_parses_to_a_positive_finite_time_or_a_clear_error(text):
    value = only_hwnas_errors(parse_latency, text)
    assert value is None or (math.isfinite(value) and value > 0)


@SETTINGS
@given(
    st.floats(min_value=1e-6, max_value=1e9, allow_nan=False),
    st.sampled_from([("ms", 1.0), ("s", 1e3), ("us", 1e-3), ("", 1.0)]),
    st.sampled_from(["", " "]),
)
def test_a_written_latency_reads_back_in_milliseconds(number, unit, space):
    name, factor = unit
    assert parse_latency(f"{number!r}{space if name else ''}{name}") == pytest.approx(number * factor, rel=1e-12)


# -- archs ------------------------------------------------------------------------------------------
ARCH_SPACES = st.sampled_from(sorted(SPACES))
SPACE_ARGS = st.fixed_dictionaries(
    {
        "resolution": st.sampled_from([16, 32, 64, 224]),
        "num_classes": st.integers(2, 1000),
        "in_channels": st.integers(1, 4),
        "width_mult": st.sampled_from([0.25, 0.5, 0.75, 1.0, 1.4]),
    }
)


@SETTINGS
@given(ARCH_SPACES, SPACE_ARGS, st.integers(0, 2**32 - 1))
def test_compact_and_json_forms_round_trip_exactly(name, args, seed):
    arch = Arch.random(get_space(name, **args), seed=seed)
    assert Arch.from_compact(arch.to_compact()) == arch
    assert Arch.from_json(arch.to_json()) == arch
    assert load_arch(arch.to_compact()) == arch and load_arch(arch.to_json()) == arch


@SETTINGS
@given(st.text(max_size=60))
def test_any_text_loads_as_a_valid_arch_or_a_clear_error(text):
    arch = only_hwnas_errors(load_arch, text)
    assert arch is None or arch.validated() is arch


@SETTINGS
@given(
    ARCH_SPACES,
    st.lists(st.sampled_from(["zero", "mb3_k3", "mb6_k7", "x", "", "k3", "mb3_k3-mb3_k3"]), max_size=25),
    st.dictionaries(
        st.sampled_from(["resolution", "num_classes", "in_channels", "width_mult", "depth"]),
        st.sampled_from(["32", "16.5", "-1", "0", "x", "1e400", "nan", "0.5", "7"]),
        max_size=3,
    ),
)
def test_compact_archs_built_from_parts_load_or_fail_clearly(name, ops, args):
    head = ",".join([name, *(f"{k}={v}" for k, v in args.items())])
    arch = only_hwnas_errors(load_arch, f"{head}:{'-'.join(ops)}")
    assert arch is None or Arch.from_compact(arch.to_compact()) == arch


@SETTINGS
@given(JSON)
def test_any_json_value_loads_as_an_arch_or_a_clear_error(data):
    arch = only_hwnas_errors(load_arch, json.dumps(data) if isinstance(data, dict) else "{" + json.dumps(data))
    assert arch is None or arch.validated() is arch


@SETTINGS
@given(ARCH_SPACES, st.sampled_from(["space", "space_args", "choices"]), JSON)
def test_an_arch_json_with_one_field_replaced_loads_or_fails_clearly(name, field, value):
    data = Arch.random(get_space(name, resolution=32, num_classes=10, in_channels=1), seed=1).to_dict()
    data[field] = value
    arch = only_hwnas_errors(load_arch, json.dumps(data))
    assert arch is None or arch.validated() is arch


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["resolution", "num_classes", "in_channels", "width_mult"]),
        st.integers(-2, 300) | st.floats(allow_nan=True) | st.sampled_from([16.5, 32.0, 0.5, True]),
    )
)
def test_space_args_in_arch_json_are_taken_as_written_or_refused(args):
    """Nothing is silently rounded: a resolution of 16.5 is refused, not read as 16."""
    data = {**Arch.random(tiny_space(), seed=1).to_dict(), "space_args": args}
    arch = only_hwnas_errors(Arch.from_dict, data)
    assert arch is None or all(arch.space_args[k] == v and not isinstance(v, bool) for k, v in args.items())


# -- tables -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def table_dict() -> dict:
    return synthetic_table(tiny_space()).to_dict()


@SETTINGS
@given(data=st.data())
def test_a_table_with_one_value_replaced_loads_or_fails_clearly(table_dict, data):
    table = json.loads(json.dumps(table_dict))
    where = data.draw(st.sampled_from(["meta", "entries", "entry", "calibration", "top"]))
    value = data.draw(JSON | st.floats(min_value=1e300) | st.just(-1.0))
    if where == "top":
        table[data.draw(st.sampled_from(["meta", "entries", "pending", "calibration", "validation", "version"]))] = value
    elif where == "entry":
        key = data.draw(st.sampled_from(sorted(table["entries"])))
        table["entries"][key][data.draw(st.sampled_from(["ms", "p10", "p90", "n"]))] = value
    elif where == "meta":
        table["meta"][data.draw(st.sampled_from(sorted(table["meta"])))] = value
    elif where == "calibration":
        table["calibration"] = {"a": value, "b": 0.0}
    else:
        table["entries"][data.draw(st.text(max_size=6))] = value
    loaded = only_hwnas_errors(LatencyTable.from_dict, table)
    assert loaded is None or LatencyTable.from_dict(loaded.to_dict()).to_dict() == loaded.to_dict()


@SETTINGS
@given(JSON)
def test_any_json_value_is_a_table_or_a_clear_error(data):
    only_hwnas_errors(LatencyTable.from_dict, data)


def test_a_table_round_trips_through_its_file(tmp_path, table_dict):
    table = LatencyTable.from_dict(table_dict)
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").to_dict() == table.to_dict()
