"""``hwnas train``: fine-tune a search run's child (inherited weights) or train an arch from scratch."""

from __future__ import annotations

import datetime
import shlex
from contextlib import ExitStack
from pathlib import Path

import click
import torch

from hwnas.arch import load_arch
from hwnas.cli.options import COUNT, COUNT0, FINITE, RESUME_HINT, data_option, echo_json, given_options, json_option
from hwnas.data import load_data
from hwnas.distributed import launched
from hwnas.errors import HwnasError
from hwnas.files import LOCK_NAME, locked
from hwnas.run_folder import RUNS_ROOT, TRAIN_CHECKPOINT, TRAINED, RunFolder, load_weights
from hwnas.train import TrainConfig, resumed_options, train_child


@click.command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Fine-tune this search run's child, in place [default: the newest run under runs/].",
)
@click.option("--arch", "arch_source", help="Train this arch (JSON file or compact string) instead.")
@click.option("--from-scratch", is_flag=True, help="With --arch: start from a fresh initialisation.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="With --arch: start from this state dict.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="With --arch: the run folder [default: runs/<time>-train]."
)
@data_option
@click.option("--epochs", type=COUNT, default=5, show_default=True)
@click.option("--batch-size", type=COUNT, default=64, show_default=True)
@click.option("--lr", type=FINITE, default=0.05, show_default=True, help="Peak learning rate (SGD, Nesterov), cosine to 0.")
@click.option("--weight-decay", type=FINITE, default=4e-5, show_default=True)
@click.option("--label-smoothing", type=FINITE, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=COUNT0, default=0, show_default=True, help="Data loader worker processes.")
@click.option(
    "--bn-batches",
    type=COUNT,
    default=20,
    show_default=True,
    help="Training batches that re-estimate the BN statistics before each evaluation.",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where to train; under torchrun, cuda puts rank r on GPU LOCAL_RANK (NCCL), cpu uses Gloo.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted training from its last checkpoint.")
@click.option("--force", is_flag=True, help="Train again over an earlier training's results.")
@json_option
def train(
    run_dir: Path | None,
    arch_source: str | None,
    from_scratch: bool,
    weights: Path | None,
    out: Path | None,
    data: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    label_smoothing: float,
    seed: int,
    workers: int,
    bn_batches: int,
    device: str,
    resume: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Train a child net and write trained.pt (what `hwnas export` ships) and its validation accuracy.

    Under ``torchrun --nproc-per-node N -m hwnas train ...`` the N processes share every global batch of --batch-size.
    """
    data_given = False
    if resume:  # the options it was started with win, so the schedule stays the same: refuse others rather than ignore them
        given = given_options(click.get_current_context(), keep={"run_dir", "arch_source", "out", "device", "resume", "as_json"})
        data_given = "--data" in given
        given = [flag for flag in given if flag != "--data"]  # checked against the checkpoint's below
        if given:
            raise HwnasError(f"--resume continues a training with the options it started with; leave out {', '.join(given)}")
    config = TrainConfig(epochs, batch_size, lr, 0.9, weight_decay, label_smoothing, seed, workers, bn_batches)
    if arch_source:
        if run_dir:
            raise HwnasError("give --run or --arch, not both")
        if from_scratch and weights:
            raise HwnasError("--from-scratch and --weights: give one of them, not both")
        if not (from_scratch or weights or resume):
            raise HwnasError("with --arch, say where to start: --from-scratch or --weights FILE")
        arch = load_arch(arch_source)
        torch.manual_seed(seed)  # --from-scratch: the initial weights are --seed's, whatever ran before in this process
        model = arch.build()
        if weights:
            load_weights(model, weights)
        folder = out or RUNS_ROOT / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-train"
    else:
        if from_scratch or weights or out:
            raise HwnasError("--from-scratch, --weights and --out go with --arch; a run is fine-tuned in place")
        run = RunFolder.open(run_dir) if run_dir else RunFolder.newest()
        arch, model, _ = run.child()
        folder = run.path
    if (folder / TRAINED).exists() and not (resume or force):
        raise HwnasError(
            f"{folder} already holds a trained child ({TRAINED}); pass --resume to continue or --force to train again"
        )
    if resume:  # refused here, before the data is loaded; the data and its split are the ones the training started with
        config, started_on = resumed_options(folder)
        if started_on is not None and data_given and data != started_on:
            raise HwnasError(f"--resume continues a training on the data it started with ({started_on}); leave out --data {data}")
        data = started_on or data
    if arch_source and not resume and folder.exists() and any(p.name != LOCK_NAME for p in folder.iterdir()) and not force:
        raise HwnasError(f"{folder} exists and is not empty; pass --force to write into it")
    space_args = arch.space_args
    splits = load_data(data, space_args["resolution"], space_args["in_channels"], config.seed)
    if splits.num_classes != space_args["num_classes"]:
        raise HwnasError(f"data {data!r} has {splits.num_classes} classes but the arch's net has {space_args['num_classes']}")

    def report(row: dict) -> None:
        if not as_json and dist.is_main:
            click.echo(
                f"epoch {row['epoch'] + 1}/{config.epochs}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}, "
                f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f} ({row['seconds']:.1f} s)"
            )

    source = f"--arch {shlex.quote(arch_source)} --out {shlex.quote(str(folder))}" if arch_source else f"--run {folder}"
    hint = f"hwnas train {source} --resume"
    with launched(device) as dist, ExitStack() as stack:
        if dist.is_main:  # one writer per run folder
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(locked(folder, "run folder"))
            click.get_current_context().meta[RESUME_HINT] = lambda: hint if (folder / TRAIN_CHECKPOINT).is_file() else None
        result = train_child(
            arch, model, splits, folder, config, resume=resume, progress=not as_json, on_epoch=report, dist=dist, device=device
        )
    if not dist.is_main:
        return
    if as_json:
        echo_json({**result, "folder": str(folder)})
    else:
        click.echo(f"validation accuracy {result['val_acc']:.4f}; weights in {folder / TRAINED}")
