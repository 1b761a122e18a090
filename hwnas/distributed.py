"""Many processes through PyTorch's own engine: ``torchrun`` + ``torch.distributed`` (NCCL on GPUs, Gloo on CPUs).

``torchrun --nproc-per-node N -m hwnas search ...`` (or ``hwnas train``) starts N processes;
this module owns what they share: the process group (``launched``), who they are (``Dist``:
rank, world size, local rank, backend), the all-reduce helpers, the sampler that gives each
rank its shard of every batch (``ShardSampler``), the per-step seed (``step_seed``) and a
batch norm whose statistics cover the global batch (``GlobalBatchNorm2d``). A plain ``hwnas
search`` never touches ``torch.distributed``: ``launched`` hands back ``SINGLE`` unless
torchrun's ``WORLD_SIZE`` says more than one process runs.

What a run of N processes computes is what one process computes with the same global batch,
to rounding (``tests/test_distributed.py`` checks 1e-5):

* **Data.** Each epoch has one global order (the order one process's loader would visit,
  ``global_order``); rank r takes every N-th index from position r, so the union of the N
  local batches of step k is the global batch k. The order is cut to a multiple of N
  (DistributedSampler's ``drop_last``): every rank's shard of every batch, the last one
  included, has the same size, so the mean loss over a shard, averaged over ranks by DDP, is
  the mean over the global batch. At most N - 1 images an epoch are left out; with
  ``len % N == 0`` none are. The global batch must split evenly (``batch_size % N == 0``).
* **Batch norm.** Statistics of the global batch: per-shard statistics would make N ranks
  compute another function than one process. ``torch.nn.SyncBatchNorm`` refuses CPU tensors
  in this PyTorch ("SyncBatchNorm expected input tensor to be on GPU"), so Gloo runs could
  not use it; ``GlobalBatchNorm2d`` all-reduces the batch sum and the sum of squared
  deviations with ``torch.distributed.nn.functional.all_reduce`` (autograd flows through),
  one module for NCCL and Gloo alike. Used only when the world size is above 1.
* **Paths and noise.** Every rank samples the same paths and Gumbel noise: the search loop
  reseeds the strategy's generator before each step from (run seed, epoch, step)
  (``step_seed``), never from the rank or the world size, so the supernet runs one graph on
  every rank and a resume with another N draws what the uninterrupted run drew.
* **Arch gradients.** Reduced by mean across ranks before the arch optimiser steps (DSNAS: its
  per-layer rewards dL/dZ; DSO-NAS: dL/dlambda before APG-NAG's step); alpha, the Adam state and the budget controller then stay
  identical on every rank. The latency term is computed whole on every rank: the mean keeps it
  counted once.

One-shot methods (SPOS, GreedyNAS, random) refuse a world size above 1 for now: their
selection stage scores candidates in one process. Their supernet training would sample the
same path on every rank (the shared per-step seed), because DDP averages the gradients of one
graph; a path per rank would be another method (several paths per batch).
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hwnas.errors import HwnasError

#: how long a rank waits in a collective for the others (a rank evaluating or writing a large run folder)
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Dist:
    """Who this process is among the processes of one run; ``SINGLE`` for a plain, one-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes the run folder, checkpoints, plots, progress bars."""
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """Where this rank computes: ``cuda`` -> GPU ``LOCAL_RANK``; anything else -> the CPU."""
        if not name.startswith("cuda"):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise HwnasError(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine")
        if self.local_rank >= torch.cuda.device_count():
            raise HwnasError(
                f"local rank {self.local_rank} needs GPU {self.local_rank}, but only {torch.cuda.device_count()} are visible"
            )
        return torch.device("cuda", self.local_rank)

    def all_reduce_mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Replace ``tensor`` (in place) by its mean over the ranks; returned for chaining. Nothing to do in one process.

        A CPU tensor (alpha and its gradient live on the CPU) travels through the GPU under NCCL.
        """
        if self.active:
            comm = tensor.to(self._comm_device())
            torch.distributed.all_reduce(comm, op=torch.distributed.ReduceOp.SUM)
            tensor.copy_(comm.div_(self.world_size))
        return tensor

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sums of a few numbers over the ranks (epoch totals: loss, correct, seen), in float64."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor.cpu().tolist()

    def check_same(self, tensor: torch.Tensor, what: str) -> None:
        """Raise if ``tensor`` is not bit-identical on every rank (alpha, the multiplier: state all ranks must share)."""
        if not self.active:
            return
        local = tensor.detach().reshape(-1).to(self._comm_device(), torch.float64)
        low, high = local.clone(), local.clone()
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise HwnasError(
                f"{what} differs between the {self.world_size} processes (largest gap {float((high - low).max()):.3g}): "
                f"the ranks no longer run the same search"
            )

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        """How the run ran, for its ``config.json``."""
        return {"world_size": self.world_size, "backend": self.backend}


SINGLE = Dist()


def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def launch_size(environ: dict[str, str] | None = None) -> int:
    """How many processes torchrun started for this command (1 without torchrun)."""
    env = os.environ if environ is None else environ
    try:
        return max(int(env.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


@contextmanager
def launched(device: str = "cpu", environ: dict[str, str] | None = None) -> Iterator[Dist]:
    """The process group of a torchrun launch, for the duration of the block; ``SINGLE`` (and no set-up) otherwise.

    torchrun sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous address; with a
    world size of 1 (or none) nothing is initialised. ``device`` ``cuda`` picks NCCL and
    binds this process to GPU ``LOCAL_RANK``; any other device picks Gloo.
    """
    env = os.environ if environ is None else environ
    world_size = int(env.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield SINGLE
        return
    rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"]))
    backend = backend_for(device)
    dist = Dist(rank, world_size, local_rank, backend)
    if backend == "nccl":
        torch.cuda.set_device(dist.device(device))
    torch.distributed.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield dist
    finally:
        torch.distributed.destroy_process_group()


def train_device(name: str, dist: Dist) -> torch.device:
    """Where a search or training computes: GPU ``LOCAL_RANK`` for a ``cuda`` device when torch sees one (always
    under NCCL), else the CPU. A one-process search with a ``cuda`` table on a machine without a GPU trains on the
    CPU, as before; its ``config.json`` says so."""
    if dist.backend == "nccl" or (name.startswith("cuda") and torch.cuda.is_available()):
        return dist.device(name)
    return torch.device("cpu")


def layout(device: torch.device) -> torch.memory_format:
    """The memory layout nets train and run in on ``device``: channels-last on the CPU, contiguous elsewhere.

    PyTorch's CPU (oneDNN) convolutions, the depthwise ones above all, run about twice as fast
    channels-last: training steps, every method's search step and a selection's scoring alike
    (``bench/search_cost.py``; the figures in docs/DESIGN.md section 8). The layout changes the
    order of float32 sums, not the function: outputs agree with the contiguous layout's to
    float32 rounding, and a training takes another rounding path, as another thread count would
    (its accuracy is the same within seed noise, ``bench/recipe_check.py``). On a GPU the layout
    stays contiguous: not measured there.
    """
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def place(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device``, its weights in the device's ``layout``."""
    return module.to(device=device, memory_format=layout(device))


def like_module(images: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``images`` on the device and in the precision of ``module``'s first parameter, a batch of images in that
    device's ``layout`` (unchanged for a module without parameters)."""
    first = next(module.parameters(), None)
    if first is None:
        return images
    if images.dim() != 4:
        return images.to(first.device, first.dtype)
    return images.to(first.device, first.dtype, memory_format=layout(first.device))


def step_seed(seed: int, epoch: int, step: int) -> int:
    """The seed of one training step's random draws (paths, Gumbel noise): from the run seed and the step, never the rank."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + step) % (2**63 - 1)


def split_batch(batch_size: int, dist: Dist) -> int:
    """Each rank's share of a global batch; the global batch must split evenly."""
    if batch_size % dist.world_size:
        raise HwnasError(
            f"a global batch of {batch_size} does not split evenly over {dist.world_size} processes: "
            f"give a batch size that is a multiple of {dist.world_size}"
        )
    return batch_size // dist.world_size


def global_order(order_loader: DataLoader) -> list[int]:
    """The dataset indices of one pass of ``order_loader`` (a loader over ``range(n)``), in order."""
    return [int(i) for batch in order_loader for i in batch]


class ShardSampler(DistributedSampler):
    """Rank r's indices: every ``world_size``-th of the global order, starting at r.

    The global order is the order a one-process ``hwnas.data.make_loader`` with the same seed
    visits: a shuffling ``DataLoader`` over ``range(n)`` with the same seeded generator, kept
    across passes as the loader keeps its own (ProxylessNAS cycles its held-out loader). With
    ``trim`` (a forward whose batch norm needs every rank in every step) the order is cut to a
    multiple of ``world_size``; without it the last shards may differ in length by one
    (evaluation in eval mode, summed afterwards).
    """

    def __init__(self, dataset: Dataset, dist: Dist, shuffle: bool, seed: int, trim: bool = True) -> None:
        super().__init__(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=shuffle, seed=seed, drop_last=trim)
        self.trim = trim
        n = len(dataset)  # type: ignore[arg-type]
        self.order_loader = (
            DataLoader(range(n), batch_size=max(n, 1), shuffle=shuffle, generator=torch.Generator().manual_seed(seed))
            if shuffle
            else None
        )
        if not trim:
            self.num_samples = len(range(dist.rank, n, dist.world_size))

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        order = global_order(self.order_loader) if self.order_loader is not None else list(range(n))
        if self.trim:
            order = order[: self.total_size]
        return iter(order[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch, across every rank.

    Mean and variance come from two autograd-aware all-reduces (the sums, then the sums of
    squared deviations, which is as accurate as one process's two-pass statistics); the running
    statistics are updated as ``nn.BatchNorm2d`` would with the global batch (unbiased
    variance, cumulative average when ``momentum`` is None). In eval mode it is a plain
    BatchNorm2d. Only built for a world size above 1 (``convert_batchnorm``): every rank must
    run the same layers in the same order, which the shared per-step seed ensures.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(x)
        dims = [0, 2, 3]
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dims), count]))
        total = sums[-1]
        mean = sums[:-1] / total
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce(centred.pow(2).sum(dims)) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var.detach() * (total.detach() / (total.detach() - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` replaced by a ``GlobalBatchNorm2d`` holding the same parameters and buffers.

    The state dict keys stay the same, so checkpoints move between 1 and N processes.
    """
    # the autograd-aware all-reduce is the documented way (SyncBatchNorm's CUDA kernels aside); its successor is private
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated")
    if type(module) is nn.BatchNorm2d:
        new = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var, new.num_batches_tracked = (
                module.running_mean,
                module.running_var,
                module.num_batches_tracked,
            )
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = convert_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def wrap(module: nn.Module, dist: Dist, device: torch.device, find_unused: bool = True) -> nn.Module:
    """What a training step calls: ``module`` itself in one process, DDP over it (global BN inside) in several.

    ``find_unused``: a supernet step runs only the sampled paths (a child net uses every
    parameter). Buffers are not broadcast: the global batch norm keeps them identical on every rank.
    """
    if not dist.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    convert_batchnorm(module)
    # device_ids=None: the loop moves each batch itself, and the path choices (dataclasses holding CPU tensors of the arch
    # side) pass through untouched
    return DistributedDataParallel(
        module.to(device), device_ids=None, find_unused_parameters=find_unused, broadcast_buffers=False
    )
