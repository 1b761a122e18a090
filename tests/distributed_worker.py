"""Runs searches and a training in one process or, under torchrun, as one rank of several; for tests/test_distributed.py.

    [torchrun --nproc-per-node N] tests/distributed_worker.py SPEC.json

SPEC: {"table", "budget_ms", "out", "searches": [method, ...] (dsonas searches dsonas-small, the others proxyless), "epochs": {method: epochs} (default 1), "train": bool,
"resume": bool}. Everything runs in
float64, so the comparison with one process tests the arithmetic of the distribution, not how float32 rounding
(1e-7) grows through a few chaotic search steps (a 1e-7 change of one BN weight moved a stem gradient by 1e-3).
Rank 0 saves what the test compares into OUT/<name>.pt.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)

from torch.utils.data import Subset  # noqa: E402

from hwnas.arch import Arch  # noqa: E402
from hwnas.data import DataSplits, load_data  # noqa: E402
from hwnas.distributed import launched  # noqa: E402
from hwnas.search.loop import SearchConfig, SearchRun  # noqa: E402
from hwnas.train import TrainConfig, train_child  # noqa: E402

from helpers import tiny_space  # noqa: E402  (this script runs from tests/)

#: the child is scored on this many validation images (all 359 of digits in float64 took a third of a run)
VAL_IMAGES = 64
SPACE_ARGS = {"resolution": 16, "in_channels": 1, "num_classes": 10, "width_mult": 0.25}


#: DSO-NAS: lambda steps from the first step, strong enough that edges reach 0 and ops leave the forward pass within 4 steps
DSONAS_OPTIONS = {"pretrain_epochs": 0, "gamma": 0.5, "lambda_lr": 0.3}


def search_config(method: str, table: str, budget_ms: float, epochs: int) -> SearchConfig:
    options = {} if method == "snas" else {"warmup_epochs": 0}  # arch steps from the first step
    if method == "dsonas":
        options = DSONAS_OPTIONS
    return SearchConfig(
        method=method,
        table=table,
        budget_ms=budget_ms,
        space="dsonas-small" if method == "dsonas" else "proxyless",
        space_args=SPACE_ARGS,
        epochs=epochs,
        batch_size=16,
        steps_per_epoch=2,
        bn_batches=1,
        eval_images=16,
        method_options=options,
    )


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(spec["out"])
    with launched("cpu") as dist:
        for method in spec.get("searches", []):
            started = time.perf_counter()
            folder = out / method
            if spec.get("resume"):
                config = SearchConfig.load(folder)
            else:
                config = search_config(method, spec["table"], spec["budget_ms"], spec.get("epochs", {}).get(method, 1))
            run = SearchRun(config, folder, progress=False, dist=dist)
            run.data = replace(run.data, val=Subset(run.data.val, range(VAL_IMAGES)))
            run.run(resume=bool(spec.get("resume")))
            if dist.is_main:
                torch.save(
                    {
                        "alpha": run.arch.alpha.detach(),
                        "weights": run.supernet.state_dict(),
                        "budget": run.budget.state_dict(),
                        "strategy": run.strategy.extra_state(),
                    },
                    out / f"{method}.pt",
                )
                print(method, f"{time.perf_counter() - started:.1f} s", flush=True)
        if spec.get("train"):
            space = tiny_space()
            arch = Arch(space.name, tuple(layer.candidates[0] for layer in space.layers), space.args.to_dict())
            torch.manual_seed(0)
            model = space.build(arch.choices)
            data = load_data("digits", 16, 1, 0)
            data = DataSplits(
                Subset(data.train, range(192)), Subset(data.val, range(64)), data.num_classes, data.in_channels, data.name
            )
            config = TrainConfig(epochs=1, batch_size=32, bn_batches=2)
            train_child(arch, model, data, out / "train", config, progress=False, dist=dist)
            if dist.is_main:
                torch.save({"weights": model.state_dict()}, out / "train.pt")


if __name__ == "__main__":
    main()
