"""A whole search run: the folder it writes, resume == uninterrupted, kill -9, and the CLI's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hwnas.cli.main import cli
from hwnas.search.loop import SearchConfig, SearchRun
from hwnas.search.synthetic import write_synthetic_table

from helpers import budget_between, flags, tiny_search, tiny_space

SPACE_ARGS = {"resolution": 16, "in_channels": 1, "num_classes": 10, "width_mult": 0.25}
RUN_FILES = [
    "config.json",
    "arch.json",
    "child.pt",
    "supernet.pt",
    "checkpoint.pt",
    "history.jsonl",
    "search.png",
    "report.md",
    "result.json",
]
RESULT_KEYS = {
    "method",
    "budget_ms",
    "aim_ms",
    "margin",
    "predicted_ms",
    "fastest_ms",
    "slowest_ms",
    "supernet_val_acc",
    "child_val_acc",
    "arch",
    "table",
    "table_sha256",
    "calibration",
    "argmax_ms",
    "argmax_share_of_aim",
    "repair_swaps",
    "repair_ms",
    "fill_swaps",
    "fill_ms",
    "fill_share_of_aim",
    "derived_share_of_aim",
    "expected_ms",
    "multiplier",
}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    return write_synthetic_table(tiny_space(), tmp_path_factory.mktemp("tables") / "synthetic.json")


def config(method: str, table_path: Path, **overrides) -> SearchConfig:
    options = dict(
        method=method,
        table=str(table_path),
        budget_ms=budget_between(table_path, 0.5),
        space_args=SPACE_ARGS,
        epochs=2,
        batch_size=16,
        steps_per_epoch=2,
        bn_batches=2,
    )
    options.update(overrides)
    return SearchConfig(**options)


def final_state(folder: Path) -> dict:
    return torch.load(folder / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("method", ["proxyless", "snas", "dsnas"])
def test_resume_after_an_interrupt_equals_the_uninterrupted_run(tmp_path, table_path, method):
    straight = SearchRun(config(method, table_path), tmp_path / "straight", progress=False).run()

    class Interrupt(Exception):
        pass

    def stop(epoch: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        SearchRun(config(method, table_path), tmp_path / "resumed", progress=False).run(on_epoch_end=stop)
    assert not (tmp_path / "resumed" / "result.json").exists()
    resumed = SearchRun(SearchConfig.load(tmp_path / "resumed"), tmp_path / "resumed", progress=False).run(resume=True)

    assert {**straight, "table": None} == {**resumed, "table": None}
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert torch.equal(a["alpha"], b["alpha"])
    for key, value in a["supernet"].items():
        assert torch.equal(value, b["supernet"][key]), key
    assert a["budget"] == b["budget"] and a["strategy"] == b["strategy"]
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    history = lambda folder: [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]  # noqa: E731
    assert strip(history(tmp_path / "straight")) == strip(history(tmp_path / "resumed"))
    for name in RUN_FILES:
        assert (tmp_path / "resumed" / name).is_file(), name
    assert set(straight) == RESULT_KEYS
    # a middle budget is spent: the derived net lies just under the aim, never over it
    assert 0.8 <= straight["predicted_ms"] / straight["aim_ms"] <= 1 + 1e-9
    assert straight["derived_share_of_aim"] == pytest.approx(straight["predicted_ms"] / straight["aim_ms"])


@pytest.mark.parametrize("method", ["dsnas", "spos"])
def test_the_supernet_trains_and_scores_channels_last_on_the_cpu(tmp_path, table_path, method):
    """Every convolution runs channels-last, as in ``hwnas train`` (the CPU's faster layout, ``bench/search_cost.py``):
    weight steps, the supernet's evaluation, and a one-shot method's selection alike. (A 1 x 1 or depthwise kernel
    lies alike in both layouts, so a convolution's input says which layout it runs in.)"""
    small = {"population": 4, "top_k": 2, "mutations": 1, "crossovers": 1, "generations": 1, "score_images": 32}
    options = {"method_options": small} if method == "spos" else {}
    run = SearchRun(config(method, table_path, epochs=1, eval_images=64, **options), tmp_path / "run", progress=False)
    seen = []

    def record(module: torch.nn.Module, inputs: tuple) -> None:
        if inputs[0].shape[1] > 1 and inputs[0].shape[-1] > 1:  # else both layouts are the same
            seen.append(is_channels_last(inputs[0]))

    for conv in run.supernet.modules():
        if isinstance(conv, torch.nn.Conv2d):
            conv.register_forward_pre_hook(record)
    run.run()
    assert len(seen) > 100 and set(seen) == {True}


def is_channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def test_child_weights_are_the_supernets_and_reproduce_child_acc(tmp_path, table_path):
    result = SearchRun(config("dsnas", table_path, epochs=1), tmp_path / "run", progress=False).run()
    from hwnas.arch import load_arch
    from hwnas.data import load_data, make_loader
    from hwnas.train import evaluate

    arch = load_arch(tmp_path / "run" / "arch.json")
    assert arch.to_compact() == result["arch"]
    child = arch.build()
    child.load_state_dict(torch.load(tmp_path / "run" / "child.pt", weights_only=True))
    data = load_data("digits", 16, 1, seed=0)
    assert evaluate(child, make_loader(data.val, 256, False))[1] == pytest.approx(result["child_val_acc"])
    supernet = torch.load(tmp_path / "run" / "supernet.pt", weights_only=True)
    first = next(k for k in child.state_dict() if k.startswith("layers.") and k.endswith("weight"))
    layer, op = int(first.split(".")[1]), arch.choices[int(first.split(".")[1])]
    assert torch.equal(child.state_dict()[first], supernet[first.replace(f"layers.{layer}.op.", f"layers.{layer}.ops.{op}.")])


def run_cli(cli_runner, *args):
    return cli_runner.invoke(cli, ["search", *args], catch_exceptions=False)


def test_cli_refuses_a_budget_under_the_fastest_net_before_training(cli_runner, tmp_path, table_path):
    fastest = budget_between(table_path, 0.0)
    out = tmp_path / "run"
    result = run_cli(
        cli_runner,
        *flags(latency=f"{fastest * 0.9}ms", table=str(table_path), width_mult=0.25, resolution=16, out=str(out)),
    )
    assert result.exit_code == 2
    assert f"({fastest:.4g} ms)" in result.output and "fastest" in result.output
    assert not out.exists()


def test_cli_warns_when_the_margin_does_not_fit_under_the_budget(cli_runner, tmp_path, table_path):
    fastest = budget_between(table_path, 0.0)
    result = run_cli(
        cli_runner,
        *tiny_search(
            table_path,
            fastest * 1.01,
            margin=0.2,
            steps_per_epoch=1,
            out=str(tmp_path / "run"),
            json=True,
        ),
    )
    assert result.exit_code == 0, result.output
    # the aim is the fastest net: 1 - 1 / 1.01 = 1.0 % of the budget is left as margin, not 20 %
    assert "warning: budget x (1 - margin 20.0%)" in result.stderr and "a margin of 1.0% only" in result.stderr
    assert json.loads(result.stdout)["aim_ms"] == pytest.approx(fastest, rel=1e-6)


def test_cli_rejects_bad_latency_and_foreign_method_options(cli_runner, table_path):
    result = run_cli(cli_runner, "--latency", "fast", "--table", str(table_path))
    assert result.exit_code == 2 and "cannot read latency budget" in result.output
    result = run_cli(cli_runner, "--method", "snas", "--latency", "1ms", "--early-stop", "0.2", "--table", str(table_path))
    assert result.exit_code == 2 and "no option --early-stop" in result.output


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_its_config(tmp_path, table_path):
    straight = SearchRun(config("dsnas", table_path), tmp_path / "straight", progress=False).run()
    early = tmp_path / "early"
    SearchRun(config("dsnas", table_path), early, progress=False).start_fresh()  # what a kill in the first epoch leaves
    with open(early / "history.jsonl", "a") as history:  # killed between the first epoch's log line and its checkpoint
        history.write(json.dumps({"epoch": 0, "train_loss": 9.9}) + "\n")
    resumed = SearchRun(SearchConfig.load(early), early, progress=False).run(resume=True)
    assert {**straight, "table": None} == {**resumed, "table": None}
    assert torch.equal(final_state(tmp_path / "straight")["alpha"], final_state(early)["alpha"])
    assert "9.9" not in (early / "history.jsonl").read_text()


@pytest.mark.parametrize("margin", [None, 0.2])
def test_config_json_round_trips_exactly_and_keeps_what_was_resolved_apart(tmp_path, table_path, margin):
    given = config("snas", table_path, margin=margin)
    run = SearchRun(given, tmp_path / "run", progress=False)
    run.start_fresh()
    assert SearchConfig.load(tmp_path / "run") == given  # the options as given, margin None included
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    resolved = saved["resolved"]
    assert saved["margin"] == margin and resolved["margin"] == run.target.margin > 0
    assert resolved["aim_ms"] == pytest.approx(given.budget_ms * (1 - run.target.margin))
    assert saved["space_args"] == SPACE_ARGS and resolved["space_args"] == run.space.args.to_dict()
    assert resolved["method_options"] == run.strategy.options and saved["method_options"] == {}


def test_cli_resume_of_a_missing_or_broken_run_says_why(cli_runner, tmp_path):
    missing = run_cli(cli_runner, "--resume", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and missing.output == f"error: run folder {tmp_path / 'nowhere'} does not exist\n"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"method": "dsnas", ')
    result = run_cli(cli_runner, "--resume", str(broken))
    assert result.exit_code == 2 and result.output.startswith(f"error: {broken / 'config.json'} is not a readable JSON file")


def test_cli_search_json_fills_space_from_data_and_refuses_non_empty_out(cli_runner, tmp_path, table_path):
    out = tmp_path / "run"
    budget = budget_between(table_path, 0.6)
    args = [
        *tiny_search(table_path, budget, method="proxyless", out=str(out), json=True),
    ]
    result = run_cli(cli_runner, *args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    assert data["predicted_ms"] <= data["budget_ms"] and data["run"] == str(out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["space_args"]["in_channels"] == 1 and saved["space_args"]["num_classes"] == 10  # from the digits data
    assert saved["method"] == "proxyless" and saved["budget_ms"] == pytest.approx(budget) and "aim_ms" in saved["resolved"]
    again = run_cli(cli_runner, *args)
    assert again.exit_code == 2 and "--resume" in again.output and "--force" in again.output
    stale = {name: out / name for name in ("trained.pt", "train_result.json", "train_history.jsonl", "train_checkpoint.pt")}
    for path in stale.values():  # as `hwnas train --run` leaves them; export would prefer trained.pt over the new child
        path.write_text("an older run's")
    (out / "notes.txt").write_text("mine")
    forced = run_cli(cli_runner, *args, "--force")
    assert forced.exit_code == 0
    assert not any(path.exists() for path in stale.values()) and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("form", ["mul-log", "add-linear", "lagrangian-one-sided"])
def test_cli_runs_every_loss_form(cli_runner, tmp_path, table_path, form):
    budget = budget_between(table_path, 0.5)
    latency_loss = ["--latency-loss", form] if form != "lagrangian-one-sided" else ["--one-sided"]
    result = run_cli(
        cli_runner,
        *tiny_search(table_path, budget, method="dsnas", epochs=2, warmup_epochs=0),
        *latency_loss,
        *flags(out=str(tmp_path / "run"), quiet=True, json=True),
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["predicted_ms"] <= data["aim_ms"] + 1e-9
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    if form == "lagrangian-one-sided":
        assert config["one_sided"] and data["fill_swaps"] == 0 and data["multiplier"] >= 0  # a ceiling: no fill, no reward
    else:
        assert config["latency_loss"] == form and data["fill_ms"] >= 0 and data["derived_share_of_aim"] >= 0.8


def test_search_without_table_uses_the_local_table_of_this_target(cli_runner, tmp_path, monkeypatch):
    from hwnas.latency.lookup import LOCAL_TABLES, default_table_path

    space = tiny_space()
    monkeypatch.chdir(tmp_path)
    path = default_table_path(space, "cpu", "onnxruntime", 1, 1)
    assert path.parent == LOCAL_TABLES
    path.parent.mkdir(parents=True)
    write_synthetic_table(space, path)
    budget = budget_between(path, 0.5)
    result = run_cli(
        cli_runner,
        *flags(
            latency=f"{budget}ms",
            width_mult=0.25,
            resolution=16,
            epochs=1,
            steps_per_epoch=1,
            batch_size=16,
            bn_batches=1,
            out="run",
            quiet=True,
            json=True,
        ),
    )
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.stdout)["table"]).resolve() == path.resolve()
