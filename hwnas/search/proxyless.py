"""ProxylessNAS (ICLR 2019, https://arxiv.org/abs/1812.00332): binary gates, one path per weight step, two per arch step.

Weight steps run one path per layer sampled from p = softmax(alpha) and train on the weight
part of the training set. Every ``arch_every`` weight steps (after ``warmup_epochs``), an arch
step on a held-out batch samples two candidates per layer without replacement, picks the
active one from their renormalised probabilities, runs both (the inactive one detached, gate
0) and sets dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) over the two, p the two-path
probabilities as in ``mit-han-lab/proxylessnas``. The latency term is E[lat] under the same
two-path probabilities (the reference's ``current_prob_over_ops`` in two-path mode), so it
too reaches only the sampled pair. After the Adam step (beta1 = 0, so entries without
gradient do not move) both alphas are shifted by log(sum exp new / sum exp old), so the
probabilities of the unsampled candidates stay as they were, under every loss form.

Where the active candidate is a skip op (``zero``), the layer is its shortcut and neither
path runs, as in the reference (its ``MobileInvertedResidualBlock`` returns the input when
the active op is the zero layer): the pair then gets no task gradient in that step.
"""

from __future__ import annotations

from typing import Any

import torch

from hwnas.search.strategy import ArchBatches, Knob, StepResult, Strategy
from hwnas.search.supernet import PathChoice
from hwnas.spaces import SKIP_OPS


def binary_gate_alpha_grad(gate_grads: torch.Tensor, pair_probs: torch.Tensor) -> torch.Tensor:
    """dL/dalpha over the sampled paths: ``sum_j dL/dg_j p_j (delta_ij - p_i)``; shapes [n] -> [n]."""
    eye = torch.eye(len(pair_probs), dtype=pair_probs.dtype)
    # [i, j] = p_j (delta_ij - p_i)
    jacobian = pair_probs.unsqueeze(0) * (eye - pair_probs.unsqueeze(1))
    return jacobian @ gate_grads


@torch.no_grad()
def shift_keeping_others(alpha_row: torch.Tensor, old_row: torch.Tensor, involved: list[int]) -> None:
    """Shift the involved alphas (in place) so sum exp over them is what it was before the step.

    The softmax denominator is then unchanged, so every candidate that was not involved keeps
    its probability exactly.
    """
    index = torch.tensor(involved)
    offset = torch.logsumexp(alpha_row[index], 0) - torch.logsumexp(old_row[index], 0)
    alpha_row[index] -= offset


class ProxylessStrategy(Strategy):
    name = "proxyless"
    held_out = 0.2
    knobs = {
        "arch_lr": Knob(
            0.1,
            "Adam learning rate of alpha (paper 1e-3; 0.1 lets alpha settle within a few hundred steps)",
            low=0,
            low_open=True,
        ),
        "arch_every": Knob(1, "weight steps per arch step (paper 5; 1 for small data)", low=1),
        "warmup_epochs": Knob(1, "epochs of weight steps only before arch steps start (paper 40)", low=0),
        "init_std": Knob(1e-3, "std of the normal init of alpha", low=0),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch = 0
        self.steps = 0

    def init_alpha(self) -> None:
        with torch.no_grad():
            self.arch.alpha.normal_(0.0, self.options["init_std"], generator=self.generator)

    def make_arch_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([self.arch.alpha], lr=self.options["arch_lr"], betas=(0.0, 0.999), eps=1e-8)

    def epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def sample_choices(self, generator: torch.Generator) -> list[PathChoice]:
        return [PathChoice.single(c) for c in self.sample_columns(self.arch.probs(), generator)]

    def step(self, images: torch.Tensor, labels: torch.Tensor, arch_batches: ArchBatches | None) -> StepResult:
        logits = self.net(images, self.sample_choices(self.generator))
        loss = self.cross_entropy(logits, labels)
        self.weight_update(loss)
        self.steps += 1
        expected = float(self.expected_ms().detach())
        if (
            arch_batches is not None
            and self.epoch >= self.options["warmup_epochs"]
            and self.steps % self.options["arch_every"] == 0
        ):
            self.arch_step(*arch_batches())
        return StepResult(float(loss.detach()), self.correct(logits, labels), len(labels), expected)

    def sample_pairs(self) -> tuple[list[PathChoice], list[torch.Tensor], list[list[int]], list[torch.Tensor]]:
        """Per layer: two columns without replacement, their probabilities, a gate vector."""
        alpha, probs = self.arch.alpha.detach(), self.arch.probs().detach()
        choices, gates, pairs, pair_probs = [], [], [], []
        skips = {self.supernet.space.candidates.index(op) for op in SKIP_OPS if op in self.supernet.space.candidates}
        for layer in range(len(probs)):
            legal = int(self.arch.mask[layer].sum())
            pair = torch.multinomial(probs[layer], min(2, legal), replacement=False, generator=self.generator).tolist()
            p = torch.softmax(alpha[layer, pair], 0)
            active = int(torch.multinomial(p, 1, generator=self.generator))
            gate = torch.zeros(len(pair))
            gate[active] = 1.0
            gate.requires_grad_(True)
            if pair[active] in skips:  # the layer is its shortcut: no path runs, the gate gets no gradient
                choices.append(PathChoice.single(pair[active]))
            else:
                choices.append(PathChoice.gated(tuple(pair), gate, active=pair[active]))
            gates.append(gate)
            pairs.append(pair)
            pair_probs.append(p)
        return choices, gates, pairs, pair_probs

    def pair_probs(self, pairs: list[list[int]]) -> torch.Tensor:
        """[layers, columns]: softmax of alpha over each layer's sampled pair, 0 elsewhere; differentiable in alpha."""
        in_pair = torch.zeros_like(self.arch.mask)
        for layer, pair in enumerate(pairs):
            in_pair[layer, pair] = True
        return torch.softmax(self.arch.alpha.masked_fill(~in_pair, float("-inf")), dim=1)

    def arch_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One binary-gate arch step on a held-out batch."""
        choices, gates, pairs, pair_probs = self.sample_pairs()
        logits = self.supernet(images, choices)
        loss = self.budget.loss(self.cross_entropy(logits, labels), self.expected_ms(self.pair_probs(pairs)))
        grads = torch.autograd.grad(loss, [self.arch.alpha, *gates], allow_unused=True)
        alpha_grad = torch.zeros_like(self.arch.alpha) if grads[0] is None else grads[0].clone()
        for layer, (pair, p, gate_grad) in enumerate(zip(pairs, pair_probs, grads[1:])):
            if gate_grad is not None:
                alpha_grad[layer, pair] += binary_gate_alpha_grad(gate_grad, p)
        self.dist.all_reduce_mean_(alpha_grad)  # the global held-out batch's gradient; the latency term's stays once
        old = self.arch.alpha.detach().clone()
        self.arch_optimizer.zero_grad(set_to_none=True)
        self.arch.alpha.grad = alpha_grad
        self.arch_optimizer.step()
        for layer, pair in enumerate(pairs):
            shift_keeping_others(self.arch.alpha.data[layer], old[layer], pair)
        self.control_budget()

    def extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
