"""``hwnas train``: fine-tune a search run's child (inherited weights) or train an arch from scratch."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from hwnas import api
from hwnas.cli.options import (
    COUNT,
    COUNT0,
    FINITE,
    RESUME_HINT,
    data_option,
    echo_json,
    given_options,
    json_option,
    space_file_option,
)
from hwnas.errors import HwnasError
from hwnas.run_folder import TRAIN_CHECKPOINT, TRAINED


@click.command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Fine-tune this search run's child, in place [default: the newest run under runs/].",
)
@click.option("--arch", "arch_source", help="Train this arch (JSON file or compact string) instead.")
@space_file_option
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
    space_file: str | None,
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
        given = given_options(
            click.get_current_context(), keep={"run_dir", "arch_source", "space_file", "out", "device", "resume", "as_json"}
        )
        data_given = "--data" in given
        given = [flag for flag in given if flag != "--data"]  # checked against the checkpoint's
        if given:
            raise HwnasError(f"--resume continues a training with the options it started with; leave out {', '.join(given)}")

    def report(row: dict) -> None:
        if not as_json:
            click.echo(
                f"epoch {row['epoch'] + 1}/{row['epochs']}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}, "
                f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f} ({row['seconds']:.1f} s)"
            )

    folder = run_dir or (out if arch_source else None)  # where the training writes, where the command names it
    if folder is not None:
        source = f"--arch {shlex.quote(arch_source)} --out {shlex.quote(str(folder))}" if arch_source else f"--run {folder}"
        hint = f"hwnas train {source} --resume"
        click.get_current_context().meta[RESUME_HINT] = lambda: hint if (folder / TRAIN_CHECKPOINT).is_file() else None
    result = api.train(
        run=run_dir,
        arch=arch_source,
        space=space_file,
        from_scratch=from_scratch,
        weights=weights,
        out=out,
        data=data if data_given or not resume else None,
        device=device,
        resume=resume,
        force=force,
        progress=not as_json,
        on_epoch=report,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        seed=seed,
        workers=workers,
        bn_batches=bn_batches,
    )
    if result is None:  # a rank other than 0 under torchrun
        return
    if as_json:
        echo_json({**result.result, "folder": str(result.folder)})
    else:
        click.echo(f"validation accuracy {result.val_acc:.4f}; weights in {result.folder / TRAINED}")
