"""Training a child: results in the folder, exact resume after an interruption, no silent overwrite."""

from __future__ import annotations

import json

import pytest
import torch

import hwnas.distributed
from hwnas.arch import Arch
from hwnas.batchnorm import recalibrate_bn
from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.data import load_data, make_loader
from hwnas.run_folder import RunFolder
from hwnas.spaces import get_space
from hwnas.train import TrainConfig, cosine_lr, evaluate, train_child

SPACE_ARGS = {"resolution": 32, "num_classes": 10, "in_channels": 3, "width_mult": 0.25}


@pytest.fixture(scope="module")
def fake_data():
    return load_data("fake", 32, 3, seed=0)


def _net(seed: int = 0):
    space = get_space("proxyless", **SPACE_ARGS)
    arch = Arch.random(space, seed=1)
    torch.manual_seed(seed)
    return arch, space.build(arch.choices)


class Interrupted(Exception):
    pass


def test_cosine_schedule_ends_at_zero():
    assert cosine_lr(0.1, 0, 10) == pytest.approx(0.1)
    assert cosine_lr(0.1, 5, 10) == pytest.approx(0.05)
    assert cosine_lr(0.1, 10, 10) == pytest.approx(0.0)


def test_recalibrated_bn_statistics_are_the_exact_average_over_the_batches():
    torch.manual_seed(0)
    batches = [(torch.randn(5, 3, dtype=torch.float64) * (i + 1) + i, torch.zeros(5)) for i in range(4)]
    norm = torch.nn.BatchNorm1d(3, momentum=0.1).double()
    norm.running_mean.fill_(7.0)  # stale statistics must not survive
    assert recalibrate_bn(norm, batches, batches=3) == 3
    used = torch.stack([x for x, _ in batches[:3]])  # (3 batches, 5 samples, 3 features)
    assert torch.allclose(norm.running_mean, used.mean(dim=(0, 1)))
    assert torch.allclose(norm.running_var, used.var(dim=1, unbiased=True).mean(dim=0))
    assert norm.momentum == 0.1 and not norm.training


def test_trained_weights_carry_bn_statistics_of_their_final_weights(tmp_path, fake_data):
    config = TrainConfig(epochs=1, batch_size=64, seed=3, bn_batches=2)
    arch, model = _net()
    result = train_child(arch, model, fake_data, tmp_path / "run", config, progress=False)
    saved = torch.load(tmp_path / "run" / "trained.pt", weights_only=True)
    tracked = [value for key, value in saved.items() if key.endswith("num_batches_tracked")]
    # re-estimated from 2 batches, not a momentum average over the epoch's 8 training steps
    assert len(fake_data.train) // config.batch_size > config.bn_batches
    assert tracked and all(int(count) == config.bn_batches for count in tracked)
    _, again = _net(seed=5)
    again.load_state_dict(saved)
    assert evaluate(again, make_loader(fake_data.val, 256, shuffle=False))[1] == result["val_acc"]  # scored = saved


def is_channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def test_training_runs_channels_last_on_the_cpu_and_its_net_scores_alike_in_both_layouts(tmp_path, fake_data, monkeypatch):
    """The CPU trains channels-last (about twice as fast, ``bench/search_cost.py``): the weights and every batch the
    net sees, training and scoring, are in that layout; the trained net scores the same contiguous (float32 rounding)."""
    config = TrainConfig(epochs=1, batch_size=64, seed=3, bn_batches=2)
    arch, model = _net()
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    conv.register_forward_pre_hook(
        lambda module, inputs: seen.append((is_channels_last(module.weight), is_channels_last(inputs[0])))
    )
    result = train_child(arch, model, fake_data, tmp_path / "run", config, progress=False)
    assert len(seen) > len(fake_data.train) // config.batch_size and set(seen) == {(True, True)}

    monkeypatch.setattr(hwnas.distributed, "layout", lambda device: torch.contiguous_format)
    _, plain = _net(seed=5)
    plain.load_state_dict(torch.load(tmp_path / "run" / "trained.pt", weights_only=True))
    assert not is_channels_last(next(plain.parameters()))
    loss, acc = evaluate(plain, make_loader(fake_data.val, 256, shuffle=False))
    assert loss == pytest.approx(result["val_loss"], rel=1e-5)
    assert abs(acc - result["val_acc"]) <= 1 / len(fake_data.val)


def test_resume_continues_exactly(tmp_path, fake_data):
    config = TrainConfig(epochs=2, batch_size=128, seed=3)
    arch, model = _net()
    whole = train_child(arch, model, fake_data, tmp_path / "whole", config, progress=False)

    def stop_after_first_epoch(row):
        raise Interrupted

    arch, model = _net()
    with pytest.raises(Interrupted):
        train_child(arch, model, fake_data, tmp_path / "cut", config, progress=False, on_epoch=stop_after_first_epoch)
    arch, fresh = _net(seed=99)  # the checkpoint, not this initialisation, must decide
    resumed = train_child(arch, fresh, fake_data, tmp_path / "cut", config, resume=True, progress=False)
    assert resumed["val_acc"] == whole["val_acc"]
    a = torch.load(tmp_path / "whole" / "trained.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "trained.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line) for line in (tmp_path / "cut" / "train_history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [0, 1]


def test_cli_fine_tunes_a_run_in_place_and_refuses_to_redo_it(cli_runner, tmp_path):
    arch, model = _net()
    run = tmp_path / "run"
    run.mkdir()
    arch.save(run / "arch.json")
    torch.save(model.state_dict(), run / "child.pt")
    args = ["train", "--run", str(run), "--data", "fake", "--epochs", "1", "--batch-size", "128", "--json"]
    first = cli_runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert 0 <= json.loads(first.output)["val_acc"] <= 1
    assert RunFolder.open(run).weights_path().name == "trained.pt"  # export now ships the trained weights
    again = cli_runner.invoke(cli, args)
    assert again.exit_code == EXIT_ERROR and "--resume" in again.output


def test_cli_argument_errors(cli_runner, tmp_path):
    arch, model = _net()
    searched = tmp_path / "searched"  # a run no `hwnas train` has touched
    searched.mkdir()
    arch.save(searched / "arch.json")
    torch.save(model.state_dict(), searched / "child.pt")
    cases = [
        (
            ["train", "--run", str(searched), "--resume", "--data", "fake"],
            f"nothing to resume in {searched}: no train_checkpoint.pt",
        ),
        (["train", "--arch", arch.to_compact(), "--out", str(tmp_path / "x")], "--from-scratch or --weights"),
        (
            [
                "train",
                "--arch",
                arch.to_compact().replace("num_classes=10", "num_classes=3"),
                "--from-scratch",
                "--data",
                "fake",
                "--out",
                str(tmp_path / "y"),
            ],
            "has 10 classes but the arch's net has 3",
        ),
        (["train", "--run", str(tmp_path / "missing")], "does not exist"),
    ]
    for args, message in cases:
        result = cli_runner.invoke(cli, args)
        assert result.exit_code == EXIT_ERROR and message in result.output, (args, result.output)


def test_training_learns_a_learnable_set(tmp_path, fake_data):
    """Fails if the optimiser stops stepping: ``fake`` shifts each class's mean, so two epochs get far above chance."""
    arch, model = _net()
    before = evaluate(model, make_loader(fake_data.val, 256, False))[1]
    result = train_child(
        arch, model, fake_data, tmp_path / "run", TrainConfig(epochs=2, batch_size=32, seed=0, bn_batches=4), progress=False
    )
    assert before < 0.2  # an untrained net is at chance (10 classes)
    assert result["val_acc"] > 0.5, result["val_acc"]


def test_cli_trains_an_arch_from_scratch_or_from_given_weights(cli_runner, tmp_path):
    arch, model = _net()
    common = ["--data", "fake", "--epochs", "1", "--batch-size", "64", "--bn-batches", "2", "--json"]
    scratch = cli_runner.invoke(
        cli,
        [
            "train",
            "--arch",
            arch.to_compact(),
            "--from-scratch",
            "--out",
            str(tmp_path / "scratch"),
            *common,
            "--epochs",
            "2",
            "--batch-size",
            "32",
        ],
    )
    assert scratch.exit_code == 0, scratch.output
    assert (tmp_path / "scratch" / "trained.pt").is_file() and json.loads(scratch.stdout)["arch"] == arch.to_compact()
    # from weights: a net that already scores well starts there (lr tiny, so one epoch cannot get there alone)
    trained = torch.load(tmp_path / "scratch" / "trained.pt", weights_only=True)
    torch.save(trained, tmp_path / "w.pt")
    tiny_lr = ["--lr", "1e-6"]
    from_weights = cli_runner.invoke(
        cli,
        [
            "train",
            "--arch",
            arch.to_compact(),
            "--weights",
            str(tmp_path / "w.pt"),
            "--out",
            str(tmp_path / "warm"),
            *common,
            *tiny_lr,
        ],
    )
    cold = cli_runner.invoke(
        cli, ["train", "--arch", arch.to_compact(), "--from-scratch", "--out", str(tmp_path / "cold"), *common, *tiny_lr]
    )
    assert from_weights.exit_code == 0 and cold.exit_code == 0, (from_weights.output, cold.output)
    warm_acc, cold_acc = json.loads(from_weights.stdout)["val_acc"], json.loads(cold.stdout)["val_acc"]
    assert json.loads(scratch.stdout)["val_acc"] > 0.4
    # BN is re-estimated on other batches, so the score moves a little; starting from the weights is what counts
    assert warm_acc >= json.loads(scratch.stdout)["val_acc"] - 0.1 and warm_acc > cold_acc + 0.2


def test_cli_resume_of_an_arch_training_keeps_its_seed_and_data(cli_runner, tmp_path, monkeypatch):
    """``train --arch A --out O --resume`` continues on the data and the seeded split the training started with, though
    neither --seed nor --data is repeated: the digits' validation split depends on the seed."""
    arch, _ = _net()
    compact = Arch(arch.space, arch.choices, {**arch.space_args, "in_channels": 1}).to_compact()
    start = [
        "train",
        "--arch",
        compact,
        "--from-scratch",
        "--data",
        "digits",
        "--seed",
        "3",
        "--epochs",
        "2",
        "--batch-size",
        "128",
        "--bn-batches",
        "2",
        "--json",
    ]
    whole = cli_runner.invoke(cli, [*start, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    import hwnas.train

    calls = []

    def interrupted(*args, **kwargs):  # the second epoch's BN pass: epoch 1 is checkpointed, epoch 2 never ends
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return recalibrate_bn(*args, **kwargs)

    monkeypatch.setattr(hwnas.train, "recalibrate_bn", interrupted)
    cut = cli_runner.invoke(cli, [*start, "--out", str(tmp_path / "cut")])
    assert isinstance(cut.exception, Interrupted)
    monkeypatch.undo()
    refused = cli_runner.invoke(cli, ["train", "--arch", compact, "--out", str(tmp_path / "cut"), "--resume", "--data", "fake"])
    assert refused.exit_code == EXIT_ERROR and "on the data it started with (digits)" in refused.output
    resumed = cli_runner.invoke(cli, ["train", "--arch", compact, "--out", str(tmp_path / "cut"), "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    a, b = json.loads(whole.output), json.loads(resumed.output)
    assert {**a, "folder": None, "weights": None} == {**b, "folder": None, "weights": None}
    trained = [torch.load(tmp_path / name / "trained.pt", weights_only=True) for name in ("whole", "cut")]
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
