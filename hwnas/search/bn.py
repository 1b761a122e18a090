"""BatchNorm recalibration: running statistics that belong to the child, not to the supernet.

Inside a supernet a BN layer saw the mixture of paths that happened to run before it, so its
running mean and variance do not describe any one child. SPOS, GreedyNAS and DSNAS all reset
them and re-estimate on a few training batches before evaluating a child; so do we.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, batches: int = 20) -> int:
    """Reset every BN layer's running stats and re-estimate them as an exact average over ``batches``.

    Only BN layers run in training mode (momentum None = cumulative average); the model is
    left in eval mode. Returns the number of batches used (the loader may be shorter).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved_momentum = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    used = 0
    try:
        for images, _ in loader:
            if used >= batches:
                break
            model(images)
            used += 1
    finally:
        for norm, momentum in zip(norms, saved_momentum):
            norm.momentum = momentum
        model.eval()
    return used
