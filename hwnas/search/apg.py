"""APG-NAG (Huang & Wang, Sparse Structure Selection, 2018), the lambda optimiser of DSO-NAS.

The problem: ``min G(lambda) + sum_e gamma_e |lambda_e|`` over lambda >= 0, G the task loss
on the structure half of the data. One step (DSO-NAS eqs. 6-8, then the projection)::

    z      = lambda - eta * grad G(lambda)
    v      = S_{eta * gamma}(z) - lambda + mu * v
    lambda = max(0, S_{eta * gamma}(z) + mu * v)

``S_a(z) = sign(z) max(|z| - a, 0)`` is the soft threshold, the proximal operator of
``a |.|``. With ``mu = 0`` the step is plain proximal gradient (ISTA); at a fixed point
``v = 0`` and lambda is the prox fixed point of the non-negative lasso, whatever mu.
``gamma`` may differ per entry (DSO-NAS's adaptive MAC: an edge's weight follows its cost).
No weight decay touches lambda.
"""

from __future__ import annotations

import torch

from hwnas.errors import HwnasError


def soft_threshold(z: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """``S_a(z) = sign(z) max(|z| - a, 0)``, elementwise (``a`` a scalar or a tensor like ``z``)."""
    return torch.sign(z) * torch.clamp(z.abs() - threshold, min=0.0)


class ApgNag:
    """APG-NAG on one tensor of lambdas, projected to lambda >= 0; the velocity ``v`` is its state."""

    def __init__(self, lr: float, momentum: float) -> None:
        if not lr > 0:
            raise HwnasError(f"the lambda step size must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise HwnasError(f"the lambda momentum must be in [0, 1), got {momentum}")
        self.lr, self.momentum = float(lr), float(momentum)
        self.velocity: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, lam: torch.Tensor, grad: torch.Tensor, gamma: torch.Tensor | float) -> None:
        """One APG-NAG step on ``lam`` in place, with per-entry regularisation weights ``gamma``."""
        if self.velocity is None:
            self.velocity = torch.zeros_like(lam)
        z = lam - self.lr * grad
        shrunk = soft_threshold(z, self.lr * gamma)
        self.velocity = shrunk - lam + self.momentum * self.velocity
        lam.copy_(torch.clamp(shrunk + self.momentum * self.velocity, min=0.0))

    def state_dict(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "velocity": self.velocity}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.momentum = float(state["lr"]), float(state["momentum"])
        velocity = state["velocity"]
        self.velocity = None if velocity is None else velocity.clone()
