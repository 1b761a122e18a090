"""Sabotage the project in one line, on a scratch copy, and show which tests catch it.

    python tests/mutations.py            # every mutation; exit 1 if any goes uncaught
    python tests/mutations.py NAME ...   # only these (names: python tests/mutations.py --list)

Each mutation replaces one exact snippet of one file (the run stops if the snippet is gone:
update the list when the code moves). The copy holds the files git knows or would add in this checkout,
as they are now; its tests run with the copy first on ``PYTHONPATH``, so they import the
sabotaged package, not the installed one. A mutation is caught when at least one of its
tests fails. ``tests/mutations.md`` lists them with what each breaks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "whole-net-model-ignored",
        "hwnas/latency/model.py",
        "    return with_whole_net(model, table.whole_net) if table.whole_net else model\n",
        "    return model\n",
        ("tests/test_nb201.py",),
    ),
    Mutation(
        "derive-fill-unchecked",
        "hwnas/search/derive.py",
        "        if ms > limit_ms + _EPS:\n",
        "        if False:\n",
        ("tests/test_nb201.py",),
    ),
    Mutation(
        "nb201-counts-unused-ops",
        "hwnas/spaces/nb201.py",
        '    return tuple(op != "none" and dst in feeds for op, (_, dst) in zip(choices, EDGES))\n',
        '    return tuple(op != "none" for op in choices)\n',
        ("tests/test_nb201.py",),
    ),
    Mutation(
        "config-json-saves-resolved-margin",
        "hwnas/search/loop.py",
        '        data = asdict(self.config)\n        data["resolved"] = {',
        '        data = {**asdict(self.config), "margin": self.target.margin}\n        data["resolved"] = {',
        ("tests/test_search_run.py",),
    ),
    Mutation(
        "arch-of-another-space-accepted",
        "hwnas/arch.py",
        "        if self.space != space.name:\n",
        "        if False:\n",
        ("tests/test_spaces.py",),
    ),
    Mutation(
        "contiguous-layout-on-the-cpu",
        "hwnas/distributed.py",
        '    return torch.channels_last if device.type == "cpu" else torch.contiguous_format\n',
        "    return torch.contiguous_format\n",
        ("tests/test_train.py", "tests/test_search_run.py"),
    ),
    Mutation(
        "detach-latency",
        "hwnas/search/strategy.py",
        "return self.latency.expected(self.effective_probs() if probs is None else probs)",
        "return self.latency.expected(self.effective_probs() if probs is None else probs).detach()",
        ("tests/test_search_methods.py",),
    ),
    Mutation(
        "derive-at-fastest",
        "hwnas/search/loop.py",
        "self.strategy.derive(self.target.aim_ms,",
        "self.strategy.derive(self.target.fastest_ms,",
        ("tests/test_search_run.py",),
    ),
    Mutation(
        "no-optimizer-step", "hwnas/train.py", "            optimizer.step()\n", "            pass\n", ("tests/test_train.py",)
    ),
    Mutation(
        "controller-without-proportional-term",
        "hwnas/search/budget.py",
        "self.multiplier = min(max(self.integral + self.gain * error, low), self.bound)",
        "self.multiplier = min(max(self.integral, low), self.bound)",
        ("tests/test_search_budget.py",),
    ),
    Mutation(
        "proxyless-latency-over-all-ops",
        "hwnas/search/proxyless.py",
        "self.expected_ms(self.pair_probs(pairs))",
        "self.expected_ms()",
        ("tests/test_search_methods.py",),
    ),
    Mutation(
        "derive-without-fill", "hwnas/search/derive.py", "    if spend:\n", "    if False:\n", ("tests/test_search_budget.py",)
    ),
    Mutation(
        "early-stop-ignores-reachability",
        "hwnas/search/dsnas.py",
        "if low <= self.budget.aim_ms <= high:",
        "if True:",
        ("tests/test_search_methods.py",),
    ),
    Mutation(
        "band-sampler-not-uniform",
        "hwnas/search/random_archs.py",
        "pick = rng.choice(len(weights), p=ways / ways.sum())",
        "pick = rng.choice(len(weights), p=(ways > 0) / (ways > 0).sum())",
        ("tests/test_random_archs.py",),
    ),
    Mutation(
        "candidates-start-apart",
        "hwnas/search/supernet.py",
        "                    nest_into(smallest, op)\n",
        "                    pass\n",
        ("tests/test_search_methods.py",),
    ),
    Mutation(
        "overhead-counted-per-part",
        "hwnas/latency/chain_model.py",
        "return max(self.table.ms(key) - self.call_overhead_ms, 0.0)",
        "return self.table.ms(key)",
        ("tests/test_latency_model.py",),
    ),
    Mutation(
        "tables-not-packaged",
        "pyproject.toml",
        '"hwnas.latency_tables" = ["*.json", "*.md"]',
        '"hwnas.latency_tables" = ["*.md"]',
        ("tests/test_packaging.py",),
    ),
    Mutation(
        "verdict-from-prediction",
        "hwnas/export/verdict.py",
        'return "PASS" if self.measured_ms <= self.budget_ms else "FAIL"',
        'return "PASS" if (self.predicted_ms or self.measured_ms) <= self.budget_ms else "FAIL"',
        ("tests/test_export.py",),
    ),
    Mutation(
        "evolution-scores-over-the-aim",
        "hwnas/search/evolution.py",
        "return self.latency_fn(columns) <= self.aim_ms + 1e-9 * max(abs(self.aim_ms), 1.0)",
        "return True",
        ("tests/test_evolution.py",),
    ),
    Mutation(
        "evolution-without-selection",
        "hwnas/search/evolution.py",
        "top = sorted(scorer.cache, key=lambda c: scorer.cache[c], reverse=True)[: options.top_k]",
        "top = list(scorer.cache)[-options.top_k:]",
        ("tests/test_evolution.py",),
    ),
    Mutation(
        "spos-samples-past-the-aim",
        "hwnas/search/spos.py",
        "BandSampler(self.latency, 0.0, self.budget.aim_ms)",
        "BandSampler(self.latency, 0.0, self.latency.slowest()[1])",
        ("tests/test_search_oneshot.py",),
    ),
    Mutation(
        "selection-rescores-on-resume",
        "hwnas/search/oneshot.py",
        "            if columns not in self.known:\n",
        "            if True:\n",
        ("tests/test_search_oneshot.py",),
    ),
    Mutation(
        "evolution-draws-from-under-the-whole-aim",
        "hwnas/search/oneshot.py",
        'options["draw_floor"] if evolving else 0.0',
        "0.0",
        ("tests/test_search_oneshot.py",),
    ),
    Mutation(
        "random-search-draws-near-the-aim",
        "hwnas/search/oneshot.py",
        'options["draw_floor"] if evolving else 0.0',
        'options["draw_floor"]',
        ("tests/test_search_oneshot.py",),
    ),
    Mutation(
        "greedynas-trains-the-worst",
        "hwnas/search/greedynas.py",
        "best = sorted(range(len(paths)), key=lambda i: losses[i])",
        "best = sorted(range(len(paths)), key=lambda i: -losses[i])",
        ("tests/test_search_oneshot.py",),
    ),
    Mutation(
        "greedynas-pool-not-checkpointed",
        "hwnas/search/greedynas.py",
        '        self.pool.load(state["pool"])\n',
        "        pass\n",
        ("tests/test_search_oneshot.py",),
    ),
    Mutation(
        "close-call-not-measured-again",
        "hwnas/export/artifact.py",
        "    if extra:\n        runtime.measure(",
        "    if False:\n        runtime.measure(",
        ("tests/test_export.py",),
    ),
    Mutation(
        "close-call-measured-again-only-when-it-fails",
        "hwnas/export/verdict.py",
        "abs(first_ms - budget_ms) > CLOSE_CALL * budget_ms",
        "first_ms <= budget_ms or first_ms - budget_ms > CLOSE_CALL * budget_ms",
        ("tests/test_export.py",),
    ),
    Mutation(
        "export-writes-in-place",
        "hwnas/export/artifact.py",
        'output=self.output.with_name(f".{self.output.stem}.{os.getpid()}.tmp{suffix}"), force=True)',
        "force=True)",
        ("tests/test_bad_input.py::test_a_failed_export_leaves_the_earlier_set_as_it_was",),
    ),
    Mutation(
        "stale-temps-kept",
        "hwnas/files.py",
        "if pid.isdigit() and int(pid)",
        "if False and int(pid)",
        ("tests/test_bad_input.py::test_a_killed_writers_temporary_file_is_removed_by_the_next_writer",),
    ),
    Mutation(
        "table-entries-unbounded",
        "hwnas/latency/table.py",
        "or not value < MAX_ENTRY:",
        "or not value < math.inf:",
        ("tests/test_bad_input.py::test_bad_input_is_refused_clearly_and_touches_nothing",),
    ),
    Mutation(
        "space-args-rounded",
        "hwnas/arch.py",
        "if whole and not number.is_integer():",
        "if False:",
        ("tests/test_parsers_property.py",),
    ),
    Mutation(
        "resume-needs-a-checkpoint",
        "hwnas/search/loop.py",
        "if resume and (self.out / CHECKPOINT).is_file():",
        "if resume:",
        ("tests/test_search_run.py::test_a_run_stopped_before_its_first_checkpoint_resumes_from_its_config",),
    ),
    Mutation(
        "table-of-another-space-unchecked",
        "hwnas/latency/chain_model.py",
        'if table.meta.get("space") not in (None, space.name):',
        "if False:",
        (
            "tests/test_bad_input.py::test_the_profile_command_a_space_mismatch_suggests_makes_a_new_table_and_leaves_the_given_one",
        ),
    ),
    Mutation(
        "train-resume-reseeds-data",
        "hwnas/api.py",
        'load_data(data, space_args["resolution"], space_args["in_channels"], config.seed)',
        'load_data(data, space_args["resolution"], space_args["in_channels"], TrainConfig(**options).seed)',
        ("tests/test_train.py::test_cli_resume_of_an_arch_training_keeps_its_seed_and_data",),
    ),
    Mutation(
        "from-scratch-ignores-seed",
        "hwnas/api.py",
        "        torch.manual_seed(config.seed)  # --from-scratch",
        "        # --from-scratch",
        ("tests/test_train.py::test_cli_resume_of_an_arch_training_keeps_its_seed_and_data",),
    ),
    Mutation(
        "arch-gradient-summed",
        "hwnas/distributed.py",
        "tensor.copy_(comm.div_(self.world_size))",
        "tensor.copy_(comm)",
        ("tests/test_distributed.py::test_two_processes_search_as_one_with_the_global_batch",),
    ),
    Mutation(
        "snas-arch-gradient-not-reduced",
        "hwnas/search/snas.py",
        "        self.dist.all_reduce_mean_(self.arch.alpha.grad)",
        "        pass",
        ("tests/test_distributed.py::test_two_processes_search_as_one_with_the_global_batch",),
    ),
    Mutation(
        "batchnorm-per-shard",
        "hwnas/distributed.py",
        "    if type(module) is nn.BatchNorm2d:",
        "    if False:",
        (
            "tests/test_distributed.py::test_two_processes_search_as_one_with_the_global_batch",
            "tests/test_distributed.py::test_two_processes_train_as_one_with_the_global_batch",
        ),
    ),
    Mutation(
        "apg-without-projection",
        "hwnas/search/apg.py",
        "lam.copy_(torch.clamp(shrunk + self.momentum * self.velocity, min=0.0))",
        "lam.copy_(shrunk + self.momentum * self.velocity)",
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "dsonas-gamma-uniform",
        "hwnas/search/dsonas.py",
        "self.weights = adaptive_weights(self.latency).float()",
        "self.weights = torch.ones_like(adaptive_weights(self.latency)).float()",
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "dsonas-block-weights-fixed",
        "hwnas/search/dsonas.py",
        "self.latency.block_ms(b, kept) / full if full > 0 else 0.0",
        "1.0 if full > 0 else 0.0",
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "dsonas-gamma-ignores-budget",
        "hwnas/search/dsonas.py",
        'self.gamma_now = self.options["gamma"] * min(',
        'self.gamma_now = self.options["gamma"] + 0 * min(',
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "dsonas-repair-by-lambda-only",
        "hwnas/search/dsonas.py",
        "score = lost / saved",
        "score = lost",
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "dsonas-lambda-grad-not-reduced",
        "hwnas/search/dsonas.py",
        "        self.dist.all_reduce_mean_(grad)",
        "        pass",
        ("tests/test_distributed.py::test_two_processes_search_dsonas_as_one_with_the_global_batch",),
    ),
    Mutation(
        "dsonas-weight-step-outside-ddp",
        "hwnas/search/dsonas.py",
        "logits = self.net(images, self.lam.detach())",
        "logits = self.supernet(images, self.lam.detach())",
        ("tests/test_distributed.py::test_two_processes_search_dsonas_as_one_with_the_global_batch",),
    ),
    Mutation(
        "dsonas-no-floor",
        "hwnas/search/dsonas.py",
        "        self.hold_floor(before)\n",
        "",
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "dsonas-floor-undoes-every-zeroed-edge",
        "hwnas/search/dsonas.py",
        "            if self.latency.masks_ms(masks_of(lam, space)) >= floor_ms:\n                break\n",
        "",
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "dag-isolated-ops-kept",
        "hwnas/spaces/dag.py",
        "nodes = set(live) | {0, self.output}",
        "nodes = set(range(self.output + 1))",
        (
            "tests/test_dsonas.py::test_isolated_ops_are_those_off_every_input_to_output_path",
            "tests/test_dsonas.py::test_isolated_ops_are_removed_from_the_built_net_and_from_the_supernets_forward",
        ),
    ),
    Mutation(
        "dag-adds-cost-nothing",
        "hwnas/spaces/dag.py",
        "keys += [self.add_key(layer.c_in, layer.h)] * self.graph.sums_of(live, canonical)",
        "keys += []",
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "dag-partial-sums-not-shared",
        "hwnas/spaces/dag.py",
        "                if prefix not in shared:",
        "                if True:",
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "dag-add-chain-taken-for-one-add",
        "hwnas/latency/dag_model.py",
        "        return max(self.table.ms(key) - self.call_overhead_ms, 0.0) / repeats",
        "        return max(self.table.ms(key) - self.call_overhead_ms, 0.0)",
        ("tests/test_dsonas.py",),
    ),
    Mutation(
        "search-on-an-uncalibrated-table",
        "hwnas/latency/table.py",
        "        if self.calibration is not None or uncalibrated:\n            return\n",
        "        return\n",
        ("tests/test_calibration.py",),
    ),
    Mutation(
        "profile-without-calibration",
        "hwnas/api.py",
        "    if not no_validate and (table.calibration is None or done.measured):\n",
        "    if False:\n",
        ("tests/test_calibration.py",),
    ),
    Mutation(
        "registry-takes-a-name-twice",
        "hwnas/registry.py",
        "        if name in self:\n",
        "        if False:\n",
        ("tests/test_registry.py",),
    ),
    Mutation(
        "progress-bars-in-logs",
        "hwnas/progress.py",
        "    if interactive():\n",
        "    if True:\n",
        ("tests/test_progress.py",),
    ),
    Mutation(
        "progress-line-per-update",
        "hwnas/progress.py",
        "        if not self.disable and not finished and self.clock() - self.last_line >= self.interval_s:\n",
        "        if not self.disable:\n",
        ("tests/test_progress.py",),
    ),
    Mutation(
        "int8-entries-measured-in-float",
        "hwnas/latency/onnxruntime_runtime.py",
        '        if self.precision == "int8":\n            model = quantize_onnx(',
        "        if False:\n            model = quantize_onnx(",
        ("tests/test_int8.py::test_int8_nets_are_measured_quantized",),
    ),
    Mutation(
        "int8-weights-per-tensor",
        "hwnas/latency/quantize.py",
        "    per_channel: bool = True\n",
        "    per_channel: bool = False\n",
        ("tests/test_int8.py::test_quantized_model_has_per_channel_int8_weights_and_tracks_float",),
    ),
    Mutation(
        "search-ignores-the-precision",
        "hwnas/search/loop.py",
        "config.table_batch_size, config.precision, self.space, ",
        'config.table_batch_size, "fp32", self.space, ',
        ("tests/test_int8.py::test_search_takes_an_int8_table_as_int8_and_refuses_it_for_another_precision",),
    ),
    Mutation(
        "space-file-hash-not-matched",
        "hwnas/latency/lookup.py",
        '            meta["space_sha256"] = source.sha256\n',
        "            pass\n",
        ("tests/test_space_files.py",),
    ),
    Mutation(
        "skip-ops-kept-where-shapes-differ",
        "hwnas/spaces/file_space.py",
        "candidates = ops if shortcut else tuple(op for op in ops if op not in SKIP_OPS)",
        "candidates = ops",
        ("tests/test_space_files.py", "tests/test_spaces.py"),
    ),
    Mutation(
        "run-keeps-no-space-copy",
        "hwnas/run_folder.py",
        "        write_text_atomic(Path(folder) / SPACE_COPY, source.text)\n",
        "        pass\n",
        ("tests/test_space_files.py::test_a_search_run_keeps_the_space_file_and_exports_after_the_file_changed",),
    ),
    Mutation(
        "whole-net-trees-learning-rate-twice",
        "hwnas/latency/whole_net.py",
        '    return {"learning_rate": 1.0, "init": float(np.ravel(booster._baseline_prediction)[0]), "trees": trees}\n',
        '    return {"learning_rate": 0.9, "init": float(np.ravel(booster._baseline_prediction)[0]), "trees": trees}\n',
        ("tests/test_nb201.py::test_stored_trees_predict_what_sklearn_predicts",),
    ),
    Mutation(
        "span-in-ms-drops-its-bias",
        "hwnas/latency/whole_net.py",
        '        return np.log(np.maximum(model["bias"] + np.exp(logs)',
        '        return np.log(np.maximum(0.0 * model["bias"] + np.exp(logs)',
        ("tests/test_nb201.py::test_a_span_in_ms_recovers_a_device_that_is_a_sum_of_two_priors_from_ten_nets",),
    ),
    Mutation(
        "nb201-mirror-misses-the-output-edges",
        "hwnas/spaces/nb201.py",
        "choices[2], choices[3], choices[5], choices[4]))",
        "choices[2], choices[3], choices[4], choices[5]))",
        ("tests/test_noise_floor.py",),
    ),
    Mutation(
        "nb201-zero-fed-ops-taken-for-reached",
        "hwnas/spaces/nb201.py",
        '"zero_in" if src not in reached else',
        '"zero_in" if src in reached and src else',
        ("tests/test_nb201.py::test_op_roles_count_what_each_op_computes_as_worked_by_hand",),
    ),
    Mutation(
        "executorch-times-beside-torchs-pool",
        "hwnas/latency/executorch_runtime.py",
        "with torch_threads(1 if self.target is None else None):",
        "with torch_threads(None):",
        ("tests/test_mobile_e2e.py::test_in_process_time_agrees_with_the_runner_while_busy_processes_share_every_core",),
    ),
)


def scratch_copy(target: Path) -> None:
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run(mutation: Mutation) -> tuple[bool, str]:
    """(caught, summary): apply ``mutation`` to a fresh copy and run its tests there."""
    with tempfile.TemporaryDirectory(prefix=f"mutation-{mutation.name}-") as scratch:
        copy = Path(scratch)
        scratch_copy(copy)
        path = copy / mutation.path
        text = path.read_text()
        if text.count(mutation.old) != 1:
            raise SystemExit(
                f"{mutation.name}: the snippet occurs {text.count(mutation.old)} times in {mutation.path}; update tests/mutations.py"
            )
        path.write_text(text.replace(mutation.old, mutation.new))
        env = {**os.environ, "PYTHONPATH": str(copy) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "--no-header", *mutation.tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
        )
        failed = [line.split(" ")[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")]
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-200:]
        return done.returncode != 0 and bool(
            failed
        ), f"{summary}; failing: {', '.join(failed[:4])}{' ...' if len(failed) > 4 else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run [all]")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args()
    known = {m.name: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:40s} {m.path}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutation(s) {', '.join(unknown)}; see --list")
    uncaught = []
    for mutation in (known[n] for n in args.names) if args.names else MUTATIONS:
        caught, summary = run(mutation)
        print(f"{'caught  ' if caught else 'MISSED  '}{mutation.name}: {summary}", flush=True)
        if not caught:
            uncaught.append(mutation.name)
    print(f"{len(uncaught)} mutation(s) not caught" + (f": {', '.join(uncaught)}" if uncaught else ""))
    return 1 if uncaught else 0


if __name__ == "__main__":
    sys.exit(main())
