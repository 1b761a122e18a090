"""GreedyNAS (CVPR 2020, https://arxiv.org/abs/2003.11236): train the supernet on the paths that look good.

Each step samples ``m`` paths under the aim, each from the candidate pool with probability
eps (rising linearly from 0 to ``eps_max`` over the run) and otherwise uniformly (as SPOS);
ranks them by their loss on a fixed small held-out set (BN normalising with that batch's own
statistics, ``hwnas.batchnorm.batch_statistics``), and trains the ``k`` best on the batch. The
``k`` best enter the candidate pool with their loss; a full pool drops its worst path. The
pool, its size and every path's loss are in the checkpoint. The run stops early when the pool
is steady: when under ``stop_share`` of the paths that entered it during an epoch were new to
it. The evolution (``hwnas.search.evolution``, as SPOS's) starts from the pool's best paths.

Why it helps, the paper's argument: if a share q of the paths under the aim are good, the
chance that at least k of m uniform draws are good is sum_{j>=k} C(m, j) q^j (1-q)^(m-j)
(83.38 % for q = 0.6, k = 5, m = 10), and with a pool of good paths drawn with probability
eps the share becomes eps + (1 - eps) q (99.36 % at eps = 0.5): ``at_least_k_good``.

Deviations: the ``k`` paths' gradients on the batch are averaged into one weight step (the
paper trains each of them; one step per batch keeps the learning rate's meaning the same as
for the other methods); the held-out ranking set is ``rank_images`` images of the held-out
part of the training set (the paper: 1,000 validation images), capped by its size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hwnas.batchnorm import batch_statistics
from hwnas.errors import HwnasError
from hwnas.search.oneshot import held_out_tensors
from hwnas.search.spos import SELECTION_KNOBS, SposStrategy, numpy_rng
from hwnas.search.strategy import ArchBatches, Knob, StepResult
from hwnas.search.supernet import PathChoice

Columns = tuple[int, ...]


def at_least_k_good(m: int, k: int, q: float, eps: float = 0.0) -> float:
    """P(at least ``k`` of ``m`` sampled paths are good): each drawn from an all-good pool with probability
    ``eps``, else uniformly, good with probability ``q``."""
    share = eps + (1.0 - eps) * q
    return sum(math.comb(m, j) * share**j * (1.0 - share) ** (m - j) for j in range(k, m + 1))


def draw_candidates(m: int, eps: float, pool: list[Columns], uniform: Any, rng: np.random.Generator) -> list[Columns]:
    """``m`` paths, each from ``pool`` (uniformly over its entries) with probability ``eps``, else ``uniform(rng)``."""
    return [pool[int(rng.integers(len(pool)))] if pool and rng.random() < eps else tuple(uniform(rng)) for _ in range(m)]


class CandidatePool:
    """The best paths seen, by their loss when they were last ranked; at most ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.loss: dict[Columns, float] = {}

    def add(self, path: Columns, loss: float) -> bool:
        """Insert or update ``path``; returns whether it was new to the pool (and stayed in it)."""
        new = path not in self.loss
        self.loss[path] = loss
        if len(self.loss) > self.size:
            worst = max(self.loss, key=lambda p: self.loss[p])
            del self.loss[worst]
            if worst == path:
                return False
        return new

    def paths(self) -> list[Columns]:
        """Best (lowest loss) first."""
        return sorted(self.loss, key=lambda p: self.loss[p])

    def state(self) -> dict[str, Any]:
        return {"size": self.size, "paths": [[list(path), loss] for path, loss in self.loss.items()]}

    def load(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        self.loss = {tuple(int(c) for c in path): float(loss) for path, loss in state["paths"]}


class GreedyNasStrategy(SposStrategy):
    name = "greedynas"
    knobs = {
        **SELECTION_KNOBS,
        "paths_sampled": Knob(10, "m: paths sampled and ranked per step", low=1),
        "paths_trained": Knob(5, "k: the best of them trained per step", low=1),
        "pool_size": Knob(1000, "candidate pool size", low=1),
        "eps_max": Knob(0.8, "share of paths drawn from the pool at the end of the run (rises linearly from 0)", low=0, high=1),
        "rank_images": Knob(1000, "held-out images the sampled paths are ranked on (paper: 1,000)", low=2),
        "stop_share": Knob(0.08, "stop early once under this share of the paths entering the pool in an epoch are new", low=0),
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        super().check_options(options)
        if options["paths_trained"] > options["paths_sampled"]:
            raise HwnasError(
                f"greedynas trains the best --paths-trained {options['paths_trained']} of the --paths-sampled "
                f"{options['paths_sampled']} paths it ranks: it cannot train more than it samples"
            )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool = CandidatePool(int(self.options["pool_size"]))
        self.rank_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.entered = self.new = 0

    def epoch_start(self, epoch: int, epochs: int) -> None:
        super().epoch_start(epoch, epochs)
        self.entered = self.new = 0

    def eps(self) -> float:
        """eps_max x the share of the run's steps done: 0 at the first step, eps_max at the last."""
        return float(self.options["eps_max"]) * min(self.progress, 1.0)

    @torch.no_grad()
    def rank(self, paths: list[Columns]) -> list[float]:
        """Each path's loss on the ranking set: the same ``rank_images`` held-out images every step."""
        if self.rank_batch is None:
            if self.held_out_set is None:
                raise HwnasError("greedynas ranks paths on held-out images: --arch-fraction must be > 0")
            self.rank_batch = held_out_tensors(self.held_out_set, self.options["rank_images"], 0, self.supernet)
        images, labels = self.rank_batch
        with batch_statistics(self.supernet):
            return [float(self.cross_entropy(self.supernet(images, [PathChoice.single(c) for c in p]), labels)) for p in paths]

    def step(self, images: torch.Tensor, labels: torch.Tensor, arch_batches: ArchBatches | None) -> StepResult:
        paths = draw_candidates(
            self.options["paths_sampled"], self.eps(), self.pool.paths(), self.sampler.draw_in_band, numpy_rng(self.generator)
        )
        losses = self.rank(paths)
        best = sorted(range(len(paths)), key=lambda i: losses[i])[: self.options["paths_trained"]]
        self.weight_optimizer.zero_grad(set_to_none=True)
        loss_sum = correct = 0
        for i in best:
            logits = self.supernet(images, [PathChoice.single(c) for c in paths[i]])
            loss = self.cross_entropy(logits, labels)
            (loss / len(best)).backward()
            loss_sum += float(loss.detach())
            correct += self.correct(logits, labels)
            self.epoch_ms.append(self.latency.columns_ms(list(paths[i])))
            self.entered += 1
            self.new += self.pool.add(paths[i], losses[i])
        self.clip_and_step()
        return StepResult(loss_sum / len(best), correct, len(labels) * len(best), float(np.mean(self.epoch_ms[-len(best) :])))

    def epoch_end(self) -> None:
        """The pool is steady when few of the paths that entered it this epoch were new."""
        if self.entered and self.new / self.entered < self.options["stop_share"]:
            self.stopped = True

    def initial_population(self) -> list[Columns]:
        return self.pool.paths()

    def log_fields(self) -> dict[str, Any]:
        return {
            **super().log_fields(),
            "eps": self.eps(),
            "pool": len(self.pool.loss),
            "new_share": self.new / self.entered if self.entered else None,
            "stopped": self.stopped,
        }

    def extra_state(self) -> dict[str, Any]:
        return {"pool": self.pool.state(), "stopped": self.stopped}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.pool.load(state["pool"])
        self.stopped = bool(state["stopped"])
