"""The shared search loop: set-up, epochs, checkpoints, resume, history, the derived child.

Every method runs through ``SearchRun``: the budget is checked against the table before any
data is loaded, each epoch ends with a checkpoint written atomically (weights, alpha, both
optimisers, the multiplier, every RNG state, the method's own state), and a resumed run
rebuilds the same objects from ``config.json`` and continues from the last checkpoint. Data
order depends only on (seed, epoch), and each step's random draws only on (seed, epoch, step),
so a resumed run computes exactly what an uninterrupted one would have.

Under torchrun (``dist`` of several processes, ``hwnas.distributed``) every rank trains on its
shard of each global batch through DDP, with the same paths and arch state as the others;
only rank 0 writes the run folder.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from hwnas.arch import Arch
from hwnas.batchnorm import recalibrate_bn
from hwnas.config_checks import check_field_types
from hwnas.data import load_data, make_loader, split_for_arch
from hwnas.distributed import SINGLE, Dist, like_module, place, split_batch, step_seed, train_device, wrap
from hwnas.errors import HwnasError
from hwnas.files import load_json, load_torch, read_jsonl, save_torch_atomic, write_json_atomic, write_text_atomic
from hwnas.latency import LatencyPredictor, LatencyTable, latency_model
from hwnas.latency.lookup import expected_meta
from hwnas.latency.model import calibration_record
from hwnas.latency.precision import PRECISIONS
from hwnas.progress import progress_bar
from hwnas.run_folder import (
    ARCH,
    CHECKPOINT,
    CHILD,
    CONFIG,
    HISTORY,
    PLOT,
    REPORT,
    RESULT,
    SELECTION_PLOT,
    SUPERNET,
    TABLE_COPY,
    copy_table,
    keep_space_copy,
    read_space_copy,
    recorded_table,
)
from hwnas.search import STRATEGIES
from hwnas.search.budget import BudgetController, Target, make_target
from hwnas.search.oneshot import select
from hwnas.search.report import write_plot, write_report, write_selection_plot
from hwnas.spaces import Space, get_space, user_space_file
from hwnas.train import cosine_lr, evaluate


@dataclass
class SearchConfig:
    """Every option of a search; saved as ``config.json`` and enough to rebuild the run on resume."""

    method: str
    table: str
    budget_ms: float
    #: a built-in space's name or a space file's path, as given
    space: str = "proxyless"
    space_args: dict[str, Any] = field(default_factory=dict)
    #: a space file's content hash; the run folder keeps the file's copy (``SPACE_COPY``), which a resumed run reads
    space_sha256: str | None = None
    data: str = "digits"
    allow_foreign_table: bool = False
    runtime: str = "onnxruntime"
    device: str = "cpu"
    threads: int | None = 1
    table_batch_size: int = 1
    #: the precision the table must have been measured at (``hwnas.latency.precision``): the child ships in it
    precision: str = "fp32"
    uncalibrated: bool = False
    margin: float | None = None
    latency_loss: str = "lagrangian"
    multiplier_rate: float = 0.5
    multiplier_gain: float = 10.0
    multiplier_bound: float = 50.0
    one_sided: bool = False
    epochs: int = 8
    batch_size: int = 64
    steps_per_epoch: int | None = None
    lr: float = 0.05
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_fraction: float | None = None
    seed: int = 0
    workers: int = 0
    bn_batches: int = 20
    eval_images: int | None = 2048
    method_options: dict[str, Any] = field(default_factory=dict)
    #: SHA-256 of the table's bytes when the run started (None until then): resume refuses a changed table
    table_sha256: str | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        self.table = str(Path(self.table).absolute())  # a run is resumed and exported from any folder
        if self.method not in STRATEGIES:
            raise HwnasError(f"unknown method {self.method!r}; known: {', '.join(STRATEGIES)}")
        if self.epochs < 1:
            raise HwnasError(f"--epochs must be at least 1, got {self.epochs}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise HwnasError(f"--steps-per-epoch must be at least 1, got {self.steps_per_epoch}")
        if self.eval_images is not None and self.eval_images < 1:
            raise HwnasError(f"--eval-images must be at least 1, got {self.eval_images}")
        if self.batch_size < 1 or self.bn_batches < 1 or self.workers < 0:
            raise HwnasError(
                f"--batch-size and --bn-batches must be at least 1 and --workers at least 0, got {self.batch_size}, "
                f"{self.bn_batches} and {self.workers}"
            )
        if self.lr <= 0 or self.lr_min < 0 or self.momentum < 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise HwnasError(
                f"--lr and --grad-clip must be > 0 and --lr-min, --momentum, --weight-decay >= 0, got {self.lr}, "
                f"{self.grad_clip}, {self.lr_min}, {self.momentum} and {self.weight_decay}"
            )
        if self.precision not in PRECISIONS:
            raise HwnasError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS)}")
        strategy = STRATEGIES[self.method]
        if not isinstance(self.method_options, dict):
            raise HwnasError(f"method_options must be an object of option -> value, got {self.method_options!r}")
        strategy.resolve_options(self.method_options)  # every option checked before a folder is made or data is read
        if self.arch_fraction is None:
            self.arch_fraction = strategy.held_out
        if strategy.held_out > 0 and self.arch_fraction <= 0:
            use = "scores archs" if strategy.one_shot else "takes arch steps"
            raise HwnasError(f"method {self.method} {use} on held-out data: --arch-fraction must be > 0")

    @classmethod
    def load(cls, folder: Path) -> SearchConfig:
        path = folder / CONFIG
        if not folder.is_dir():
            raise HwnasError(f"run folder {folder} does not exist")
        if not path.is_file():
            raise HwnasError(f"{folder} has no {CONFIG}: not a search run folder")
        data = load_json(path)
        known = set(cls.__dataclass_fields__)
        missing = [name for name in ("method", "table", "budget_ms") if name not in data]
        if missing:
            raise HwnasError(f"{path} is not a search run's config: it has no {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})


def run_space(config: SearchConfig, folder: Path) -> Space:
    """The run's space: a space file's from the copy in ``folder`` where it holds the one ``config.space_sha256``
    records (a resumed run), else as given, whose content must then be that one."""
    copy = read_space_copy(folder, config.space_sha256) if config.space_sha256 else None
    space = get_space(copy.name if copy is not None else config.space, **config.space_args)
    source = user_space_file(space)
    found = source.sha256 if source else None
    if found != config.space_sha256:
        raise HwnasError(
            f"space {config.space} has sha256 {found}, but the run was set up for sha256 {config.space_sha256}; "
            f"the space file changed: start a new run, or restore the file"
        )
    return space


def _cycle(loader: Any) -> Iterator:
    while True:
        yield from loader


class SearchRun:
    """One search: built from a config, run epoch by epoch into ``out``."""

    def __init__(self, config: SearchConfig, out: Path, progress: bool = True, dist: Dist = SINGLE) -> None:
        self.config, self.out, self.dist = config, Path(out), dist
        self.progress = progress and dist.is_main
        if dist.active and STRATEGIES[config.method].one_shot:
            raise HwnasError(
                f"method {config.method} runs in one process only (its selection scores candidates in one "
                f"process); start it without torchrun, not with {dist.world_size} processes"
            )
        split_batch(config.batch_size, dist)
        self.device = train_device(config.device, dist)
        self.space = run_space(config, self.out)
        phone = config.device == "android"
        expect = expected_meta(
            config.device, config.runtime, config.table_batch_size, config.precision, self.space, "android" if phone else None
        )
        if phone:  # the target is the phone that measured the table: a search does not reach it, its name is the table's
            del expect["device_name"]
        if config.threads is not None:
            expect["threads"] = config.threads
        # a run that has started uses the table it recorded, as it was (``hwnas.run_folder.recorded_table``)
        path = config.table if config.table_sha256 is None else recorded_table(self.out, config.table, config.table_sha256)
        self.table = LatencyTable.load(path, expect=expect, allow_foreign=config.allow_foreign_table)
        if str(path) != config.table:
            warnings.warn(f"the run's table {config.table} is gone: using the run's copy {path} (the same bytes)", stacklevel=2)
        if config.table_sha256 is None:
            config.table_sha256 = self.table.sha256
        elif self.table.sha256 != config.table_sha256:
            raise HwnasError(f"latency table {path} changed while it was read; try again")
        self.table.require_calibration(config.uncalibrated)
        self.latency: LatencyPredictor = latency_model(self.table, self.space)
        self.fastest_arch, fastest_ms = self.latency.fastest()
        _, slowest_ms = self.latency.slowest()
        self.target: Target = make_target(config.budget_ms, fastest_ms, slowest_ms, config.margin, self.table.p90_relative_error)
        self.budget = BudgetController(
            config.latency_loss,
            self.target.aim_ms,
            config.multiplier_rate,
            one_sided=config.one_sided,
            gain=config.multiplier_gain,
            bound=config.multiplier_bound,
        )

        self.data = load_data(config.data, self.space.args.resolution, self.space.args.in_channels, config.seed)
        if self.data.num_classes != self.space.args.num_classes:
            raise HwnasError(
                f"data {config.data} has {self.data.num_classes} classes but the space was built for "
                f"{self.space.args.num_classes}: pass --num-classes {self.data.num_classes}"
            )
        self.weight_set, self.arch_set = split_for_arch(self.data.train, config.arch_fraction, config.seed)

        torch.manual_seed(config.seed)
        strategy_class = STRATEGIES[config.method]
        self.supernet = place(strategy_class.build_supernet(self.space), self.device)
        self.arch = strategy_class.build_arch(self.space)  # alpha, the latency model and the controller stay on the CPU
        #: what a weight step calls: the supernet, or DDP over it (batch norm over the global batch) in several processes
        self.net = wrap(self.supernet, dist, self.device)
        self.weight_optimizer = torch.optim.SGD(
            self.supernet.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.strategy = strategy_class(
            self.supernet,
            self.arch,
            self.latency,
            self.budget,
            self.weight_optimizer,
            config.method_options,
            self.generator,
            grad_clip=config.grad_clip,
        )
        self.strategy.held_out_set = self.arch_set
        self.strategy.net, self.strategy.dist = self.net, dist
        self.start_epoch = 0
        #: why the table was not copied into the run folder (None: it was, or not yet)
        self.table_copy_note: str | None = None
        self.selection: Any = None  # a one-shot method's ``oneshot.Selection``, once made

    # -- folder ----------------------------------------------------------------------------
    def resolved_config(self) -> dict[str, Any]:
        """config.json: every option exactly as given (``SearchConfig.load`` reads them back unchanged),
        what the run resolved from the table and the method's defaults under ``resolved``, and how it runs."""
        data = asdict(self.config)
        data["resolved"] = {
            "space_args": self.space.args.to_dict(),
            "method_options": dict(self.strategy.options),
            "table": str(self.table.path),
            "table_copy": TABLE_COPY if (self.out / TABLE_COPY).is_file() else None,
            "table_copy_note": self.table_copy_note,
            "table_meta": {
                k: self.table.meta.get(k) for k in ("runtime", "device", "device_name", "threads", "batch_size", "dtype")
            },
            "margin": self.target.margin,
            "margin_source": self.target.margin_source,
            "aim_ms": self.target.aim_ms,
            "fastest_ms": self.target.fastest_ms,
            "slowest_ms": self.target.slowest_ms,
        }
        data.update(train_device=str(self.device), **self.dist.describe(), launches=[{"epoch": 0, **self.dist.describe()}])
        return data

    def record_launch(self) -> None:
        """A resumed run's ``config.json``: how it runs now (another number of processes, maybe), and since when."""
        data = load_json(self.out / CONFIG)
        data.update(train_device=str(self.device), **self.dist.describe())
        data["launches"] = [*data.get("launches", []), {"epoch": self.start_epoch, **self.dist.describe()}]
        write_json_atomic(self.out / CONFIG, data)

    def start_fresh(self) -> None:
        self.strategy.init_alpha()
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        keep_space_copy(self.out, self.space)
        self.table_copy_note = copy_table(self.out, Path(self.config.table), self.config.table_sha256)
        write_json_atomic(self.out / CONFIG, self.resolved_config())
        write_text_atomic(self.out / HISTORY, "")

    def save_checkpoint(self, next_epoch: int) -> None:
        self.dist.check_same(self.arch.alpha, "alpha")
        self.dist.check_same(torch.tensor([self.budget.multiplier, self.budget.integral]), "the latency multiplier")
        if not self.dist.is_main:
            return
        state = {
            "epoch": next_epoch,
            "supernet": self.supernet.state_dict(),
            "alpha": self.arch.alpha.detach().clone(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.strategy.arch_optimizer.state_dict() if self.strategy.arch_optimizer else {},
            "budget": self.budget.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "strategy": self.strategy.extra_state(),
        }
        save_torch_atomic(self.out / CHECKPOINT, state)

    def load_checkpoint(self) -> None:
        state = load_torch(self.out / CHECKPOINT, "checkpoint", "a checkpoint")
        self.supernet.load_state_dict(state["supernet"])
        with torch.no_grad():
            self.arch.alpha.copy_(state["alpha"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        if self.strategy.arch_optimizer is not None:
            self.strategy.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.budget.load_state_dict(state["budget"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.strategy.load_extra_state(state["strategy"])
        self.start_epoch = int(state["epoch"])
        if not self.dist.is_main:
            return
        self.record_launch()
        history = self.history()
        write_text_atomic(
            self.out / HISTORY, "".join(json.dumps(row) + "\n" for row in history if row["epoch"] < self.start_epoch)
        )

    def history(self) -> list[dict[str, Any]]:
        return read_jsonl(self.out / HISTORY)

    # -- epochs ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        config = self.config
        lr = cosine_lr(config.lr, epoch, config.epochs, config.lr_min)
        for group in self.weight_optimizer.param_groups:
            group["lr"] = lr
        self.strategy.epoch_start(epoch, config.epochs)
        loader = make_loader(
            self.weight_set, config.batch_size, True, config.workers, seed=config.seed * 100003 + epoch, dist=self.dist
        )
        arch_batches = None
        if self.arch_set is not None:
            arch_iter = _cycle(
                make_loader(
                    self.arch_set, config.batch_size, True, config.workers, seed=config.seed * 100019 + epoch, dist=self.dist
                )
            )
            arch_batches = lambda: self.placed(*next(arch_iter))  # noqa: E731
        steps = len(loader) if config.steps_per_epoch is None else min(len(loader), config.steps_per_epoch)
        self.supernet.train()
        loss_sum = correct = count = 0
        expected = float("nan")
        bar = progress_bar(
            total=steps, desc=f"{config.method} epoch {epoch + 1}/{config.epochs}", unit="steps", enabled=self.progress
        )
        for step, (images, labels) in enumerate(loader):
            if step >= steps:
                break
            self.strategy.progress = (epoch + step / steps) / config.epochs
            self.generator.manual_seed(step_seed(config.seed, epoch, step))  # the same draws on every rank, at any N
            result = self.strategy.step(*self.placed(images, labels), arch_batches)
            loss_sum += result.loss * result.count
            correct += result.correct
            count += result.count
            expected = result.expected_ms
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}", lat=f"{expected:.3f}ms")
        bar.close()
        loss_sum, correct, count = self.dist.all_reduce_sum([loss_sum, correct, count])
        return {"lr": lr, "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}

    def placed(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the training device, images in the supernet's precision."""
        images = like_module(images, self.supernet)
        return images, labels.to(images.device)

    def evaluate_supernet(self, epoch: int) -> tuple[float, float]:
        """Validation loss and accuracy of the supernet under the method's own sampling (seeded apart).

        One path per batch of 128, each normalised with its batch's own BN statistics
        (``hwnas.batchnorm.batch_statistics``): running averages over many paths describe
        none of them. At most ``eval_images`` validation images are used (the first ones, the
        same every epoch): scoring SNAS's all-path supernet on Fashion-MNIST's 10,000 took
        most of an epoch of a short search. The child is scored on all of them.
        """
        generator = torch.Generator().manual_seed(self.config.seed + 7 * epoch + 1)
        val = self.data.val
        if self.config.eval_images is not None and self.config.eval_images < len(val):
            val = Subset(val, range(self.config.eval_images))
        return evaluate(
            self.supernet,
            make_loader(val, 128, False, self.config.workers, dist=self.dist),
            lambda images: self.supernet(images, self.strategy.sample_choices(generator)),
            batch_stats=True,
            dist=self.dist,
        )

    def run(self, resume: bool = False, on_epoch_end: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Search (or continue), then derive, build and evaluate the child; returns result.json's content.

        A run stopped before its first checkpoint has lost nothing but time: resuming it starts it over from its
        ``config.json``, which gives the uninterrupted run's result (the run is seeded from its config).
        """
        if resume and (self.out / CHECKPOINT).is_file():
            self.load_checkpoint()
        else:
            self.start_fresh()
        for epoch in range(self.start_epoch, self.config.epochs):
            if self.strategy.stopped:
                break
            started = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch}
            row.update(self.train_epoch(epoch))
            self.strategy.epoch_end()
            row["val_loss"], row["val_acc"] = self.evaluate_supernet(epoch)
            row.update(self.strategy.log_fields())
            row["seconds"] = time.perf_counter() - started
            if self.dist.is_main:
                with open(self.out / HISTORY, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
            self.save_checkpoint(epoch + 1)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
        # the child is derived, recalibrated, scored and written by rank 0 alone (a plain child net: no collectives)
        return self.finish() if self.dist.is_main else {}

    # -- the result ------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        self.supernet.cpu()  # the selection and the child run on the CPU, as they always have
        if self.strategy.one_shot:
            arch, predicted, derived = self.select()
        else:
            arch, predicted, derived = self.strategy.derive(self.target.aim_ms, spend=not self.config.one_sided)
        if predicted > self.target.budget_ms + 1e-9:
            raise HwnasError(
                f"internal error: derived arch predicted {predicted:.4g} ms over the budget {self.target.budget_ms:.4g} ms"
            )
        child = self.strategy.extract_child(arch)
        train_loader = make_loader(self.data.train, self.config.batch_size, True, self.config.workers, seed=self.config.seed + 5)
        recalibrate_bn(child, train_loader, self.config.bn_batches)
        _, child_acc = evaluate(child, make_loader(self.data.val, 256, False, self.config.workers))
        history = self.history()
        supernet_acc = history[-1]["val_acc"] if history else float("nan")
        arch.save(self.out / ARCH)
        save_torch_atomic(self.out / CHILD, child.state_dict())
        save_torch_atomic(self.out / SUPERNET, self.supernet.state_dict())
        result = {
            "method": self.config.method,
            "budget_ms": self.target.budget_ms,
            "aim_ms": self.target.aim_ms,
            "margin": self.target.margin,
            "predicted_ms": predicted,
            **derived,
            "fastest_ms": self.target.fastest_ms,
            "slowest_ms": self.target.slowest_ms,
            "supernet_val_acc": supernet_acc,
            "child_val_acc": child_acc,
            "arch": arch.to_compact(),
            "table": self.config.table,
            "table_sha256": self.config.table_sha256,
            "calibration": calibration_record(self.table),
        }
        write_json_atomic(self.out / RESULT, result)
        write_plot(self.out / PLOT, history, self.target, self.config.method)
        if self.selection is not None:
            write_selection_plot(self.out / SELECTION_PLOT, self.selection.outcome, self.target, self.selection.method)
        write_report(self.out / REPORT, result, history, self.target, self.resolved_config(), arch, self.latency)
        return result

    def select(self) -> tuple[Arch, float, dict[str, Any]]:
        """A one-shot method's arch: evolution or random search over the trained supernet (``hwnas.search.oneshot``)."""
        started = time.perf_counter()
        self.selection = select(
            self.supernet,
            self.latency,
            self.target.aim_ms,
            self.strategy.options,
            self.weight_set,
            self.arch_set,
            self.out,
            self.config.seed,
            initial=self.strategy.initial_population(),
            progress=self.progress,
        )
        seconds = time.perf_counter() - started
        search_seconds = sum(row.get("seconds", 0.0) for row in self.history())
        return (
            self.selection.arch,
            self.selection.predicted_ms,
            {
                **self.selection.to_dict(self.target.aim_ms),
                "selection_seconds": seconds,
                "selection_share_of_time": seconds / max(seconds + search_seconds, 1e-9),
            },
        )
