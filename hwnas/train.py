"""Train or fine-tune a child net: cosine LR, label smoothing, a checkpoint every epoch, resume.

Two starting points: a search run's child (its weights inherited from the supernet, the DSNAS
way: fine-tune instead of retraining) or an arch from scratch. Either way the results land in
one folder: ``arch.json``, ``trained.pt`` (the weights ``hwnas export`` prefers),
``train_checkpoint.pt`` (resume state), ``train_history.jsonl`` and ``train_result.json``.

The learning rate is a pure function of the step (cosine from ``lr`` to 0) and each epoch's
batch order a pure function of the seed and the epoch, so a resumed run continues exactly as
the uninterrupted one would have. Before each evaluation the BN statistics are re-estimated at
the current weights (``hwnas.batchnorm``), not left as a momentum average over weights that
have since moved; they are saved with the weights.

Under torchrun (``dist`` of several processes) each rank trains on its shard of every global
batch through DDP, batch norm over the global batch (``hwnas.distributed``); rank 0 alone
writes the folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from hwnas import lend_api_call
from hwnas.arch import Arch
from hwnas.batchnorm import batch_statistics, recalibrate_bn
from hwnas.config_checks import check_field_types
from hwnas.data import DataSplits, make_loader
from hwnas.distributed import SINGLE, Dist, like_module, place, train_device, wrap
from hwnas.errors import HwnasError
from hwnas.files import load_torch, read_jsonl, save_torch_atomic, write_json_atomic, write_text_atomic
from hwnas.run_folder import ARCH, TRAIN_CHECKPOINT, TRAIN_HISTORY, TRAIN_RESULT, TRAINED, keep_space_copy


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    seed: int = 0
    workers: int = 0
    bn_batches: int = 20  # training batches that re-estimate the BN statistics before each evaluation

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.epochs < 1 or self.batch_size < 1 or self.bn_batches < 1 or self.workers < 0:
            raise HwnasError(
                f"--epochs, --batch-size and --bn-batches must be >= 1 and --workers >= 0 (got {self.epochs}, "
                f"{self.batch_size}, {self.bn_batches}, {self.workers})"
            )
        if self.lr <= 0 or not 0 <= self.label_smoothing < 1:
            raise HwnasError(f"--lr must be > 0 and --label-smoothing in [0, 1) (got {self.lr}, {self.label_smoothing})")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_stats: bool = False,
    dist: Dist = SINGLE,
) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy (a fraction) of ``model`` in eval mode over ``loader``.

    ``forward`` (default: ``model`` itself) computes the logits of a batch, e.g. a supernet
    under a freshly sampled path per batch; with ``batch_stats`` BN normalises with each
    batch's own statistics (``hwnas.batchnorm.batch_statistics``). With ``dist`` of several
    processes, ``loader`` is this rank's shard and the sums are added over the ranks.
    """
    model.eval()
    forward = forward or model
    loss_sum, correct, seen = 0.0, 0, 0
    with batch_statistics(model) if batch_stats else contextlib.nullcontext():
        for images, labels in loader:
            images = like_module(images, model)
            labels = labels.to(images.device)
            logits = forward(images)
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(labels)
    loss_sum, correct, seen = dist.all_reduce_sum([loss_sum, correct, seen])
    if seen == 0:
        raise HwnasError("the validation set is empty")
    return loss_sum / seen, correct / seen


def cosine_lr(base_lr: float, step: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Cosine annealing from ``base_lr`` at step 0 to ``min_lr`` at ``total_steps`` (steps or epochs)."""
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _save_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, config: TrainConfig, data: str
) -> None:
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": asdict(config),
        "data": data,
        "rng": torch.get_rng_state(),
    }
    save_torch_atomic(folder / TRAIN_CHECKPOINT, state)


def resume_checkpoint(folder: Path) -> Path:
    """The checkpoint ``--resume`` continues from; a clear error when the folder has none."""
    path = folder / TRAIN_CHECKPOINT
    if not path.exists():
        raise HwnasError(f"nothing to resume in {folder}: no {TRAIN_CHECKPOINT}")
    return path


def resumed_options(folder: Path) -> tuple[TrainConfig, str | None]:
    """The options and the data spec an interrupted training started with (None: a checkpoint older than that field)."""
    state = load_torch(resume_checkpoint(folder), "checkpoint", "a checkpoint")
    return TrainConfig(**state["config"]), state.get("data")


def _history(folder: Path, epochs_done: int) -> list[dict[str, Any]]:
    return [row for row in read_jsonl(folder / TRAIN_HISTORY) if row["epoch"] < epochs_done]


def train_child(
    arch: Arch,
    model: nn.Module,
    data: DataSplits,
    folder: Path,
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    dist: Dist = SINGLE,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train ``model`` (the net of ``arch``) on ``data``; write everything into ``folder``; return the result.

    With ``resume`` the run continues from ``folder``'s last checkpoint (the options it was
    started with win, so the schedule stays the same). ``device`` ``cuda``: GPU ``LOCAL_RANK``.
    """
    if dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    start_epoch = 0
    torch.manual_seed(config.seed)
    place(model, train_device(device, dist))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
    )
    if resume:
        state = load_torch(resume_checkpoint(folder), "checkpoint", "a checkpoint")
        config = TrainConfig(**state["config"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start_epoch = int(state["epoch"]) + 1
    if dist.is_main:
        arch.save(folder / ARCH)
        keep_space_copy(folder, arch.build_space())
    history = _history(folder, start_epoch)
    net = wrap(model, dist, train_device(device, dist), find_unused=False)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    val_loader = make_loader(data.val, 256, shuffle=False, workers=config.workers, dist=dist, trim=False)
    # one process: ceil(len / batch); several: the global batches of the order cut to a multiple of their number
    steps_per_epoch = len(make_loader(data.train, config.batch_size, shuffle=True, workers=config.workers, dist=dist))
    total_steps = steps_per_epoch * config.epochs
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        loader = make_loader(
            data.train, config.batch_size, shuffle=True, workers=config.workers, seed=config.seed * 1000 + epoch, dist=dist
        )
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            loader,
            desc=f"train epoch {epoch + 1}/{config.epochs}",
            leave=False,
            disable=not (progress and dist.is_main),
            unit="batch",
        )
        for step, (images, labels) in enumerate(bar):
            lr = cosine_lr(config.lr, epoch * steps_per_epoch + step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = like_module(images, model)
            labels = labels.to(images.device)
            logits = net(images)
            loss = criterion(logits, labels)  # the mean over this rank's shard; DDP averages the equal shards' gradients
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(labels)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        loss_sum, correct, seen = dist.all_reduce_sum([loss_sum, correct, seen])
        recalibrate_bn(model, loader, config.bn_batches)
        val_loss, val_acc = evaluate(model, val_loader, dist=dist)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "seconds": time.perf_counter() - began,
        }
        history.append(row)
        if dist.is_main:
            # history first, checkpoint last: a crash between them only repeats this epoch on resume
            write_text_atomic(folder / TRAIN_HISTORY, "".join(json.dumps(r) + "\n" for r in history))
            _save_checkpoint(folder, model, optimizer, epoch, config, data.name)
        if on_epoch:
            on_epoch(row)
    result = {
        "arch": arch.to_compact(),
        "val_acc": history[-1]["val_acc"],
        "val_loss": history[-1]["val_loss"],
        "epochs": config.epochs,
        "config": asdict(config),
        "data": data.name,
        "weights": str(folder / TRAINED),
    }
    if not dist.is_main:
        return result
    save_torch_atomic(folder / TRAINED, model.state_dict())
    write_json_atomic(folder / TRAIN_RESULT, result)
    return result


lend_api_call(__name__)  # hwnas.train(...) is hwnas.api.train (docs/python_api.md)
