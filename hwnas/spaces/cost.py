"""FLOPs (multiply-adds) and parameter counts, without computing anything.

The module runs once on the ``meta`` device: tensors there carry shapes but no data, so a
forward costs microseconds and no memory, and hooks read every conv's and linear's output
shape. Counted, as in the SPOS and ProxylessNAS papers' counters: multiply-adds of
convolutions and fully connected layers. Not counted: BatchNorm (folded into the conv at
deployment), activations, additions, pooling.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Cost:
    """Multiply-adds and parameters of a module for one input sample."""

    flops: int
    params: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.params + other.params)


def _multiply_adds(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_cost(module: nn.Module, input_shape: tuple[int, int, int]) -> Cost:
    """Multiply-adds and params of ``module`` for one input of shape (C, H, W).

    ``module`` is left as it is: a module with real weights is copied to the meta device first.
    """
    if any(not p.is_meta for p in module.parameters()):
        module = copy.deepcopy(module).to("meta")
    total = 0

    def hook(mod: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _multiply_adds(mod, output)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            module(torch.empty(1, *input_shape, device="meta"))
        module.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    params = sum(p.numel() for p in module.parameters())
    return Cost(int(total), int(params))
