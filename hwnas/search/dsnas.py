"""DSNAS (CVPR 2020, https://arxiv.org/abs/2002.09128): one sampled path, a dummy Z = 1, one forward and one backward per step.

Per layer Z ~ OneHotCategorical(softmax(alpha)); the layer computes ``op_chosen(x) * Z_l``
(Z_l = 1, so the value is unchanged, but dL/dZ_l exists). The backward of the loss gives the
weights their gradient and each layer its reward dL/dZ_l; alpha's task gradient is then
``sum_l dL/dZ_l * grad log p_l(chosen_l)`` — the gradient of a tiny graph on alpha alone, so the
network runs forward and backward once. The latency term's gradient reaches alpha directly
through E[lat]. Only the chosen op of a layer is ever run.

Arch warm-up: for ``warmup_epochs`` epochs only the weights train, on paths sampled from
the initial (uniform) p, as the reference's ``--pretrain_epoch`` does: alpha learns from
rewards of a supernet that has learnt something.

Progressive early stop: at the start of each epoch, a layer whose top-1 minus top-2
probability is at least ``h`` is fixed to its argmax and its alpha frozen (restored after
every optimiser step, since Adam's momentum would move a row even with a zero gradient).

Deviation from the reference: a layer is fixed only when (a) the budget controller has
settled, the derived arch's mean relative distance to the aim over its last steps within
``settle_tolerance``, and (b) the aim stays reachable with the layer fixed (between the
fastest and slowest arch the free layers still allow). The reference has no budget; here
an early stop that fixed 15 ``zero`` layers while the untrained supernet knew only latency
left the aim out of reach, and the run derived a net at under half of its budget
(docs/DESIGN.md, section 8). With the paper loss forms (``mul-log``, ``add-linear``), which do
not hold the arch at the aim, (a) may never hold and no layer is then fixed.
"""

from __future__ import annotations

from typing import Any

import torch

from hwnas.search.strategy import ArchBatches, Knob, StepResult, Strategy
from hwnas.search.supernet import PathChoice


def score_function_grad(log_probs: torch.Tensor, alpha: torch.Tensor, columns: list[int], rewards: torch.Tensor) -> torch.Tensor:
    """``sum_l rewards[l] * d log p_l(columns[l]) / d alpha``: DSNAS's per-layer scaled grad log p(Z)."""
    chosen = log_probs[torch.arange(len(columns)), torch.tensor(columns)]
    (grad,) = torch.autograd.grad((rewards.detach() * chosen).sum(), alpha)
    return grad


def layers_to_fix(probs: torch.Tensor, threshold: float) -> list[int]:
    """Layers whose top-1 minus top-2 probability is >= ``threshold``."""
    top = probs.detach().topk(min(2, probs.shape[1]), dim=1).values
    gap = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0)
    return torch.nonzero(gap >= threshold).flatten().tolist()


class DsnasStrategy(Strategy):
    name = "dsnas"
    knobs = {
        "arch_lr": Knob(
            0.1,
            "Adam learning rate of alpha (paper 1e-3; 0.1 lets alpha settle within a few hundred steps)",
            low=0,
            low_open=True,
        ),
        "warmup_epochs": Knob(
            1, "epochs of weight steps only, on paths from the initial p, before alpha moves (reference --pretrain_epoch)", low=0
        ),
        "early_stop": Knob(0.3, "progressive early stop threshold h on top-1 minus top-2 probability (>= 1 disables)", low=0),
        "settle_tolerance": Knob(
            0.05, "early stop fixes layers only while the derived arch stays this close to the aim (relative)", low=0
        ),
        "init_std": Knob(1e-3, "std of the normal init of alpha", low=0),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: layer -> fixed column
        self.fixed: dict[int, int] = {}
        self.epoch = 0

    def init_alpha(self) -> None:
        with torch.no_grad():
            self.arch.alpha.normal_(0.0, self.options["init_std"], generator=self.generator)

    def make_arch_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([self.arch.alpha], lr=self.options["arch_lr"], betas=(0.5, 0.999))

    def epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch
        if not self.budget.settled(self.options["settle_tolerance"]):
            return
        argmax = self.arch.argmax_columns()
        for layer in layers_to_fix(self.arch.probs(), self.options["early_stop"]):
            if layer in self.fixed:
                continue
            low, high = self.latency.reachable_ms({**self.fixed, layer: argmax[layer]})
            if low <= self.budget.aim_ms <= high:
                self.fixed[layer] = argmax[layer]

    def reachable_ms(self) -> tuple[float, float]:
        return self.latency.reachable_ms(self.fixed)

    def effective_probs(self) -> torch.Tensor:
        """p with the fixed layers' rows one-hot: E[lat] counts what a fixed layer really runs."""
        probs = self.arch.probs()
        if not self.fixed:
            return probs
        rows = torch.tensor(list(self.fixed))
        one_hot = torch.zeros(len(rows), probs.shape[1], dtype=probs.dtype)
        one_hot[torch.arange(len(rows)), torch.tensor(list(self.fixed.values()))] = 1.0
        return probs.index_put((rows,), one_hot)

    def sample(self, generator: torch.Generator) -> list[int]:
        columns = self.sample_columns(self.arch.probs(), generator)
        return [self.fixed.get(layer, column) for layer, column in enumerate(columns)]

    def sample_choices(self, generator: torch.Generator) -> list[PathChoice]:
        return [PathChoice.single(c) for c in self.sample(generator)]

    def step(self, images: torch.Tensor, labels: torch.Tensor, arch_batches: ArchBatches | None) -> StepResult:
        columns = self.sample(self.generator)
        if self.epoch < self.options["warmup_epochs"]:
            logits = self.net(images, [PathChoice.single(c) for c in columns])
            loss = self.cross_entropy(logits, labels)
            self.weight_update(loss)
            return StepResult(float(loss.detach()), self.correct(logits, labels), len(labels), float(self.expected_ms().detach()))
        z = torch.ones(len(columns), requires_grad=True)
        logits = self.net(images, [PathChoice.single(c, z[layer]) for layer, c in enumerate(columns)])
        expected = self.expected_ms()
        ce = self.cross_entropy(logits, labels)
        loss = self.budget.loss(ce, expected)
        self.weight_optimizer.zero_grad(set_to_none=True)
        self.arch_optimizer.zero_grad(set_to_none=True)
        loss.backward()  # weights, dL/dZ, and the latency term's gradient on alpha
        self.clip_and_step()
        rewards = z.grad if z.grad is not None else torch.zeros_like(z)
        self.dist.all_reduce_mean_(
            rewards
        )  # the global batch's rewards (the latency term's gradient on alpha is the same on every rank)
        task_grad = score_function_grad(self.arch.log_probs(), self.arch.alpha, columns, rewards)
        alpha = self.arch.alpha
        alpha.grad = task_grad if alpha.grad is None else alpha.grad + task_grad
        frozen = list(self.fixed)
        saved = alpha.detach()[frozen].clone()
        self.arch_optimizer.step()
        if frozen:
            with torch.no_grad():
                alpha[frozen] = saved
        self.control_budget()
        return StepResult(float(ce.detach()), self.correct(logits, labels), len(labels), float(expected.detach()))

    def log_fields(self) -> dict[str, Any]:
        return {**super().log_fields(), "layers_fixed": len(self.fixed)}

    def extra_state(self) -> dict[str, Any]:
        return {"fixed": [[layer, column] for layer, column in sorted(self.fixed.items())]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fixed = {int(layer): int(column) for layer, column in state["fixed"]}
