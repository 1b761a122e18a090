"""The one-shot methods (SPOS, random search, GreedyNAS): single paths under the aim, the selection stage, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.cli.main import cli
from hwnas.latency import LatencyModel, LatencyTable
from hwnas.search import oneshot
from hwnas.search.budget import BudgetController
from hwnas.search.greedynas import CandidatePool, GreedyNasStrategy, at_least_k_good, draw_candidates
from hwnas.search.loop import SearchConfig, SearchRun
from hwnas.search.oneshot import PathScorer, ScoreLog
from hwnas.search.spos import SposStrategy
from hwnas.search.supernet import ArchParameters, Supernet
from hwnas.search.synthetic import write_synthetic_table

from helpers import budget_between, flags, tiny_search, tiny_space

SPACE_ARGS = {"resolution": 16, "in_channels": 1, "num_classes": 10, "width_mult": 0.25}
SMALL = {
    "population": 8,
    "top_k": 3,
    "mutations": 3,
    "crossovers": 3,
    "generations": 3,
    "score_images": 128,
    "score_bn_images": 32,
}
TIMING = ("selection_seconds", "selection_share_of_time", "table")


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    return write_synthetic_table(tiny_space(), tmp_path_factory.mktemp("tables") / "synthetic.json")


def model(table_path: Path) -> LatencyModel:
    return LatencyModel(LatencyTable.load(table_path), tiny_space())


def config(method: str, table_path: Path, **overrides) -> SearchConfig:
    options = dict(
        method=method,
        table=str(table_path),
        space_args=SPACE_ARGS,
        epochs=1,
        steps_per_epoch=4,
        batch_size=16,
        bn_batches=2,
        eval_images=64,
        method_options=dict(SMALL),
    )
    options.update(overrides)
    if "budget_ms" not in options:
        options["budget_ms"] = budget_between(table_path, 0.3)
    return SearchConfig(**options)


def test_spos_trains_single_paths_uniform_under_the_aim(table_path):
    space = tiny_space()
    latency = model(table_path)
    fastest, slowest = latency.fastest()[1], latency.slowest()[1]
    aim = fastest + 0.1 * (slowest - fastest)  # a tight aim: few uniform archs lie under it
    supernet = Supernet(space)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.1)
    strategy = SposStrategy(
        supernet,
        ArchParameters(space),
        latency,
        BudgetController("lagrangian", aim),
        optimizer,
        {},
        torch.Generator().manual_seed(0),
    )
    assert strategy.sampler.uniform_share() < 0.01
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    images, labels = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    path = strategy.sample_path(torch.Generator().manual_seed(5))
    strategy.train_path(path, images, labels)
    after = supernet.state_dict()
    names = space.candidates
    for layer, column in enumerate(path):
        for op in supernet.layers[layer].ops:
            changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith(f"layers.{layer}.ops.{op}."))
            assert changed == (op == names[column]), f"layer {layer}: op {op} {'changed' if changed else 'kept'}"
    paths = {tuple(strategy.sample_path(strategy.generator)) for _ in range(60)}
    assert all(latency.columns_ms(list(p)) <= aim + 1e-12 for p in paths)
    assert len(paths) > 30, "the sampler keeps drawing the same few paths"


@pytest.mark.parametrize("method", ["spos", "random"])
def test_a_one_shot_run_selects_under_the_aim_and_reports_it(tmp_path, table_path, method):
    result = SearchRun(config(method, table_path), tmp_path / "run", progress=False).run()
    assert result["selection"] == ("evolution" if method == "spos" else "random")
    assert result["predicted_ms"] <= result["aim_ms"] + 1e-9
    assert result["evaluations"] == len((tmp_path / "run" / "scores.jsonl").read_text().splitlines())
    assert result["evaluations"] <= SMALL["population"] * SMALL["generations"]
    scores = [json.loads(line)["score"] for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    assert result["selection_score"] == max(scores)
    assert (tmp_path / "run" / "selection.png").stat().st_size > 1000
    assert "scored" in (tmp_path / "run" / "report.md").read_text()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history[0]["expected_ms"] <= result["aim_ms"] + 1e-9  # the mean of the trained paths


@pytest.mark.parametrize(("method", "floor"), [("spos", 0.8), ("spos", 0.0), ("random", 0.8)])
def test_the_evolution_draws_its_random_archs_near_the_aim_and_random_search_under_it(tmp_path, table_path, method, floor):
    """One generation, no children: every scored arch is a random draw; only the evolution's lie in [floor x aim, aim]."""
    options = {**SMALL, "generations": 1, "mutations": 0, "crossovers": 0, "population": 24, "draw_floor": floor}
    budget = budget_between(table_path, 0.9)  # a loose aim: uniform archs under it spread far below it
    run = config(method, table_path, method_options=options, budget_ms=budget)
    result = SearchRun(run, tmp_path / "run", progress=False).run()
    latency, aim = model(table_path), result["aim_ms"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    shares = [latency.columns_ms(row["columns"]) / aim for row in rows]
    assert len(shares) == 24 and max(shares) <= 1 + 1e-9
    if method == "spos" and floor > 0:
        assert min(shares) >= floor - 1e-9
    else:  # SPOS's draw and the random-search baseline: uniform under the aim, some of it below 0.8 x aim here
        assert min(shares) < 0.8, f"no draw under 0.8 x aim: {sorted(shares)[:3]}"


def test_a_random_draw_whose_band_holds_no_arch_draws_under_the_aim(table_path):
    latency = model(table_path)
    aim = budget_between(table_path, 0.3)
    draw = oneshot.random_draw(latency, aim, 1.0)  # [aim, aim]: no arch's prediction is exactly the aim
    rng = np.random.default_rng(0)
    draws = {draw(rng) for _ in range(20)}
    assert len(draws) > 5 and all(latency.columns_ms(list(c)) < aim for c in draws)


def test_a_kill_mid_selection_resumes_to_the_same_result_without_rescoring(tmp_path, table_path, monkeypatch):
    straight = SearchRun(config("spos", table_path), tmp_path / "straight", progress=False).run()
    calls = {"n": 0}
    original = oneshot.PathScorer.__call__

    def dies_after_seven(self, columns):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return original(self, columns)

    monkeypatch.setattr(oneshot.PathScorer, "__call__", dies_after_seven)
    with pytest.raises(KeyboardInterrupt):
        SearchRun(config("spos", table_path), tmp_path / "resumed", progress=False).run()
    with open(tmp_path / "resumed" / "scores.jsonl", "a") as handle:
        handle.write('{"columns": [1, 2')  # torn by the kill
    counted = {"n": 0}

    def counts(self, columns):
        counted["n"] += 1
        return original(self, columns)

    monkeypatch.setattr(oneshot.PathScorer, "__call__", counts)
    folder = tmp_path / "resumed"
    resumed = SearchRun(SearchConfig.load(folder), folder, progress=False).run(resume=True)
    assert {k: v for k, v in straight.items() if k not in TIMING} == {k: v for k, v in resumed.items() if k not in TIMING}
    assert counted["n"] == straight["evaluations"] - 7


def test_score_log_keeps_scores_and_drops_a_torn_line(tmp_path):
    log = ScoreLog(tmp_path / "scores.jsonl")
    calls = []
    score = log.wrap(lambda columns: calls.append(columns) or float(sum(columns)))
    assert score((1, 2)) == 3.0 and score((1, 2)) == 3.0 and calls == [(1, 2)]
    with open(tmp_path / "scores.jsonl", "a") as handle:
        handle.write('{"columns": [3')
    again = ScoreLog(tmp_path / "scores.jsonl")
    assert again.known == {(1, 2): 3.0}
    assert (tmp_path / "scores.jsonl").read_text() == '{"columns": [1, 2], "score": 3.0}\n'


def test_cli_runs_spos_and_refuses_options_of_other_methods(cli_runner, tmp_path, table_path):
    budget = budget_between(table_path, 0.4)
    base = [
        "search",
        *tiny_search(table_path, budget, steps_per_epoch=3, eval_images=64, bn_batches=2, quiet=True),
    ]
    small = [
        *flags(population=6, top_k=2, mutations=2, crossovers=2, generations=2, score_images=64, score_bn_images=16),
    ]
    result = cli_runner.invoke(cli, base + ["--method", "spos", *small, "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["selection"] == "evolution" and data["predicted_ms"] <= data["aim_ms"] + 1e-9 and data["evaluations"] <= 12
    refused = cli_runner.invoke(cli, base + ["--method", "dsnas", "--population", "6"])
    assert refused.exit_code == 2 and "method dsnas has no option --population" in refused.output
    refused = cli_runner.invoke(cli, base + ["--method", "spos", "--selection", "best"])
    assert refused.exit_code == 2 and "best" in refused.output
    refused = cli_runner.invoke(cli, base + ["--method", "spos", "--arch-fraction", "0"])
    assert refused.exit_code == 2 and "scores archs on held-out data" in refused.output


# -- GreedyNAS -------------------------------------------------------------------------------


def test_chance_of_k_good_paths_matches_the_paper_and_a_simulation_of_the_sampler():
    assert at_least_k_good(10, 5, 0.6) == pytest.approx(0.8338, abs=5e-5)  # GreedyNAS, seed 003
    assert at_least_k_good(10, 5, 0.6, eps=0.5) == pytest.approx(0.9936, abs=5e-5)
    rng = np.random.default_rng(0)
    good_pool = [(1,)] * 5  # every pool path is good; a uniform path is good with probability q
    for eps, expected in ((0.0, 0.8338), (0.5, 0.9936)):
        trials = 20_000
        hits = sum(
            sum(p == (1,) for p in draw_candidates(10, eps, good_pool, lambda r: (1,) if r.random() < 0.6 else (0,), rng)) >= 5
            for _ in range(trials)
        )
        sigma = (expected * (1 - expected) / trials) ** 0.5
        assert abs(hits / trials - expected) < 4 * sigma


def test_candidate_pool_keeps_the_best_paths_and_says_what_is_new():
    pool = CandidatePool(3)
    assert pool.add((1,), 0.5) and pool.add((2,), 0.2) and pool.add((3,), 0.9)
    assert not pool.add((2,), 0.1)  # known: updated, not new
    assert pool.add((4,), 0.3)  # new, and pushes out (3,), the worst
    assert pool.paths() == [(2,), (4,), (1,)]
    assert not pool.add((5,), 2.0)  # worse than all: in and out at once
    other = CandidatePool(1)
    other.load(pool.state())
    assert other.paths() == pool.paths() and other.size == 3


def test_greedynas_trains_the_k_paths_of_lowest_held_out_loss(table_path, monkeypatch):
    space = tiny_space()
    latency = model(table_path)
    supernet = Supernet(space)
    strategy = GreedyNasStrategy(
        supernet,
        ArchParameters(space),
        latency,
        BudgetController("lagrangian", budget_between(table_path, 0.5)),
        torch.optim.SGD(supernet.parameters(), lr=0.1),
        {"paths_sampled": 6, "paths_trained": 2},
        torch.Generator().manual_seed(0),
    )
    ranked = {}

    def fake_rank(paths):
        losses = [float(i) for i in reversed(range(len(paths)))]  # the last two paths have the lowest losses
        ranked.update(zip(paths, losses))
        return losses

    monkeypatch.setattr(strategy, "rank", fake_rank)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    strategy.step(torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,)), None)
    best = sorted(ranked, key=ranked.get)[:2]
    assert sorted(strategy.pool.paths()) == sorted(best)
    names = space.candidates
    trained = {(layer, names[c]) for path in best for layer, c in enumerate(path)}
    after = supernet.state_dict()
    for layer, mixed in enumerate(supernet.layers):
        for op in mixed.ops:
            changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith(f"layers.{layer}.ops.{op}."))
            assert changed == ((layer, op) in trained), f"layer {layer} op {op}"


@pytest.mark.slow  # long training or real timing: the whole suite (CI) runs it
def test_greedynas_resumes_with_its_pool_and_stops_once_the_pool_is_steady(tmp_path, table_path):
    options = {**SMALL, "paths_sampled": 4, "paths_trained": 2, "rank_images": 64}
    straight = SearchRun(
        config("greedynas", table_path, epochs=2, method_options=options), tmp_path / "straight", progress=False
    ).run()

    def stop(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SearchRun(config("greedynas", table_path, epochs=2, method_options=options), tmp_path / "resumed", progress=False).run(
            on_epoch_end=stop
        )
    folder = tmp_path / "resumed"
    resumed = SearchRun(SearchConfig.load(folder), folder, progress=False).run(resume=True)
    assert {k: v for k, v in straight.items() if k not in TIMING} == {k: v for k, v in resumed.items() if k not in TIMING}
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert 0 < history[0]["pool"] <= history[1]["pool"] <= 16  # 2 paths enter per step, 8 steps; known ones are updated
    assert history[-1]["eps"] > history[0]["eps"] > 0

    steady = SearchRun(
        config(
            "greedynas", table_path, epochs=2, steps_per_epoch=2, method_options={**options, "stop_share": 1.01, "generations": 1}
        ),
        tmp_path / "steady",
        progress=False,
    )
    steady.run()
    rows = (tmp_path / "steady" / "history.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["stopped"] is True


def test_a_paths_score_is_its_child_nets_accuracy_after_recalibration():
    """The scorer recalibrates only the path's BN layers inside the supernet: the child net, built apart, must agree."""
    from hwnas.arch import Arch
    from hwnas.batchnorm import recalibrate_bn

    space = tiny_space()
    torch.manual_seed(0)
    supernet = Supernet(space).eval()
    generator = torch.Generator().manual_seed(1)
    bn_images = 2 * torch.randn(32, 1, 16, 16, generator=generator) + 0.5
    images = 2 * torch.randn(48, 1, 16, 16, generator=generator) + 0.5
    for seed in range(3):
        arch = Arch.random(space, seed=seed)
        child = supernet.extract_child(arch).eval()
        with torch.no_grad():
            stale = child(images).argmax(dim=1)
            recalibrate_bn(child, [(bn_images, None)], 1)
            labels = child(images).argmax(dim=1)  # the recalibrated child scores 1.0 on these labels
        assert (stale != labels).any(), "recalibration changed nothing: the test has no power"
        scorer = PathScorer(supernet, bn_images, images, labels, chunk=16)
        assert scorer(tuple(space.candidates.index(op) for op in arch.choices)) == 1.0


@pytest.mark.parametrize("space_name", ["proxyless-greedy", "shufflenet"])
@pytest.mark.parametrize("method", ["spos", "greedynas"])
def test_one_shot_methods_run_on_the_other_spaces(tmp_path, space_name, method):
    from hwnas.spaces import get_space

    space = get_space(space_name, **SPACE_ARGS)
    table = write_synthetic_table(space, tmp_path / "table.json")
    latency = LatencyModel(LatencyTable.load(table), space)
    fastest, slowest = latency.fastest()[1], latency.slowest()[1]
    options = (
        {**SMALL, "generations": 2, "paths_sampled": 3, "paths_trained": 2, "rank_images": 32} if method == "greedynas" else SMALL
    )
    result = SearchRun(
        config(
            method,
            table,
            space=space_name,
            budget_ms=fastest + 0.7 * (slowest - fastest),
            steps_per_epoch=2,
            method_options={**options, "generations": 2},
        ),
        tmp_path / "run",
        progress=False,
    ).run()
    assert result["predicted_ms"] <= result["aim_ms"] + 1e-9
    assert result["arch"].startswith(space_name)


@pytest.mark.slow
def test_greedynas_killed_mid_supernet_and_mid_selection_resumes_to_the_uninterrupted_result(tmp_path, table_path):
    """Real processes, killed with SIGKILL once after the first checkpoint and once while the evolution scores."""
    budget = budget_between(table_path, 0.4)
    args = [
        sys.executable,
        "-m",
        "hwnas",
        "search",
        *tiny_search(
            table_path,
            budget,
            method="greedynas",
            epochs=2,
            steps_per_epoch=3,
            eval_images=64,
            bn_batches=2,
            paths_sampled=4,
            paths_trained=2,
            rank_images=64,
            population=10,
            top_k=3,
            mutations=4,
            crossovers=4,
            generations=4,
            score_images=256,
            score_bn_images=32,
            quiet=True,
            json=True,
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    scores = killed / "scores.jsonl"

    def kill_when(command: list[str], ready) -> None:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while not ready() and time.time() < deadline and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL and not (killed / "result.json").exists(), "the run ended before its kill"

    kill_when([*args, "--out", str(killed)], lambda: (killed / "checkpoint.pt").exists())
    assert not scores.exists()  # killed while the supernet trains
    resume = [sys.executable, "-m", "hwnas", "search", "--resume", str(killed), "--quiet", "--json"]
    kill_when(resume, lambda: scores.exists() and scores.read_text().count("\n") >= 4)
    scored_before = scores.read_text().count("\n")
    resumed = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = subprocess.run([*args, "--out", str(straight)], env=env, capture_output=True, text=True, timeout=300)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    a, b = json.loads(resumed.stdout), json.loads(uninterrupted.stdout)
    assert {k: v for k, v in a.items() if k not in (*TIMING, "run")} == {k: v for k, v in b.items() if k not in (*TIMING, "run")}
    assert 4 <= scored_before < b["evaluations"] == len(ScoreLog(scores).known)  # the resumed selection scored only the rest
