"""SNAS (ICLR 2019, https://arxiv.org/abs/1812.09926): Gumbel-softmax over all candidates, annealed temperature, single-level.

Z = softmax((alpha + G) / tau), G = -log(-log U), per layer over its legal candidates; the
layer's output is sum_k Z_k op_k(x). One batch updates the weights and alpha (reparameterised
through Z). tau falls linearly per epoch from tau0 to tau_min. The resource penalty is the
exact expectation E[lat] = sum_l sum_k p_lk T[l, k] with p = softmax(alpha), handed to the
budget controller.
"""

from __future__ import annotations

from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas.search.strategy import ArchBatches, Knob, StepResult, Strategy
from hwnas.search.supernet import PathChoice, legal_columns


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """Relaxed one-hot sample per row; -inf logits (illegal candidates) get weight 0."""
    uniform = torch.rand(logits.shape, generator=generator).clamp_(1e-20, 1 - 1e-7)
    gumbel = -torch.log(-torch.log(uniform))
    return torch.softmax((logits + gumbel) / tau, dim=-1)


def linear_temperature(epoch: int, epochs: int, tau0: float, tau_min: float) -> float:
    """tau = (1 - e / E)(tau0 - tau_min) + tau_min (SNAS-Series)."""
    return (1 - epoch / max(epochs, 1)) * (tau0 - tau_min) + tau_min


class SnasStrategy(Strategy):
    name = "snas"
    knobs = {
        "arch_lr": Knob(
            0.1,
            "Adam learning rate of alpha (paper 3e-4; 0.1 lets alpha settle within a few hundred steps)",
            low=0,
            low_open=True,
        ),
        "arch_weight_decay": Knob(1e-3, "weight decay of alpha's Adam", low=0),
        "tau0": Knob(1.0, "initial Gumbel-softmax temperature", low=0, low_open=True),
        "tau_min": Knob(0.03, "final temperature", low=0, low_open=True),
        "init_std": Knob(0.01, "std of the normal init of alpha (mean 1)", low=0),
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        if options["tau_min"] > options["tau0"]:
            raise HwnasError(
                f"snas anneals the temperature down: --tau-min {options['tau_min']} is above --tau0 {options['tau0']}"
            )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tau = float(self.options["tau0"])
        self.legal = legal_columns(self.arch.mask)

    def init_alpha(self) -> None:
        with torch.no_grad():
            self.arch.alpha.normal_(1.0, self.options["init_std"], generator=self.generator)

    def make_arch_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            [self.arch.alpha], lr=self.options["arch_lr"], betas=(0.5, 0.999), weight_decay=self.options["arch_weight_decay"]
        )

    def epoch_start(self, epoch: int, epochs: int) -> None:
        self.tau = linear_temperature(epoch, epochs, self.options["tau0"], self.options["tau_min"])

    def relaxed_choices(self, generator: torch.Generator) -> list[PathChoice]:
        """Per layer, a Gumbel-softmax weight for each legal candidate (differentiable in alpha)."""
        weights = gumbel_softmax(self.arch.masked(), self.tau, generator)
        return [PathChoice.weighted(cols, weights[layer, list(cols)]) for layer, cols in enumerate(self.legal)]

    def sample_choices(self, generator: torch.Generator) -> list[PathChoice]:
        with torch.no_grad():
            return self.relaxed_choices(generator)

    def step(self, images: torch.Tensor, labels: torch.Tensor, arch_batches: ArchBatches | None) -> StepResult:
        logits = self.net(images, self.relaxed_choices(self.generator))
        expected = self.expected_ms()
        ce = self.cross_entropy(logits, labels)
        self.arch_optimizer.zero_grad(set_to_none=True)
        self.weight_update(self.budget.loss(ce, expected))
        # the global batch's gradient; the latency term's, equal on every rank, stays once
        self.dist.all_reduce_mean_(self.arch.alpha.grad)
        self.arch_optimizer.step()
        self.control_budget()
        return StepResult(float(ce.detach()), self.correct(logits, labels), len(labels), float(expected.detach()))

    def log_fields(self) -> dict[str, Any]:
        return {**super().log_fields(), "temperature": self.tau}
