"""Space files: the built-in chain spaces come from theirs, a user's file works wherever a space is named, and a bad
file is refused before anything is written, with the file, the field, its line and the fix."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from hwnas.arch import Arch
from hwnas.cli.main import cli
from hwnas.errors import HwnasError
from hwnas.latency import LatencyTable
from hwnas.spaces import SPACES, FileSpace, get_space, load_space_file
from hwnas.spaces.space_file import BUILTIN_DIR, parse_op

from helpers import flags

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "thumbs64.toml"
SHAPE = ["--resolution", "16", "--in-channels", "1", "--num-classes", "10"]
FAST = ["--rounds", "1", "--min-time", "0.005", "--warmup-time", "0.005"]


# -- the built-in spaces are their shipped files ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["proxyless", "proxyless-greedy", "shufflenet"])
def test_builtin_chain_spaces_are_built_from_their_shipped_files(name):
    space_class = SPACES[name]
    assert issubclass(space_class, FileSpace) and space_class.builtin
    assert Path(space_class.definition.source) == BUILTIN_DIR / f"{name}.toml"


@pytest.mark.parametrize("name", ["proxyless", "shufflenet"])
def test_a_users_copy_of_a_builtin_file_builds_the_same_space(tmp_path, name):
    """The same file under another name: same layers, table keys, costs and weights as the built-in space."""
    text = (BUILTIN_DIR / f"{name}.toml").read_text().replace(f'name = "{name}"', 'name = "mine"')
    path = tmp_path / "mine.toml"
    path.write_text(text)
    args = {"resolution": 32, "in_channels": 1, "num_classes": 10}
    builtin, mine = get_space(name, **args), get_space(str(path), **args)
    assert mine.name == "mine" and mine.layers == builtin.layers
    assert [p.key for p in mine.parts()] == [p.key for p in builtin.parts()]
    choices = builtin.random_choices(random.Random(1))
    assert mine.cost(choices) == builtin.cost(choices) and mine.fixed_cost() == builtin.fixed_cost()
    assert str(mine.build(choices)) == str(builtin.build(choices))


def test_skip_ops_are_dropped_only_where_the_shape_changes():
    space = get_space(str(EXAMPLE))
    assert space.name == "thumbs64" and space.args.resolution == 64 and space.args.num_classes == 5
    # stem 16 ch, s2: 32x32; stage 1 (24 ch, s2): its first layer changes the shape, so zero is left out there only
    assert [(layer.c_in, layer.c_out, layer.stride, layer.h) for layer in space.layers] == [
        (16, 24, 2, 32),
        (24, 24, 1, 16),
        (24, 48, 2, 16),
        (48, 48, 1, 8),
        (48, 48, 1, 8),
    ]
    assert [len(layer.candidates) for layer in space.layers] == [3, 4, 3, 5, 5]
    assert space.count_archs() == 3 * 4 * 3 * 5 * 5


def test_op_names_parse_to_their_expansion_and_kernel():
    assert parse_op("mb8_k9") == ("mb", 8, 9) and parse_op("mb1_k3") == ("mb", 1, 3)
    assert parse_op("shuffle_k7") == ("shuffle", 0, 7) and parse_op("shuffle_x")[0] == "shuffle"
    for bad, words in [("mb0_k3", "expansion 0"), ("mb9_k3", "expansion 9"), ("mb3_k11", "kernel 11"), ("conv", "unknown op")]:
        with pytest.raises(HwnasError, match=words):
            parse_op(bad)


def test_per_layer_lists_and_shuffle_stages(tmp_path):
    path = tmp_path / "mixed.toml"
    path.write_text(
        'name = "mixed"\nresolution = 32\n[stem]\nchannels = 16\n'
        '[[stages]]\nchannels = 32\nstride = 2\nlayers = [["mb3_k3"], ["mb6_k5", "identity"]]\n'
        '[[stages]]\nchannels = 64\nrepeats = 2\nstride = 2\nops = ["shuffle_k3", "shuffle_x"]\n'
        '[head]\nchannels = 128\nactivation = "relu"\nbias = false\n'
    )
    space = get_space(str(path), num_classes=3)
    assert [layer.candidates for layer in space.layers] == [
        ("mb3_k3",),
        ("mb6_k5", "identity"),
        ("shuffle_k3", "shuffle_x"),
        ("shuffle_k3", "shuffle_x"),
    ]
    assert [layer.shortcut for layer in space.layers] == [False, True, False, False]
    arch = Arch.random(space, seed=0)
    assert arch.build()(__import__("torch").randn(2, 3, 32, 32)).shape == (2, 3)


# -- the bad-file matrix ---------------------------------------------------------------------------------------------
GOOD = EXAMPLE.read_text()


@dataclass(frozen=True)
class Bad:
    id: str
    text: str
    #: words the error line must hold (besides "error:" and the file's path)
    words: tuple[str, ...]


def _swap(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


BAD_FILES = [
    Bad("toml-syntax", _swap("channels = 24", "channels = = 24"), ("not valid TOML", "line 14", "fix the syntax")),
    Bad(
        "unknown-op",
        _swap('"mb3_k5", "mb6_k3"', '"mb3_k5", "conv3"'),
        ("stages[0].ops (line 17)", "unknown op 'conv3'", "mb<e>_k<k>"),
    ),
    Bad(
        "expansion-out-of-range",
        _swap('"mb3_k5", "mb6_k3"', '"mb3_k5", "mb9_k3"'),
        ("stages[0].ops (line 17)", "expansion 9", "1-8"),
    ),
    Bad(
        "kernel-out-of-range",
        _swap('"mb3_k5", "mb6_k3"', '"mb3_k5", "mb6_k4"'),
        ("stages[0].ops (line 17)", "kernel 4", "3, 5, 7, 9"),
    ),
    Bad(
        "skip-where-shapes-differ-per-layer",
        _swap(
            'repeats = 2\nstride = 2\nops = ["mb3_k3", "mb3_k5", "mb6_k3", "zero"]',
            'stride = 2\nlayers = [["mb3_k3", "zero"], ["mb3_k5"]]',
        ),
        ("stages[0].layers (line 16)", "layer 0: 'zero' needs the same input and output shape", "remove it"),
    ),
    Bad(
        "skip-legal-nowhere-in-stage",
        _swap("repeats = 2", "repeats = 1"),
        ("stages[0].ops (line 17)", "'zero' is legal at no layer", "remove it or add repeats"),
    ),
    Bad(
        "empty-candidate-list",
        _swap('ops = ["mb3_k3", "mb3_k5", "mb6_k3", "zero"]', "ops = []"),
        ("stages[0].ops (line 17)", "empty", "at least one op"),
    ),
    Bad(
        "empty-layers",
        _swap('repeats = 2\nstride = 2\nops = ["mb3_k3", "mb3_k5", "mb6_k3", "zero"]', "stride = 2\nlayers = []"),
        ("stages[0].layers", "non-empty"),
    ),
    Bad(
        "no-stages",
        "stages = []\n" + GOOD.split("[[stages]]")[0] + "[head]\nchannels = 8\n",
        ("stages (line 1)", "no stage", "add at least one [[stages]]"),
    ),
    Bad(
        "channels-zero",
        _swap("channels = 24", "channels = 0"),
        ("stages[0].channels (line 14)", "channels must be a positive whole number"),
    ),
    Bad(
        "repeats-negative",
        _swap("repeats = 2", "repeats = -1"),
        ("stages[0].repeats (line 15)", "repeats must be a positive whole number"),
    ),
    Bad("stem-channels-zero", _swap("channels = 16", "channels = 0"), ("stem.channels (line 9)", "positive whole number")),
    Bad(
        "stride-below-1x1",
        _swap("resolution = 64", "resolution = 8").replace(
            "channels = 48\nrepeats = 3\nstride = 2", "channels = 48\nrepeats = 3\nstride = 4"
        ),
        ("stages[1].stride (line 22)", "leaves less than 1x1", "use stride 1 here"),
    ),
    Bad(
        "resolution-negative",
        _swap("resolution = 64", "resolution = -64"),
        ("resolution (line 3)", "positive whole number of pixels"),
    ),
    Bad(
        "resolution-fraction",
        _swap("resolution = 64", "resolution = 64.5"),
        ("resolution (line 3)", "64.5", "positive whole number"),
    ),
    Bad(
        "resolution-string",
        _swap("resolution = 64", 'resolution = "64"'),
        ("resolution (line 3)", "'64'", "positive whole number"),
    ),
    Bad(
        "unknown-top-key",
        _swap("width_mult = 1.0", "width_mult = 1.0\ndepth = 3"),
        ("depth (line 7)", "unknown key 'depth'", "the keys are name, description, resolution"),
    ),
    Bad(
        "unknown-stage-key",
        _swap("channels = 24", "chanels = 24"),
        ("stages[0].chanels (line 14)", "unknown key 'chanels'", "the keys are channels, repeats, stride, ops, layers"),
    ),
    Bad(
        "unknown-stem-key",
        _swap("kernel = 3", "kernal = 3"),
        ("stem.kernal (line 10)", "unknown key 'kernal'", "the keys are channels, kernel, stride, activation, block"),
    ),
    Bad("missing-head", GOOD.split("[head]")[0], ("top level", "lacks 'head'", "add a [head] section")),
    Bad(
        "builtin-name",
        _swap('name = "thumbs64"', 'name = "proxyless"'),
        ("name (line 2)", "built-in space's name", "pick another name"),
    ),
]


@pytest.mark.parametrize("bad", BAD_FILES, ids=[bad.id for bad in BAD_FILES])
@pytest.mark.parametrize("command", ["profile", "search", "spaces"])
def test_a_bad_space_file_is_refused_before_anything_is_written(cli_runner, tmp_path, bad, command):
    path = tmp_path / "space.toml"
    path.write_text(bad.text)
    out = tmp_path / "out"
    args = {
        "profile": ["profile", "--space", str(path), "-o", str(out / "table.json"), "--no-progress"],
        "search": ["search", "--space", str(path), "--latency", "5ms", "--table", str(out / "t.json"), "--out", str(out / "run")],
        "spaces": ["spaces", str(path)],
    }[command]
    result = cli_runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: "), line
    for word in bad.words:
        assert word in line, (word, line)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["space.toml"]


# -- a user's file through profile, search, predict and export --------------------------------------------------------
@pytest.fixture
def profiled(cli_runner, tmp_path) -> tuple[Path, Path]:
    space = tmp_path / "thumbs.toml"
    shutil.copy(EXAMPLE, space)
    table = tmp_path / "table.json"
    made = cli_runner.invoke(cli, ["profile", "--space", str(space), *SHAPE, *FAST, "-o", str(table), "--no-progress"])
    assert made.exit_code == 0, made.output
    return space, table


def test_a_table_keeps_the_space_files_hash_and_copy_and_works_without_the_file(cli_runner, profiled):
    space, table = profiled
    meta = LatencyTable.load(table).meta
    text = space.read_text()
    assert meta["space"] == "thumbs64" and meta["space_file"]["text"] == text
    assert meta["space_sha256"] == meta["space_file"]["sha256"] == load_space_file(space).definition.sha256
    space.unlink()  # the table's copy is enough
    shown = cli_runner.invoke(cli, ["tables", "show", str(table), "--json"])
    assert shown.exit_code == 0, shown.output
    arch = "thumbs64,resolution=16,num_classes=10,in_channels=1:mb3_k3-zero-mb6_k7-identity-mb3_k3"
    predicted = cli_runner.invoke(cli, ["predict", arch, "--table", str(table), "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)["latency_ms"] > 0


def test_a_table_of_another_space_file_is_refused_with_both_hashes(cli_runner, profiled, tmp_path):
    space, table = profiled
    old = LatencyTable.load(table).meta["space_sha256"]
    space.write_text(space.read_text().replace("channels = 512", "channels = 256"))
    new = load_space_file(space).definition.sha256
    for args in (
        ["search", "--space", str(space), *SHAPE, "--latency", "1ms", "--table", str(table), "--out", str(tmp_path / "run")],
        ["profile", "--space", str(space), *SHAPE, *FAST, "-o", str(table), "--no-progress"],
    ):
        before = table.read_bytes()
        refused = cli_runner.invoke(cli, args)
        assert refused.exit_code == 2, refused.output
        assert old in refused.stderr and new in refused.stderr, refused.stderr
        assert table.read_bytes() == before and not (tmp_path / "run").exists()


def test_a_search_run_keeps_the_space_file_and_exports_after_the_file_changed(cli_runner, profiled, tmp_path):
    space, table = profiled
    run = tmp_path / "run"
    searched = cli_runner.invoke(
        cli,
        [
            "search",
            "--space",
            str(space),
            *SHAPE,
            *flags(method="dsnas", latency="1ms", table=str(table), epochs=1, steps_per_epoch=2, batch_size=16),
            *flags(bn_batches=1, eval_images=64, out=str(run), quiet=True, json=True),
        ],
    )
    assert searched.exit_code == 0, searched.output
    config = json.loads((run / "config.json").read_text())
    assert (run / "space.toml").read_text() == space.read_text()
    assert config["space"] == str(space) and config["space_sha256"] == LatencyTable.load(table).meta["space_sha256"]
    assert json.loads(searched.stdout)["arch"].startswith("thumbs64,")
    space.write_text(space.read_text().replace("channels = 512", "channels = 256"))  # the run keeps its own copy
    exported = cli_runner.invoke(cli, ["export", str(tmp_path / "m.onnx"), "--run", str(run), *flags(rounds=1, references=0)])
    assert exported.exit_code in (0, 1), exported.output  # PASS or a measured FAIL: either way a verdict
    assert "verdict" in exported.stdout


def test_commands_that_read_an_arch_take_the_space_file(cli_runner, profiled, tmp_path):
    space, table = profiled
    arch = "thumbs64,resolution=16,num_classes=10,in_channels=1:mb3_k3-zero-mb6_k7-identity-mb3_k3"
    shown = cli_runner.invoke(cli, ["spaces", str(space), "--json"])
    assert json.loads(shown.stdout)["space_file"]["sha256"] == LatencyTable.load(table).meta["space_sha256"]
    flops = cli_runner.invoke(cli, ["arch", "flops", arch, "--space", str(space), "--json"])
    assert flops.exit_code == 0, flops.output
    choices = arch.split(":")[1].split("-")
    assert (
        json.loads(flops.stdout)["flops"]
        == get_space(str(space), resolution=16, in_channels=1, num_classes=10).cost(choices).flops
    )
    trained = cli_runner.invoke(
        cli,
        ["train", "--arch", arch, "--space", str(space), "--from-scratch", "--out", str(tmp_path / "t"), "--epochs", "1"]
        + ["--batch-size", "256", "--bn-batches", "1", "--json"],
    )
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "t" / "space.toml").read_text() == space.read_text()
    space.write_text(space.read_text().replace("channels = 512", "channels = 256"))
    refused = cli_runner.invoke(cli, ["predict", arch, "--table", str(table), "--space", str(space)])
    assert refused.exit_code == 2
    assert LatencyTable.load(table).meta["space_sha256"] in refused.stderr
    assert load_space_file(space).definition.sha256 in refused.stderr
