"""Bad input, command by command: a clear ``error:`` line, exit code 2, no traceback, and every file left as it was.

Each case runs the real CLI in a folder holding a table, a finished run, an export and other
files; every byte of that folder is compared before and after. Under ``--json`` stdout stays
empty (the error goes to stderr).
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hwnas.arch import Arch
from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.export import artifact
from hwnas.files import file_sha256, save_torch_atomic, write_json_atomic
from hwnas.search.synthetic import write_synthetic_table

from helpers import budget_between, tiny_space

SPACE = "resolution=16,in_channels=1,num_classes=10,width_mult=0.25"
TINY = ["--resolution", "16", "--in-channels", "1", "--num-classes", "10", "--width-mult", "0.25"]
SEARCH = ["search", "--method", "dsnas", "--table", "{table}", *TINY, "--epochs", "1", "--steps-per-epoch", "1", "--quiet"]


@dataclass
class Case:
    name: str
    args: list[str]
    words: tuple[str, ...]  # the message's key words, all of them (case-insensitive)
    env: dict[str, str] | None = None  # environment of the command (torchrun's variables)


def tiny_arch() -> Arch:
    return Arch.random(tiny_space(), seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The folder every case runs in: a table, a run, an exported set, a truncated weights file, a blocking file."""
    root = tmp_path_factory.mktemp("world")
    table = write_synthetic_table(tiny_space(), root / "table.json")
    space, arch = tiny_space(), tiny_arch()
    for seed, name in enumerate(("run", "other")):
        run = root / name
        run.mkdir()
        arch.save(run / "arch.json")
        torch.manual_seed(seed)  # two different nets: an export of one over the other's files changes them
        save_torch_atomic(run / "child.pt", space.build(arch.choices).state_dict())
        write_json_atomic(run / "config.json", {"runtime": "onnxruntime", "device": "cpu", "table": str(table)})
        write_json_atomic(run / "result.json", {"budget_ms": 1000.0})
    exported = CliRunner().invoke(
        cli, ["export", str(root / "m.onnx"), "--run", str(root / "run"), "--rounds", "1", "--references", "0", "--json"]
    )
    assert exported.exit_code == 0, exported.output
    (root / "blocker").write_text("a file, not a folder")
    good = (root / "run" / "child.pt").read_bytes()
    (root / "cut.pt").write_bytes(good[: len(good) // 2])
    (root / "arch-half-pixel.json").write_text(
        json.dumps({**arch.to_dict(), "space_args": {**arch.space_args, "resolution": 16.5}})
    )
    (root / "not-json.json").write_text("{ this is not json")
    huge = json.loads(table.read_text())
    key = next(iter(huge["entries"]))
    huge["entries"][key] = {**huge["entries"][key], "ms": 1e300}
    (root / "huge-entry.json").write_text(json.dumps(huge))
    bad_config = root / "bad-config-run"
    bad_config.mkdir()
    config = {
        "method": "dsnas",
        "table": str(table),
        "budget_ms": budget_between(table, 0.5),
        "space_args": {"resolution": 16, "in_channels": 1, "num_classes": 10, "width_mult": 0.25},
        "epochs": "many",
    }
    write_json_atomic(bad_config / "config.json", config)
    _issue_30_world(root, table, config)
    return root


DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested past any parser's recursion limit


def _issue_30_world(root: Path, table: Path, config: dict) -> None:
    """Tables whose calibration or entries cannot be right, files that are not JSON text, image folders with a bad
    file, and runs whose recorded table changed or is gone."""
    data = json.loads(table.read_text())
    for name, calibration in {
        "negative-slope": {"a": -1, "b": 0},
        "flat": {"a": 0, "b": 0.5},
        "negative-net": {"a": 1, "b": -10},
        "negative-op": {"a": 1, "b": 0, "per_op_ms": -0.5},
    }.items():
        (root / f"{name}.json").write_text(json.dumps({**data, "calibration": calibration}))
    key = next(iter(data["entries"]))
    zero = {**data, "entries": {**data["entries"], key: {**data["entries"][key], "ms": 0.0}}}
    (root / "zero-entry.json").write_text(json.dumps(zero))
    lacking = {**data, "entries": {k: v for k, v in data["entries"].items() if k != key}}
    (root / "lacking-entry.json").write_text(json.dumps(lacking))
    (root / "deep.json").write_text(DEEP)
    (root / "binary.json").write_bytes(b'{"schema_version": 1, "meta": "\xff\xfe\x00"}')
    (root / "deep-arch.json").write_text(DEEP)
    deep_run = root / "deep-config-run"
    deep_run.mkdir()
    (deep_run / "config.json").write_text(DEEP)
    (root / "pickle.pt").write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93.")
    # image folders of ten classes (the table's): one class without images, a truncated JPEG, a text file named .png
    from PIL import Image

    for name in ("img-empty", "img-cut", "img-text"):
        for label in "abcdefghij":
            (root / name / label).mkdir(parents=True)
            if (name, label) != ("img-empty", "c"):
                Image.new("RGB", (8, 8), (20 * "abcdefghij".index(label), 0, 0)).save(root / name / label / "0.png")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(root / "img-cut" / "b" / "1.jpg", quality=95)
    whole = (root / "img-cut" / "b" / "1.jpg").read_bytes()
    (root / "img-cut" / "b" / "1.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "img-text" / "a" / "1.png").write_text("not an image")
    # runs that recorded a table by path and hash: one whose table changed since, one whose table is gone (no copy)
    for name, path in (("changed-table-run", table), ("gone-table-run", root / "gone.json")):
        run = root / name
        run.mkdir()
        tiny_arch().save(run / "arch.json")
        (run / "child.pt").write_bytes((root / "run" / "child.pt").read_bytes())
        recorded = {**config, "epochs": 1, "table": str(path), "table_sha256": "0" * 64, "runtime": "onnxruntime"}
        write_json_atomic(run / "config.json", {**recorded, "device": "cpu"})
        write_json_atomic(run / "result.json", {"budget_ms": 1000.0})


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


CASES = [
    # profile
    Case("profile into a file's place", ["profile", *TINY, "-o", "{root}/blocker/t.json"], ("blocker", "not a folder")),
    Case("profile into /proc", ["profile", *TINY, "-o", "/proc/hwnas-table.json"], ("cannot write", "/proc")),
    Case("profile with 0 rounds", ["profile", *TINY, "-o", "{root}/new.json", "--rounds", "0"], ("rounds",)),
    Case("profile of an unknown space", ["profile", "--space", "nope", "-o", "{root}/new.json"], ("nope",)),
    # tables
    Case("show a missing table", ["tables", "show", "{root}/missing.json"], ("missing.json",)),
    Case("show a file that is not JSON", ["tables", "show", "{root}/not-json.json"], ("not-json.json", "json")),
    Case("show a table with an entry of 1e300 ms", ["tables", "show", "{root}/huge-entry.json"], ("1e+300", "(0, 3.6e+06)")),
    Case("validate a table with an entry of 1e300 ms", ["tables", "validate", "{root}/huge-entry.json", "--n", "4"], ("1e+300",)),
    Case(
        "validate with a plot into a file's place",
        ["tables", "validate", "{table}", "--plot", "{root}/blocker/p.png"],
        ("blocker", "not a folder"),
    ),
    Case("validate with a plot that exists", ["tables", "validate", "{table}", "--plot", "{root}/m.report.json"], ("--force",)),
    # predict
    Case(
        "predict an arch of half a pixel",
        ["predict", "{root}/arch-half-pixel.json", "--table", "{table}"],
        ("resolution", "whole number"),
    ),
    Case("predict with a huge table entry", ["predict", "{arch}", "--table", "{root}/huge-entry.json"], ("1e+300",)),
    Case(
        "predict a compact arch with a bad option",
        ["predict", "proxyless,{space},depth=3:zero", "--table", "{table}"],
        ("unknown space option", "depth"),
    ),
    Case(
        "predict a compact arch of 16.9 pixels",
        ["predict", "proxyless,resolution=16.9:{body}", "--table", "{table}"],
        ("whole number",),
    ),
    Case(
        "predict a compact arch of x pixels",
        ["predict", "proxyless,resolution=x:{body}", "--table", "{table}"],
        ("not a number",),
    ),
    Case(
        "predict with the JSON file of a run's config",
        ["predict", "{root}/run/config.json", "--table", "{table}"],
        ("config.json",),
    ),
    # arch
    Case("sample into /proc", ["arch", "sample", *TINY, "-o", "/proc/hwnas-arch.json"], ("cannot write", "/proc")),
    Case("sample into a file's place", ["arch", "sample", *TINY, "-o", "{root}/blocker/a.json"], ("not a folder",)),
    Case("sample over an existing file", ["arch", "sample", *TINY, "-o", "{root}/m.report.json"], ("--force",)),
    Case("sample -n 0", ["arch", "sample", *TINY, "-n", "0"], ("-n",)),
    Case(
        "sample a band with a budget of 1e309", ["arch", "sample", "--table", "{table}", "--latency", "1e309ms"], ("too large",)
    ),
    Case("sample a band without its table", ["arch", "sample", "--latency", "1ms"], ("--table",)),
    Case(
        "sample an inverted band",
        ["arch", "sample", "--table", "{table}", "--latency", "{budget}", "--band", "1.0", "0.5"],
        ("--band",),
    ),
    Case("flops of a half-pixel arch", ["arch", "flops", "{root}/arch-half-pixel.json"], ("whole number",)),
    # search
    Case(
        "search shufflenet with a proxyless table",
        [*SEARCH, "--space", "shufflenet", "--latency", "1ms", "--out", "{root}/s0"],
        ("table of space proxyless", "not shufflenet", "hwnas profile --space shufflenet"),
    ),
    Case("search with --lr nan", [*SEARCH, "--latency", "{budget}", "--lr", "nan", "--out", "{root}/s1"], ("lr", "finite")),
    Case(
        "search with --batch-size 0",
        [*SEARCH, "--latency", "{budget}", "--batch-size", "0", "--out", "{root}/s2"],
        ("--batch-size",),
    ),
    Case("search with --workers -1", [*SEARCH, "--latency", "{budget}", "--workers", "-1", "--out", "{root}/s3"], ("--workers",)),
    Case("search with --epochs 0", [*SEARCH, "--latency", "{budget}", "--epochs", "0", "--out", "{root}/s4"], ("--epochs",)),
    Case("search with --lr 0", [*SEARCH, "--latency", "{budget}", "--lr", "0", "--out", "{root}/s5"], ("--lr",)),
    Case("search with a budget of 1e309", [*SEARCH, "--latency", "1e309ms", "--out", "{root}/s6"], ("too large",)),
    Case("search with a budget of 0", [*SEARCH, "--latency", "0ms", "--out", "{root}/s7"], ("positive",)),
    Case("search with a budget in furlongs", [*SEARCH, "--latency", "3furlongs", "--out", "{root}/s8"], ("3furlongs",)),
    Case("search under the fastest net", [*SEARCH, "--latency", "1e-9ms", "--out", "{root}/s9"], ("fastest",)),
    Case("search into a file's place", [*SEARCH, "--latency", "{budget}", "--out", "{root}/blocker/run"], ("not a folder",)),
    Case("search into /proc", [*SEARCH, "--latency", "{budget}", "--out", "/proc/hwnas-run"], ("cannot write", "/proc")),
    Case("search into a run that exists", [*SEARCH, "--latency", "{budget}", "--out", "{run}"], ("--resume", "--force")),
    Case(
        "search with a missing table",
        [*SEARCH[:3], "--table", "{root}/missing.json", *TINY, "--latency", "{budget}", "--out", "{root}/s10"],
        ("missing.json",),
    ),
    Case(
        "search with another method's option",
        [*SEARCH, "--latency", "{budget}", "--population", "5", "--out", "{root}/s11"],
        ("--population",),
    ),
    Case("search with no budget", [*SEARCH, "--out", "{root}/s12"], ("--latency",)),
    Case(
        "resume a run whose config says epochs 'many'",
        ["search", "--resume", "{root}/bad-config-run", "--quiet"],
        ("epochs", "integer", "many"),
    ),
    Case("resume with --epochs", ["search", "--resume", "{run}", "--epochs", "9"], ("--epochs",)),
    Case("resume with --method", ["search", "--resume", "{run}", "--method", "snas"], ("--method",)),
    Case("resume a folder that is not a run", ["search", "--resume", "{root}/s13"], ("does not exist",)),
    Case(
        "resume a run with no checkpoint",
        ["search", "--resume", "{root}/bad-config-run".replace("bad-config-run", "run")],
        ("config.json",),
    ),
    # train
    Case(
        "train with --from-scratch and --weights",
        ["train", "--arch", "{arch}", "--from-scratch", "--weights", "{root}/run/child.pt", "--out", "{root}/t1"],
        ("one of them, not both",),
    ),
    Case("train an arch from nowhere", ["train", "--arch", "{arch}", "--out", "{root}/t2"], ("--from-scratch", "--weights")),
    Case(
        "train from cut-short weights",
        ["train", "--arch", "{arch}", "--weights", "{root}/cut.pt", "--out", "{root}/t3"],
        ("cut short",),
    ),
    Case(
        "train with --epochs 0",
        ["train", "--arch", "{arch}", "--from-scratch", "--epochs", "0", "--out", "{root}/t4"],
        ("--epochs",),
    ),
    Case(
        "train with --lr nan",
        ["train", "--arch", "{arch}", "--from-scratch", "--lr", "nan", "--out", "{root}/t5"],
        ("lr", "finite"),
    ),
    Case(
        "train with --workers -1",
        ["train", "--arch", "{arch}", "--from-scratch", "--workers", "-1", "--out", "{root}/t6"],
        ("--workers",),
    ),
    Case("train --resume with --epochs", ["train", "--run", "{run}", "--resume", "--epochs", "4"], ("--epochs",)),
    Case("train --resume with nothing to resume", ["train", "--run", "{run}", "--resume"], ("nothing to resume",)),
    Case("train --run and --arch", ["train", "--run", "{run}", "--arch", "{arch}"], ("not both",)),
    Case("train into a run that exists", ["train", "--arch", "{arch}", "--from-scratch", "--out", "{run}"], ("--force",)),
    # export
    Case(
        "export over a set, --threads 0",
        ["export", "{root}/m.onnx", "--run", "{other}", "--force", "--threads", "0"],
        ("threads",),
    ),
    Case(
        "export over a set, --rounds 0", ["export", "{root}/m.onnx", "--run", "{other}", "--force", "--rounds", "0"], ("rounds",)
    ),
    Case("export --batch-size 0", ["export", "{root}/e1.onnx", "--run", "{run}", "--batch-size", "0"], ("batch",)),
    Case("export over a set without --force", ["export", "{root}/m.onnx", "--run", "{other}"], ("m.onnx", "--force")),
    Case("export to a .txt", ["export", "{root}/e2.txt", "--run", "{run}"], ("onnx",)),
    Case("export into a file's place", ["export", "{root}/blocker/e.onnx", "--run", "{run}"], ("not a folder",)),
    Case("export into /proc", ["export", "/proc/hwnas-e.onnx", "--run", "{run}"], ("cannot write", "/proc")),
    Case(
        "export with cut-short weights",
        ["export", "{root}/e3.onnx", "--arch", "{arch}", "--weights", "{root}/cut.pt"],
        ("cut short",),
    ),
    Case(
        "export --weights without --arch",
        ["export", "{root}/e4.onnx", "--run", "{run}", "--weights", "{root}/cut.pt"],
        ("--arch",),
    ),
    Case("export a run and an arch", ["export", "{root}/e5.onnx", "--run", "{run}", "--arch", "{arch}"], ("not both",)),
    Case(
        "export with a budget in furlongs",
        ["export", "{root}/e6.onnx", "--run", "{run}", "--budget", "3furlongs"],
        ("3furlongs",),
    ),
    Case(
        "export with a huge-entry table",
        ["export", "{root}/e7.onnx", "--run", "{run}", "--table", "{root}/huge-entry.json"],
        ("1e+300",),
    ),
    # issue 30: a calibration that predicts no time, or less than none; entries of 0 ms
    Case(
        "predict with a calibration slope of -1",
        ["predict", "{arch}", "--table", "{root}/negative-slope.json"],
        ("slope 'a' is -1", "hwnas tables validate"),
    ),
    Case(
        "show a table whose calibration slope is -1",
        ["tables", "show", "{root}/negative-slope.json"],
        ("slope 'a' is -1", "hwnas tables validate"),
    ),
    Case(
        "predict with a calibration of every net at 0.5 ms",
        ["predict", "{arch}", "--table", "{root}/flat.json"],
        ("slope 'a' is 0", "tables validate"),
    ),
    Case(
        "show a table whose calibration predicts the fastest net under 0 ms",
        ["tables", "show", "{root}/negative-net.json"],
        ("fastest net", "'b'", "tables validate"),
    ),
    Case(
        "search on a calibration that predicts nets under 0 ms",
        [*SEARCH[:3], "--table", "{root}/negative-net.json", *SEARCH[5:], "--latency", "1ms", "--out", "{root}/s14"],
        ("fastest net", "tables validate"),
    ),
    Case(
        "predict with a calibration charging each op -0.5 ms",
        ["predict", "{arch}", "--table", "{root}/negative-op.json"],
        ("per_op_ms", "tables validate"),
    ),
    Case(
        "validate a table that lacks an entry",
        ["tables", "validate", "{root}/lacking-entry.json", "--n", "4"],
        ("lacking-entry.json lacks 1 entry", "-o {root}/lacking-entry.json"),
    ),
    Case("show a table with an entry of 0 ms", ["tables", "show", "{root}/zero-entry.json"], ("'ms'", "(0, 3.6e+06)")),
    # issue 30: files that are no JSON text, or JSON nested 100,000 deep
    Case("show a table nested 100,000 deep", ["tables", "show", "{root}/deep.json"], ("deep.json", "nested too deeply")),
    Case("show a table of undecodable bytes", ["tables", "show", "{root}/binary.json"], ("binary.json", "not utf-8")),
    Case(
        "predict an arch nested 100,000 deep", ["predict", "{root}/deep-arch.json", "--table", "{table}"], ("nested too deeply",)
    ),
    Case("validate a table nested 100,000 deep", ["tables", "validate", "{root}/deep.json"], ("nested too deeply",)),
    Case(
        "resume a run whose config is nested 100,000 deep",
        ["search", "--resume", "{root}/deep-config-run"],
        ("config.json", "nested too deeply"),
    ),
    Case(
        "export a pickle payload as weights",
        ["export", "{root}/e8.onnx", "--arch", "{arch}", "--weights", "{root}/pickle.pt"],
        ("pickle.pt", "plain python pickle"),
    ),
    # issue 30: every option of the one-shot methods before the supernet trains
    Case(
        "spos with --generations 0",
        [*SEARCH, "--method", "spos", "--latency", "{budget}", "--generations", "0", "--out", "{root}/s15"],
        ("--generations", ">= 1"),
    ),
    Case(
        "spos with --top-k 0",
        [*SEARCH, "--method", "spos", "--latency", "{budget}", "--top-k", "0", "--out", "{root}/s16"],
        ("--top-k",),
    ),
    Case(
        "spos with --score-images 0",
        [*SEARCH, "--method", "spos", "--latency", "{budget}", "--score-images", "0", "--out", "{root}/s17"],
        ("--score-images",),
    ),
    Case(
        "spos with more children than the population",
        [*SEARCH, "--method", "spos", "--latency", "{budget}", "--population", "4", "--out", "{root}/s18"],
        ("exceed the population of 4",),
    ),
    Case(
        "greedynas with --paths-sampled 0",
        [*SEARCH, "--method", "greedynas", "--latency", "{budget}", "--paths-sampled", "0", "--out", "{root}/s19"],
        ("--paths-sampled",),
    ),
    Case(
        "greedynas with --paths-trained 0",
        [*SEARCH, "--method", "greedynas", "--latency", "{budget}", "--paths-trained", "0", "--out", "{root}/s20"],
        ("--paths-trained",),
    ),
    Case(
        "greedynas with --rank-images 0",
        [*SEARCH, "--method", "greedynas", "--latency", "{budget}", "--rank-images", "0", "--out", "{root}/s21"],
        ("--rank-images",),
    ),
    Case(
        "greedynas with --pool-size 0",
        [*SEARCH, "--method", "greedynas", "--latency", "{budget}", "--pool-size", "0", "--out", "{root}/s22"],
        ("--pool-size",),
    ),
    Case(
        "greedynas training more paths than it samples",
        [*SEARCH, "--method", "greedynas", "--latency", "{budget}", "--paths-trained", "11", "--out", "{root}/s23"],
        ("--paths-trained 11", "--paths-sampled 10"),
    ),
    Case(
        "greedynas with --eps-max 1.5",
        [*SEARCH, "--method", "greedynas", "--latency", "{budget}", "--eps-max", "1.5", "--out", "{root}/s24"],
        ("--eps-max", "<= 1"),
    ),
    Case(
        "greedynas with --stop-share -1",
        [*SEARCH, "--method", "greedynas", "--latency", "{budget}", "--stop-share", "-1", "--out", "{root}/s25"],
        ("--stop-share", ">= 0"),
    ),
    Case(
        "snas annealing the temperature up",
        [*SEARCH, "--method", "snas", "--latency", "{budget}", "--tau-min", "5", "--out", "{root}/s26"],
        ("--tau-min",),
    ),
    Case(
        "proxyless with --arch-every 0",
        [*SEARCH, "--method", "proxyless", "--latency", "{budget}", "--arch-every", "0", "--out", "{root}/s27"],
        ("--arch-every",),
    ),
    # issue 30: image folders are read whole before training
    Case(
        "search an image folder with an empty class",
        [*SEARCH, "--latency", "{budget}", "--data", "imagefolder:{root}/img-empty", "--out", "{root}/s28"],
        ("class folder(s) c", "hold no image"),
    ),
    Case(
        "search an image folder with a truncated JPEG",
        [*SEARCH, "--latency", "{budget}", "--data", "imagefolder:{root}/img-cut", "--out", "{root}/s29"],
        ("1 file(s) cannot be read", "1.jpg", "truncated"),
    ),
    Case(
        "search an image folder with a text file named .png",
        [*SEARCH, "--latency", "{budget}", "--data", "imagefolder:{root}/img-text", "--out", "{root}/s30"],
        ("cannot be read", "1.png"),
    ),
    # issue 30: a run is tied to its table
    Case(
        "resume a run whose table changed",
        ["search", "--resume", "{root}/changed-table-run"],
        ("changed since the run", "0000000000000000", "{table_sha256}", "restore"),
    ),
    Case(
        "export a run whose table changed",
        ["export", "{root}/e9.onnx", "--run", "{root}/changed-table-run"],
        ("changed since the run", "0000000000000000", "{table_sha256}", "--table"),
    ),
    Case(
        "resume a run whose table is gone",
        ["search", "--resume", "{root}/gone-table-run"],
        ("gone.json", "is gone", "no copy"),
    ),
    Case(
        "export a run whose table is gone",
        ["export", "{root}/e10.onnx", "--run", "{root}/gone-table-run"],
        ("gone.json", "is gone", "--table"),
    ),
    # issue 30: one process profiles
    Case(
        "profile under torchrun",
        ["profile", *TINY, "-o", "{root}/new.json"],
        ("torchrun", "2 processes", "without torchrun"),
        env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
    ),
]


def context(root: Path) -> dict[str, str]:
    arch = tiny_arch().to_compact()
    return {
        "root": str(root),
        "table": str(root / "table.json"),
        "run": str(root / "run"),
        "other": str(root / "other"),
        "arch": arch,
        "body": arch.split(":")[1],
        "space": SPACE,
        "budget": f"{budget_between(root / 'table.json', 0.5)}ms",
        "table_sha256": file_sha256(root / "table.json"),
    }


def test_the_matrix_has_at_least_a_hundred_cases():
    assert len(CASES) >= 100 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_clearly_and_touches_nothing(world, case):
    args = [arg.format(**context(world)) for arg in case.args]
    words = [word.format(**context(world)) for word in case.words]
    before = snapshot(world)
    result = CliRunner().invoke(cli, [*args, "--json"], env=case.env)
    assert result.exit_code == EXIT_ERROR, f"exit {result.exit_code}\n{result.output}"
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    message = result.stderr.lower()
    assert "error:" in message and all(word.lower() in message for word in words), result.stderr
    assert "warning" not in message, result.stderr
    assert result.stdout == "", f"stdout {result.stdout!r}"
    assert snapshot(world) == before, "a file changed"
    assert not list(world.rglob(".*.tmp*")), "a temporary file is left"


def test_a_failed_export_leaves_the_earlier_set_as_it_was(world, monkeypatch, tmp_path):
    """Export fails after the ONNX file is written (here: the measurement breaks); the PASS set beside it is untouched."""
    before = snapshot(world)
    assert json.loads(before["m.report.json"])["verdict"] == "PASS" and before["m.onnx"]

    def broken(*args, **kwargs):
        raise RuntimeError("the runtime died")

    monkeypatch.setattr(artifact, "measure_artifact", broken)
    result = CliRunner().invoke(cli, ["export", str(world / "m.onnx"), "--run", str(world / "other"), "--force", "--rounds", "1"])
    assert isinstance(result.exception, RuntimeError)
    assert snapshot(world) == before
    assert not list(world.glob(".*.tmp*"))


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(tmp_path):
    from hwnas.files import write_text_atomic

    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that no longer runs
    stale = tmp_path / f".checkpoint.pt.{dead}.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".checkpoint.pt.{os.getppid()}.tmp"  # a live process (our parent): left alone
    live.write_bytes(b"being written")
    write_text_atomic(tmp_path / "checkpoint.pt", "whole")
    assert not stale.exists() and live.exists() and (tmp_path / "checkpoint.pt").read_text() == "whole"


def test_the_profile_command_a_space_mismatch_suggests_makes_a_new_table_and_leaves_the_given_one(world, tmp_path, monkeypatch):
    """Following the message (``search --space shufflenet`` with a proxyless table) must work as typed, not be refused or
    overwrite the proxyless table (its ``-o`` used to name that table)."""
    before = snapshot(world)
    result = CliRunner().invoke(
        cli,
        [
            *[a.format(**context(world)) for a in SEARCH],
            "--space",
            "shufflenet",
            "--latency",
            "1ms",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    suggested = shlex.split(result.stderr.split("with: ", 1)[1])
    assert suggested[:4] == ["hwnas", "profile", "--space", "shufflenet"] and "-o" not in suggested
    monkeypatch.chdir(tmp_path)  # its default output lies under ./latency_tables
    made = CliRunner().invoke(cli, [*suggested[1:], "--rounds", "1", "--min-time", "0", "--warmup-time", "0", "--no-progress"])
    assert made.exit_code == 0, made.output
    [table] = (tmp_path / "latency_tables").glob("*shufflenet*.json")
    assert json.loads(table.read_text())["meta"]["space"] == "shufflenet"
    assert snapshot(world) == before
