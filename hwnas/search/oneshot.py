"""The selection stage of a one-shot search: archs scored with the trained supernet's weights.

Each candidate is scored as SPOS and GreedyNAS score it: its path's BN statistics are
re-estimated on a few training batches (``recalibrate_bn``), then its accuracy is measured on
held-out training images (never the validation set, which reports the result). The batches
and images are drawn once, so an arch's score is a fixed number; every score is appended to
``scores.jsonl`` in the run folder as it is computed, and a resumed run reads them back: the
evolution, replayed from the same seed with those scores, takes the same decisions and scores
only what it had not reached.

The evolution's random archs come from the archs predicted within [``draw_floor`` x aim, aim]
(``random_draw``; ``hwnas.search.spos`` says why), random search's from all archs under the aim.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hwnas.arch import Arch
from hwnas.batchnorm import batch_norms, recalibrate_bn
from hwnas.data import make_loader
from hwnas.distributed import like_module
from hwnas.errors import HwnasError
from hwnas.files import parse_json, write_text_atomic
from hwnas.latency import LatencyModel
from hwnas.run_folder import SCORES
from hwnas.search.evolution import Columns, EvolutionOptions, SearchOutcome, evolve, random_search
from hwnas.search.random_archs import BandSampler
from hwnas.search.supernet import PathChoice, Supernet, legal_columns


class PathScorer:
    """Held-out accuracy of one path of the supernet, with BN statistics of its own.

    The supernet must be in eval mode; only the BN layers of the path's ops (and of the stem
    and head) are recalibrated, on one batch of ``bn_images`` training images.
    """

    def __init__(
        self, supernet: Supernet, bn_images: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, chunk: int = 256
    ) -> None:
        self.supernet, self.bn_images, self.images, self.labels, self.chunk = supernet, bn_images, images, labels, chunk
        self.names = supernet.space.candidates
        self.fixed_norms = batch_norms(supernet.stem) + batch_norms(supernet.head)
        self.op_norms = [{name: batch_norms(op) for name, op in layer.ops.items()} for layer in supernet.layers]

    @torch.no_grad()
    def __call__(self, columns: Columns) -> float:
        choices = [PathChoice.single(c) for c in columns]
        norms = self.fixed_norms + [
            norm for layer, c in enumerate(columns) for norm in self.op_norms[layer].get(self.names[c], [])
        ]
        recalibrate_bn(self.supernet, [(self.bn_images, None)], 1, forward=lambda x: self.supernet(x, choices), norms=norms)
        correct = 0
        for start in range(0, len(self.images), self.chunk):
            logits = self.supernet(self.images[start : start + self.chunk], choices)
            correct += int((logits.argmax(dim=1) == self.labels[start : start + self.chunk]).sum())
        return correct / len(self.images)


class ScoreLog:
    """Scores kept on disk as they are computed (one JSON line each); a torn last line is dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.known: dict[Columns, float] = {}
        if path.is_file():
            for line in path.read_bytes().decode("utf-8", "replace").splitlines():
                try:
                    row = parse_json(line, str(path))
                    self.known[tuple(int(c) for c in row["columns"])] = float(row["score"])
                except (HwnasError, ValueError, KeyError, TypeError):
                    break  # a line cut short by a kill: everything after it is recomputed
            write_text_atomic(
                self.path, "".join(json.dumps({"columns": list(c), "score": s}) + "\n" for c, s in self.known.items())
            )

    def wrap(self, score: Callable[[Columns], float]) -> Callable[[Columns], float]:
        def cached(columns: Columns) -> float:
            if columns not in self.known:
                self.known[columns] = score(columns)
                with open(self.path, "a") as handle:
                    handle.write(json.dumps({"columns": list(columns), "score": self.known[columns]}) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            return self.known[columns]

        return cached


@dataclass
class Selection:
    arch: Arch
    predicted_ms: float
    outcome: SearchOutcome
    method: str

    def to_dict(self, aim_ms: float) -> dict[str, Any]:
        """The figures for ``result.json``."""
        return {
            "selection": self.method,
            "evaluations": len(self.outcome.scored),
            "selection_score": self.outcome.score,
            "derived_share_of_aim": self.predicted_ms / aim_ms,
        }


def held_out_tensors(dataset: Dataset, count: int, seed: int, module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images (at most all) of a seeded shuffle of ``dataset``, as two tensors on ``module``'s
    device, the images in its precision and layout (``hwnas.distributed.like_module``)."""
    images, labels = next(iter(make_loader(dataset, min(count, len(dataset)), True, 0, seed=seed)))
    images = like_module(images, module)
    return images, labels.to(images.device)


def random_draw(latency: LatencyModel, aim_ms: float, floor: float) -> Callable[[np.random.Generator], Columns]:
    """A draw of one random arch, uniform over those predicted within [``floor`` x ``aim_ms``, ``aim_ms``] (the
    evolution's ``--draw-floor``), or over all archs under the aim where that band holds none."""
    everywhere = BandSampler(latency, 0.0, aim_ms)
    try:
        near = BandSampler(latency, floor * aim_ms, aim_ms) if floor > 0 else None
    except HwnasError:
        near = None  # no arch in the band

    def draw(rng: np.random.Generator) -> Columns:
        if near is not None:
            try:
                return tuple(near.draw_in_band(rng))
            except HwnasError:
                pass  # the band's rounded counts held archs, its exact bounds none
        return tuple(everywhere.draw_in_band(rng))

    return draw


def select(
    supernet: Supernet,
    latency: LatencyModel,
    aim_ms: float,
    options: dict[str, Any],
    train_set: Dataset,
    held_out: Dataset,
    folder: Path,
    seed: int,
    initial: Sequence[Columns] = (),
    progress: bool = False,
) -> Selection:
    """Pick the arch under ``aim_ms`` with the best held-out score: evolution or random search (``options['selection']``).

    The supernet's weights and BN statistics are as they were when it returns; it is left in eval mode.
    """
    saved = {k: v.clone() for k, v in supernet.state_dict().items()}
    bn_images, _ = held_out_tensors(train_set, options["score_bn_images"], seed + 11, supernet)
    images, labels = held_out_tensors(held_out, options["score_images"], seed + 13, supernet)
    supernet.eval()
    score = ScoreLog(folder / SCORES).wrap(PathScorer(supernet, bn_images, images, labels))
    evolving = options["selection"] == "evolution"
    draw = random_draw(latency, aim_ms, options["draw_floor"] if evolving else 0.0)
    legal = legal_columns(latency.mask)
    evolution = EvolutionOptions.of(options)
    columns_ms: Callable[[Columns], float] = lambda columns: latency.columns_ms(list(columns))  # noqa: E731
    try:
        if evolving:
            outcome = evolve(legal, draw, score, columns_ms, aim_ms, evolution, seed=seed, initial=initial, progress=progress)
        else:
            outcome = random_search(
                draw,
                score,
                columns_ms,
                aim_ms,
                evolution.evaluations,
                seed=seed,
                report_every=evolution.population,
                progress=progress,
            )
    finally:
        supernet.load_state_dict(saved)
    names = latency.space.candidates
    arch = Arch(latency.space.name, tuple(names[c] for c in outcome.columns), latency.space.args.to_dict())
    return Selection(arch, latency.predict(arch), outcome, options["selection"])
