"""From-scratch accuracy of a DSO-NAS run's derived net beside random nets of its predicted latency (+-5 %), one recipe for all.

    python bench/dsonas_scratch.py RUN TABLE OUT N_RANDOM EPOCHS TRAIN_IMAGES VAL_IMAGES

e.g. ``RUN TABLE runs/scratch 2 2 4000 2000`` gave the table in ``docs/dsonas.md``: each net
trained from scratch (seed 0, SGD 0.05 cosine, batch 64, label smoothing 0.1) on the same
TRAIN_IMAGES Fashion-MNIST images at 32x32, scored on the first VAL_IMAGES validation images;
random nets from ``DagBandSampler`` (seed 7). One JSON line per net; ``OUT/scratch.json``.
"""

import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from hwnas.arch import load_arch
from hwnas.data import DataSplits, load_data
from hwnas.latency import LatencyTable, latency_model
from hwnas.search.random_archs import band_sampler
from hwnas.train import TrainConfig, train_child

torch.set_num_threads(1)

run, table_path, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
n_random, epochs, train_images, val_images = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
result = json.loads((run / "result.json").read_text())
derived = load_arch(str(run / "arch.json"))
space = derived.build_space()
model = latency_model(LatencyTable.load(table_path), space)
aim = result["predicted_ms"]  # random nets of the derived net's predicted latency, +-5 %
randoms = band_sampler(model, 0.95 * aim, 1.05 * aim).sample(n_random, seed=7) if n_random else []
data = load_data("fashion-mnist", 32, 1, seed=0)
order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(12345)).tolist()
splits = DataSplits(
    Subset(data.train, order[:train_images]), Subset(data.val, range(val_images)), data.num_classes, data.in_channels, data.name
)
rows = []
for name, arch in [("dsonas", derived)] + [(f"random{i}", a) for i, a in enumerate(randoms)]:
    started = time.perf_counter()
    torch.manual_seed(0)
    net = space.build(arch.choices)
    res = train_child(
        arch, net, splits, out / name, TrainConfig(epochs=epochs, batch_size=64, seed=0, bn_batches=10), progress=False
    )
    row = {
        "net": name,
        "predicted_ms": model.predict(arch),
        "val_acc": res.get("val_acc", res.get("best_val_acc")),
        "mflops": space.cost(arch.choices).flops / 1e6,
        "params": space.cost(arch.choices).params,
        "seconds": time.perf_counter() - started,
        "arch": arch.to_compact(),
    }
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "arch"}), flush=True)
(out / "scratch.json").write_text(json.dumps(rows, indent=2))
