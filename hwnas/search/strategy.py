"""What every search method shares, so a method module holds only its own update rule.

A strategy owns the architecture optimiser and decides, per training step, which paths run
and how alpha gets its gradient. The loop (``hwnas.search.loop``) owns epochs, data, the
weight optimiser's learning rate, checkpoints and logs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from hwnas.arch import Arch
from hwnas.distributed import SINGLE, Dist
from hwnas.errors import HwnasError
from hwnas.latency import LatencyModel
from hwnas.search.budget import BudgetController
from hwnas.search.cell_supernet import CellSupernet
from hwnas.search.derive import derive_under_budget
from hwnas.search.supernet import ArchParameters, PathChoice, Supernet
from hwnas.spaces.nb201 import Nb201Space

#: gives one held-out (images, labels) batch for an arch step; only bi-level methods call it
ArchBatches = Callable[[], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class StepResult:
    loss: float
    correct: int
    count: int
    expected_ms: float


@dataclass(frozen=True)
class Knob:
    """A method option: its default for this method and what it means (shown in --help), and the values it takes.

    A value must have the default's type (an int where the default is an int; a float takes an
    int), be finite, one of ``choices`` where given, and within ``low`` (exclusive with
    ``low_open``) and ``high``.
    """

    default: Any
    help: str
    #: the values allowed, for a knob that names one of a few things
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not a value of this knob (None: it is)."""
        if self.choices is not None:
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}"
        kind = type(self.default)
        if kind is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
            return f"must be {'an integer' if kind is int else 'a number'}"
        if not math.isfinite(value):
            return "must be a finite number"
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = "" if self.high is None else f"<= {self.high:g}"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if too_low or (self.high is not None and value > self.high):
            return f"must be {' and '.join(part for part in (low, high) if part)}"
        return None


class Strategy:
    """Base of the search methods; subclasses set ``name``, ``knobs`` and implement ``step``."""

    name: ClassVar[str]
    #: the share of the training set held out by default (``--arch-fraction``); > 0: the method needs it
    #: (ProxylessNAS takes its arch steps there, the one-shot methods score archs there)
    held_out: ClassVar[float] = 0.0
    #: one-shot methods (SPOS, GreedyNAS) have no alpha: after the supernet is trained, an
    #: evolution (``hwnas.search.oneshot``) picks the arch instead of the derivation from p
    one_shot: ClassVar[bool] = False
    #: share of the run's weight steps done, set by the loop before each step (GreedyNAS's eps schedule)
    progress: float = 0.0
    #: set by a method that stops early (GreedyNAS, once its pool is steady); kept in its ``extra_state``
    stopped: bool = False
    #: the held-out part of the training set (``--arch-fraction``), set by the loop; None where there is none
    held_out_set: Any = None
    #: method options with their per-method defaults (scaled down from the papers for small data)
    knobs: ClassVar[dict[str, Knob]] = {}
    #: the processes of the run (``hwnas.distributed``), set by the loop: arch gradients are averaged over them
    dist: Dist = SINGLE

    @classmethod
    def resolve_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Every knob of the method: the defaults with ``options`` over them, each checked (``Knob.problem``,
        ``check_options``); a value that is no value of its knob is an error naming the option."""
        unknown = set(options) - set(cls.knobs)
        if unknown:
            raise HwnasError(f"method {cls.name} has no option(s) {', '.join(sorted(unknown))}")
        for name, value in options.items():
            problem = None if value is None else cls.knobs[name].problem(value)
            if problem:
                raise HwnasError(f"method {cls.name}'s option {name} (--{name.replace('_', '-')}) {problem}, got {value!r}")
        resolved = {name: knob.default for name, knob in cls.knobs.items()}
        resolved.update({k: v for k, v in options.items() if v is not None})
        cls.check_options(resolved)
        return resolved

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """What a method's options must satisfy together (SPOS: the evolution's sizes); raises ``HwnasError``."""

    def __init__(
        self,
        supernet: Supernet,
        arch: ArchParameters,
        latency: LatencyModel,
        budget: BudgetController,
        weight_optimizer: torch.optim.Optimizer,
        options: dict[str, Any],
        generator: torch.Generator,
        grad_clip: float = 5.0,
    ) -> None:
        self.options = self.resolve_options(options)
        self.supernet, self.arch, self.latency, self.budget = supernet, arch, latency, budget
        self.weight_optimizer = weight_optimizer
        self.generator = generator
        self.grad_clip = grad_clip
        #: what a weight step's forward calls: the supernet itself, or DDP over it under torchrun (set by the loop).
        #: Steps that take only gradients of alpha or gates (ProxylessNAS's arch step) call ``supernet``.
        self.net: Callable[..., torch.Tensor] = supernet
        self.arch_optimizer = self.make_arch_optimizer()

    # -- per method ------------------------------------------------------------------------
    @classmethod
    def supports(cls, space: Any) -> bool:
        """Whether the method can search ``space`` (the chain methods: chain spaces; DSO-NAS: DAG spaces)."""
        from hwnas.spaces import DagSpace

        return not isinstance(space, DagSpace)

    @classmethod
    def build_supernet(cls, space: Any) -> Any:
        """The supernet the method trains (a chain space's ``Supernet``; DSO-NAS: the completely connected net)."""
        if not cls.supports(space):
            raise HwnasError(f"method {cls.name} searches chain spaces; space {space.name} is searched by --method dsonas")
        return CellSupernet(space) if isinstance(space, Nb201Space) else Supernet(space)

    @classmethod
    def build_arch(cls, space: Any) -> Any:
        """The architecture parameters (``alpha``) of the method."""
        return ArchParameters(space)

    def derive(self, aim_ms: float, spend: bool) -> tuple[Arch, float, dict[str, Any]]:
        """The arch under ``aim_ms`` from alpha (``hwnas.search.derive``), its prediction and the figures for ``result.json``."""
        probs = self.effective_probs().detach()
        derivation = derive_under_budget(probs, self.latency, aim_ms, spend=spend)
        return (
            derivation.arch,
            derivation.predicted_ms,
            {
                **derivation.to_dict(aim_ms),
                "expected_ms": float(self.latency.expected(probs.double())),
                "multiplier": self.budget.multiplier,
            },
        )

    def extract_child(self, arch: Arch) -> torch.nn.Module:
        """The child net of ``arch`` with the supernet's weights."""
        return self.supernet.extract_child(arch)

    def init_alpha(self) -> None:
        """Initial alpha (called once for a fresh run, not on resume)."""
        raise NotImplementedError

    def make_arch_optimizer(self) -> torch.optim.Optimizer | None:
        """The optimiser of alpha; None for methods without arch parameters (SPOS, GreedyNAS)."""
        raise NotImplementedError

    def epoch_start(self, epoch: int, epochs: int) -> None:
        """Per-epoch schedule (temperature, early stop)."""

    def epoch_end(self) -> None:
        """After an epoch's last step (GreedyNAS: is the pool steady?)."""

    def step(self, images: torch.Tensor, labels: torch.Tensor, arch_batches: ArchBatches | None) -> StepResult:
        raise NotImplementedError

    def sample_choices(self, generator: torch.Generator) -> list[PathChoice]:
        """The paths the method's own forward runs, for measuring the supernet's accuracy."""
        raise NotImplementedError

    def initial_population(self) -> list[tuple[int, ...]]:
        """One-shot methods: archs to seed the evolution's first population with (GreedyNAS: its candidate pool)."""
        return []

    def log_fields(self) -> dict[str, Any]:
        """Per-epoch history fields: the latency figures of p and the controller, and the method's own (temperature, layers fixed)."""
        probs = self.effective_probs().detach()
        return {
            "expected_ms": float(self.latency.expected(probs.double())),
            "argmax_ms": self.latency.columns_ms(self.argmax_columns()),
            "multiplier": self.budget.multiplier,
            "entropy": self.arch.entropy(),
            "temperature": None,
            "layers_fixed": 0,
        }

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` saved."""

    # -- shared ----------------------------------------------------------------------------
    def effective_probs(self) -> torch.Tensor:
        """The distribution paths are actually drawn from (DSNAS: one-hot rows for fixed layers)."""
        return self.arch.probs()

    def expected_ms(self, probs: torch.Tensor | None = None) -> torch.Tensor:
        """E[latency] in ms under ``probs`` (default: the effective distribution), differentiable in alpha."""
        return self.latency.expected(self.effective_probs() if probs is None else probs)

    def argmax_columns(self) -> list[int]:
        """The most probable column of every layer under the effective distribution: where the derivation starts."""
        return self.effective_probs().detach().argmax(dim=1).tolist()

    def reachable_ms(self) -> tuple[float, float]:
        """The fastest and slowest predicted ms the method can still derive (DSNAS: fixed layers stay fixed)."""
        return self.latency.reachable_ms()

    def control_budget(self) -> None:
        """Feed the predicted latency of the current argmax arch back to the budget controller (after an arch step)."""
        self.budget.update(self.latency.columns_ms(self.argmax_columns()), self.reachable_ms())

    def sample_columns(self, probs: torch.Tensor, generator: torch.Generator) -> list[int]:
        """One column per layer drawn from p (rows of ``probs``)."""
        return torch.multinomial(probs.detach(), 1, generator=generator).flatten().tolist()

    def weight_update(self, loss: torch.Tensor) -> None:
        """Backward + clipped SGD step on the supernet weights."""
        self.weight_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.clip_and_step()

    def clip_and_step(self) -> None:
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.supernet.parameters(), self.grad_clip)
        self.weight_optimizer.step()

    @staticmethod
    def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    @staticmethod
    def correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
        return int((logits.argmax(dim=1) == labels).sum())
