"""DSO-NAS (Zhang et al., https://arxiv.org/abs/1811.01567): search by pruning the edges of a completely connected net.

Every edge of every block of the ``dsonas`` space is scaled by its lambda (``EdgeSupernet``).
The search minimises ``CE(W, lambda) + delta |W|^2 + sum_e gamma_e |lambda_e|`` (eq. 5):

* **pre-train** (``pretrain_epochs``): weight steps only, every lambda at 1, BN scales fixed to 1;
* **search**: per training step one weight step (NAG with weight decay, on the weight half of
  the training set) and one lambda step on a batch of the other half (``--arch-fraction``
  0.5, the paper's CIFAR split), alternating 1:1. The lambda step is APG-NAG (eqs. 6-8,
  ``hwnas.search.apg``): ``z = lambda - eta grad``, ``v = S_{eta gamma}(z) - lambda + mu v``,
  ``lambda = max(0, S_{eta gamma}(z) + mu v)``; no weight decay on lambda;
* **derive**: drop every edge with lambda = 0 and every op it isolates (``DagSpace.canonical``)
  from the final lambda (the search holds its pruned net within [``floor``, 1] x aim, below);
  where that net is under the floor after all, from the last lambda whose pruned net was not
  under the aim.

**Under torchrun** (``hwnas.distributed``) each rank takes its shard of both halves' global
batches; the weight step runs through DDP, batch norm normalises over the global batch, and
dL/dlambda is averaged over the ranks before APG-NAG steps, so lambda, the velocity, gamma
and the pruned forward pass stay the same on every rank (``tests/test_distributed.py``).

**Adaptive weights** (``adaptive``), each edge's share of gamma, in milliseconds:

* ``block`` (default; the paper's adaptive FLOPs, eq. 9, which its CIFAR search used): every
  edge of a block weighs ``ms(block kept) / ms(block full)``, the block's predicted ms with
  its edges of lambda > 0 (isolated ops removed) over its ms with every edge; a block loses
  pressure as it is pruned, so no block is emptied for being expensive;
* ``latency`` (the paper's adaptive MAC, eq. 10): the weight of an edge into an op is
  ``(ms(add) + ms(op)) / ms_max``, ``ms(op)`` the op's calibrated latency at its block's shape
  (``DagLatencyModel.calibrated_part_ms``), ``ms(add)`` the add that takes its term into the
  op's input (at most one: ops whose inputs begin alike share their partial sums,
  ``BlockGraph.sums``); an edge into the block output weighs what one more input costs the
  1x1 projection (the mean step of its entries over the widths 1..M*N). ``ms_max`` is the
  largest of these weights in the net. It prunes the 32x32 blocks first and hardest, and its
  derived nets trained worse from scratch than random nets of their latency
  (``docs/dsonas.md``).

**The budget sets the overall gamma.** After every lambda step the net that pruning would
derive now (lambda > 0, isolated ops removed) is predicted; with ``e = pruned / aim - 1``,
``gamma_t = gamma * clip(e / settle_band, 0, 1)``: full strength while the pruned net is more
than ``settle_band`` over the aim, less as it nears the aim, none at or under it: the
sparsity pressure follows how much latency is still to be removed (eq. 9 does this per
block, for the share of its cost; this does it for the whole net, for the budget).

**The floor** (``floor``, 0.9): at the aim gamma is 0, but APG-NAG's momentum carries lambdas
near 0 on past it, and an edge at lambda = 0 never returns (it leaves the forward pass, so
it gets no gradient). Without a floor the measured run of ``docs/dsonas.md`` pruned its net
well under the aim in its last epoch. Each lambda step is therefore projected onto the nets not under
``floor`` x aim: where the step takes the pruned net under it, the step is undone for the
edges it zeroed, the one it pushed least hard towards 0 first, until the net is back at or over
the floor (``hold_floor``). Together with gamma, which stops pushing at the aim, this holds
the pruned net within [floor, 1] x aim once it has come down to the aim: the budget
controls the search in both directions, down by gamma and up by the floor. A negative gamma
(the other methods' two-sided multiplier) cannot do that part here: it only raises lambdas
that are still above 0, which changes no latency, and never restores a pruned edge.

**Repair**: a pruned net still over the aim loses, one at a time, the edge whose removal
gives up the least lambda per ms saved (lambda summed over the removed edge and any edge
it isolates); the derived net is never over the aim.

Deviations from the paper, and why:

* The overall gamma is controlled (above) rather than fixed at 0.001 / 0.01: a fixed gamma
  yields a net of whatever latency it yields; this project derives under a latency budget.
  gamma is never negative (an edge at 0 is out of the forward pass and cannot be pulled back):
  the pruning approaches the aim from above, and the floor stops it under the aim.
* The floor is not in the paper: it projects the lambda step onto the nets predicted at or
  over ``floor`` x aim, so the searched net lands within [floor, 1] x aim instead of wherever
  momentum stops (``floor`` 0: the paper's unconstrained step, derived from the final lambda).
* The adaptive weights count milliseconds from the latency table, not FLOPs or MAC. With
  ``latency``, an edge's weight is its target op's cost, not a shared per-op weight on edges
  leaving it: the paper does not say which edges of an op ``gamma_(m,n)`` applies to; an op
  disappears when its input edges are all 0, so they carry its cost.
* The paper stops the search "until convergence" (120 CIFAR epochs) and retrains with a
  width multiplier to fit the budget; here the search runs ``--epochs``, the budget is met
  by the pruning and the repair, and ``hwnas train`` retrains the derived net from scratch.
* The derived child (its inherited weights, for ``hwnas train``'s fine-tune) runs every kept
  edge at scale 1, as the paper's retrained net does; a lambda is folded into the child only
  where that is exact (an edge into the block output: its columns of the 1x1 projection).
  Keeping every lambda would cost the deployed net a multiply per edge and the sharing of
  partial sums, several times the latency of a dense derived net (measured in ``docs/dsonas.md``).
* Weights use the shared loop's SGD with Nesterov momentum and cosine learning rate (the
  paper: constant 0.1); the pre-training is short (paper: 120 CIFAR epochs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency.dag_model import DagLatencyModel
from hwnas.search.apg import ApgNag
from hwnas.search.edge_supernet import EdgeScales, EdgeSupernet
from hwnas.search.strategy import ArchBatches, Knob, StepResult, Strategy
from hwnas.spaces.dag import DagSpace

_EPS = 1e-9


def edge_costs(model: DagLatencyModel) -> torch.Tensor:
    """[blocks, edges] calibrated ms each edge carries (float64): into an op, one add plus the op; into the output, one projection input."""
    space = model.space
    graph = space.graph
    costs = torch.zeros(len(space.layers), len(graph.edges), dtype=torch.float64)
    for layer in space.layers:
        c, size = layer.c_in, layer.h
        widths = graph.n_ops
        step = (
            model.calibrated_part_ms[space.concat_key(widths, c, size)] - model.calibrated_part_ms[space.concat_key(1, c, size)]
        ) / max(widths - 1, 1)
        add = model.calibrated_part_ms[space.add_key(c, size)]
        for e, (_, dst) in enumerate(graph.edges):
            if dst == graph.output:
                costs[layer.index, e] = max(step, 0.0)
            else:
                costs[layer.index, e] = add + model.calibrated_part_ms[space.op_key(space.ops[graph.op_slot(dst)], c, size)]
    return costs


def adaptive_weights(model: DagLatencyModel) -> torch.Tensor:
    """Each edge's share of the sparsity weight: its cost over the largest (the paper's MAC / MAC_max)."""
    costs = edge_costs(model)
    return costs / costs.max().clamp_min(1e-12)


def masks_of(lam: torch.Tensor, space: DagSpace) -> list[tuple[bool, ...]]:
    """The canonical edge masks of lambda: edges with lambda > 0, isolated ops removed."""
    return [space.graph.canonical((row > 0).tolist()) for row in lam.detach()]


def repair_to_limit(
    model: DagLatencyModel, masks: Sequence[Sequence[bool]], lam: torch.Tensor, limit_ms: float
) -> tuple[list[tuple[bool, ...]], int, float]:
    """Remove edges until the net is predicted at or under ``limit_ms``: each time the removal with the least lambda per ms saved.

    A removal takes one kept edge and every edge it isolates; its price is their lambda summed.
    A block in which no single removal saves time is emptied whole. Returns the masks, the number
    of removals and the ms they saved.
    """
    graph = model.space.graph
    masks = [graph.canonical(kept) for kept in masks]
    block_ms = [model.block_ms(index, kept) for index, kept in enumerate(masks)]
    total = model.calibrated_fixed_ms + sum(block_ms)
    start, removals = total, 0
    weights = lam.detach().double()
    while total > limit_ms + _EPS:
        best: tuple[float, int, tuple[bool, ...], float] | None = None
        for index, kept in enumerate(masks):
            for e in (e for e, k in enumerate(kept) if k):
                trial = list(kept)
                trial[e] = False
                trial = graph.canonical(trial)
                saved = block_ms[index] - model.block_ms(index, trial)
                if saved <= _EPS:
                    continue
                lost = float(sum(weights[index, f] for f in range(len(kept)) if kept[f] and not trial[f]))
                score = lost / saved
                if best is None or score < best[0]:
                    best = (score, index, trial, saved)
        if best is None:  # no single edge saves time: empty the most expensive block
            index = max(range(len(masks)), key=block_ms.__getitem__)
            if block_ms[index] <= _EPS:
                raise HwnasError(f"internal error: the empty net ({total:.4g} ms) is over the limit {limit_ms:.4g} ms")
            best = (0.0, index, tuple([False] * len(graph.edges)), block_ms[index])
        _, index, trial, _ = best
        masks[index] = trial
        block_ms[index] = model.block_ms(index, trial)
        total = model.calibrated_fixed_ms + sum(block_ms)
        removals += 1
    return masks, removals, start - total


class DsoNasStrategy(Strategy):
    name = "dsonas"
    held_out = 0.5
    knobs = {
        "pretrain_epochs": Knob(
            1, "epochs of weight steps with every lambda at 1 before lambda moves (paper: 120 on CIFAR)", low=0
        ),
        "lambda_lr": Knob(0.1, "APG-NAG step size eta of lambda (paper: 0.1, the weights' constant rate)", low=0, low_open=True),
        "lambda_momentum": Knob(0.9, "APG-NAG momentum mu", low=0, high=1),
        "gamma": Knob(
            0.05,
            "sparsity weight gamma at full strength (paper 0.001 CIFAR, 0.01 ImageNet, over 120 epochs); "
            "each edge gets gamma x its adaptive weight (adaptive)",
            low=0,
        ),
        "adaptive": Knob(
            "block",
            "each edge's share of gamma: 'latency' (eq. 10 in ms: the edge's cost over the largest) or 'block' "
            "(eq. 9 in ms: every edge of a block alike, the block's kept ms over its full ms)",
            choices=("latency", "block"),
        ),
        "settle_band": Knob(0.1, "gamma falls linearly to 0 as the pruned net comes within this share over the aim", low=0),
        "floor": Knob(
            0.9,
            "a lambda step never prunes the net under this share of the aim: the step of the edges it would zero is "
            "undone, the least pushed first (largest lambda + velocity), until the pruned net is back at or over it "
            "(0: no floor, as the paper)",
            low=0,
            high=1,
        ),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.latency, DagLatencyModel):
            raise HwnasError("method dsonas searches the edges of a DAG space (dsonas, dsonas-small)")
        for name in ("lambda_lr", "gamma", "settle_band"):
            if not self.options[name] > 0:
                raise HwnasError(f"method dsonas's option {name} must be > 0, got {self.options[name]}")
        if not 0 <= self.options["floor"] < 1:
            raise HwnasError(f"method dsonas's option floor must be in [0, 1), got {self.options['floor']}")
        self.apg = ApgNag(self.options["lambda_lr"], self.options["lambda_momentum"])
        self.gamma_now = 0.0
        self.pruned_ms = self.latency.full()[1]
        full_masks = self.latency.space.masks(self.latency.space.full_choices())
        #: each block's ms with every edge kept (adaptive FLOPs' FLOPs_block)
        self.full_block_ms = [self.latency.block_ms(index, kept) for index, kept in enumerate(full_masks)]
        self.weights = adaptive_weights(self.latency).float()
        #: lambda at the last step whose pruned net was not under the aim (where the derivation starts after an overshoot)
        self.at_aim = torch.ones_like(self.lam.detach())
        self.epoch = 0

    @classmethod
    def supports(cls, space: Any) -> bool:
        return isinstance(space, DagSpace)

    @classmethod
    def build_supernet(cls, space: Any) -> EdgeSupernet:
        return EdgeSupernet(space)

    @classmethod
    def build_arch(cls, space: Any) -> EdgeScales:
        return EdgeScales(space)

    @property
    def lam(self) -> torch.Tensor:
        return self.arch.alpha

    def init_alpha(self) -> None:
        with torch.no_grad():
            self.lam.fill_(1.0)

    def make_arch_optimizer(self) -> None:
        return None  # APG-NAG is not a torch optimiser; its state is in ``extra_state``

    def epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def sample_choices(self, generator: torch.Generator) -> torch.Tensor:
        return self.lam.detach()

    @property
    def searching(self) -> bool:
        return self.epoch >= self.options["pretrain_epochs"]

    def step(self, images: torch.Tensor, labels: torch.Tensor, arch_batches: ArchBatches | None) -> StepResult:
        logits = self.net(images, self.lam.detach())  # DDP under torchrun: the weight gradients are averaged over ranks
        loss = self.cross_entropy(logits, labels)
        self.weight_update(loss)
        if self.searching:
            if arch_batches is None:
                raise HwnasError("method dsonas takes its lambda steps on held-out data: --arch-fraction must be > 0")
            self.lambda_step(*arch_batches())
        return StepResult(float(loss.detach()), self.correct(logits, labels), len(labels), self.pruned_ms)

    def lambda_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One APG-NAG step on lambda with the budget-controlled, latency-weighted thresholds."""
        loss = self.cross_entropy(self.supernet(images, self.lam), labels)
        (grad,) = torch.autograd.grad(loss, [self.lam], allow_unused=True)
        if grad is None:  # every edge at 0: no lambda takes part in the forward pass
            grad = torch.zeros_like(self.lam)
        self.dist.all_reduce_mean_(grad)  # the global held-out batch's gradient: lambda, v and gamma stay equal on every rank
        before = self.lam.detach().clone()
        self.apg.step(self.lam.data, grad, self.gamma_now * self.edge_weights())
        self.hold_floor(before)
        self.control()

    def edge_weights(self) -> torch.Tensor:
        """Each edge's share of gamma now: fixed by its cost ('latency'), or its block's kept share of its full ms ('block')."""
        if self.options["adaptive"] == "latency":
            return self.weights
        masks = masks_of(self.lam, self.latency.space)
        shares = [
            self.latency.block_ms(b, kept) / full if full > 0 else 0.0
            for b, (kept, full) in enumerate(zip(masks, self.full_block_ms))
        ]
        return torch.tensor(shares, dtype=self.lam.dtype).unsqueeze(1).expand_as(self.lam)

    def hold_floor(self, before: torch.Tensor) -> int:
        """Undo the last step of edges it zeroed while the pruned net is under ``floor`` x aim; returns how many.

        An edge at lambda = 0 leaves the forward pass and gets no gradient again: pruning cannot
        be taken back, and APG-NAG's momentum carries lambdas on to 0 after gamma has dropped to
        0 at the aim. So the step is projected onto the nets not under the floor: the edges this
        step zeroed get their lambda before the step back, with no velocity, one at a time, the
        one the step pushed least hard towards 0 first (the largest ``before + v``: lambda before
        the step plus its new velocity, ``S(z) + mu v_old``, the step's target without the
        momentum of this step itself), until the pruned net is at or over the floor.
        """
        floor_ms = self.options["floor"] * self.budget.aim_ms
        space = self.latency.space
        lam = self.lam.data
        if self.latency.masks_ms(masks_of(lam, space)) >= floor_ms:
            return 0
        zeroed = ((before > 0) & (lam == 0)).nonzero().tolist()
        velocity = self.apg.velocity
        assert velocity is not None
        target = before + velocity
        zeroed.sort(key=lambda be: -float(target[be[0], be[1]]))
        restored = 0
        for b, e in zeroed:
            lam[b, e] = before[b, e]
            velocity[b, e] = 0.0
            restored += 1
            if self.latency.masks_ms(masks_of(lam, space)) >= floor_ms:
                break
        return restored

    def control(self) -> None:
        """Predict the net pruning would derive now and set the overall gamma from its distance to the aim."""
        self.pruned_ms = self.latency.masks_ms(masks_of(self.lam, self.latency.space))
        if self.pruned_ms >= self.budget.aim_ms:
            self.at_aim = self.lam.detach().clone()
        error = self.pruned_ms / self.budget.aim_ms - 1.0
        self.gamma_now = self.options["gamma"] * min(max(error / self.options["settle_band"], 0.0), 1.0)

    def derive(self, aim_ms: float, spend: bool) -> tuple[Arch, float, dict[str, Any]]:
        """Prune (lambda = 0 and isolated ops), then repair to the aim by the least lambda per ms.

        Where the final lambda's pruned net is under ``floor`` x aim (the search ended there
        after all: a floor of 0), the pruning starts from ``at_aim``, the last lambda whose
        pruned net was not under the aim, and the repair takes it down to the aim.
        """
        space = self.latency.space
        pruned_ms = self.latency.masks_ms(masks_of(self.lam, space))
        lam = self.lam.detach() if pruned_ms >= self.options["floor"] * aim_ms else self.at_aim
        masks = masks_of(lam, space)
        start_ms = self.latency.masks_ms(masks)
        masks, removals, saved = repair_to_limit(self.latency, masks, lam, aim_ms)
        arch = Arch.of(space, space.choices_of(masks))
        predicted = self.latency.predict(arch)
        if predicted > aim_ms + 1e-6:
            raise HwnasError(f"internal error: derived arch predicted {predicted:.6g} ms over the aim {aim_ms:.6g} ms")
        kept = sum(sum(mask) for mask in masks)
        return (
            arch,
            predicted,
            {
                "argmax_ms": pruned_ms,
                "argmax_share_of_aim": pruned_ms / aim_ms,
                "repair_swaps": removals,
                "repair_ms": saved,
                "fill_swaps": 0,
                "fill_ms": 0.0,
                "fill_share_of_aim": 0.0,
                "derived_share_of_aim": predicted / aim_ms,
                "expected_ms": pruned_ms,
                "multiplier": self.gamma_now,
                "pruned_ms": pruned_ms,
                "derived_from": "final lambda" if lam is not self.at_aim else "the last lambda not under the aim",
                "start_ms": start_ms,
                "edges_kept": kept,
                "edges_total": len(space.graph.edges) * len(space.layers),
            },
        )

    def extract_child(self, arch: Arch) -> torch.nn.Module:
        """The child with the supernet's weights, each kept edge's lambda (``at_aim``'s where it has since reached 0) folded where exact."""
        lam = self.lam.detach()
        return self.supernet.extract_child(arch, torch.where(lam > 0, lam, self.at_aim))

    def log_fields(self) -> dict[str, Any]:
        lam = self.lam.detach()
        return {
            "expected_ms": self.pruned_ms,
            "argmax_ms": self.pruned_ms,
            "multiplier": self.gamma_now,
            "entropy": None,
            "temperature": None,
            "layers_fixed": 0,
            "edges_nonzero": int((lam > 0).sum()),
            "lambda_mean": float(lam.mean()),
        }

    def extra_state(self) -> dict[str, Any]:
        return {"apg": self.apg.state_dict(), "gamma_now": self.gamma_now, "pruned_ms": self.pruned_ms, "at_aim": self.at_aim}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.apg.load_state_dict(state["apg"])
        self.gamma_now = float(state["gamma_now"])
        self.pruned_ms = float(state["pruned_ms"])
        self.at_aim = state["at_aim"].clone()
