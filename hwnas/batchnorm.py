"""BatchNorm recalibration: running statistics that belong to the weights as they are now.

Inside a supernet a BN layer saw the mixture of paths that happened to run before it, so its
running mean and variance do not describe any one child. SPOS, GreedyNAS and DSNAS all reset
them and re-estimate on a few training batches before evaluating a child; so do we. Training
at a high learning rate has the same flaw in time: the momentum average trails weights that
moved, and after one fine-tuning epoch of a 21-layer child it put the validation accuracy at
0.086 where the weights, recalibrated, scored 0.911. ``hwnas train`` recalibrates before each
evaluation, so the statistics it scores and saves belong to its weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from hwnas.distributed import like_module


def batch_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    loader: Iterable,
    batches: int = 20,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    norms: list[nn.Module] | None = None,
) -> int:
    """Reset every BN layer's running stats and re-estimate them as the mean over ``batches`` batches.

    Only BN layers run in training mode (momentum None = cumulative average); the model is
    left in eval mode. ``forward`` (default: ``model`` itself) runs a batch, e.g. a supernet
    under a path sampled per batch. ``norms``: only these BN layers (those a supernet path
    runs), with the rest of ``model`` already in eval mode: walking a supernet's thousands of
    modules twice per path cost more than a forward pass. Returns the number of batches used
    (the loader may be shorter).
    """
    if norms is None:
        norms = batch_norms(model)
        model.eval()
    if not norms:
        return 0
    saved_momentum = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    used = 0
    try:
        for images, _ in loader:
            if used >= batches:
                break
            (forward or model)(like_module(images, model))
            used += 1
    finally:
        for norm, momentum in zip(norms, saved_momentum):
            norm.momentum = momentum
            norm.eval()
    return used


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Inside the block every BN layer normalises with the statistics of the batch it sees; running stats stay as they are.

    For scoring a supernet under a path sampled per batch: running statistics averaged over
    many paths describe none of them (``docs/search.md`` has a supernet that scored 0.12 with
    them while its training batches scored 0.64), and re-estimating them per path costs
    several batches per path. With batches of a hundred or more images, the batch's own
    statistics are what a recalibration on that path would find.
    """
    norms = batch_norms(model)
    saved = [(m.training, m.momentum) for m in norms]
    for norm in norms:
        norm.train()
        norm.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: untouched
    try:
        yield
    finally:
        for norm, (training, momentum) in zip(norms, saved):
            norm.train(training)
            norm.momentum = momentum
