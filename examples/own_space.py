"""Your own search space and your own images, from Python: profile, search with DSNAS, export.

The space is ``thumbs64.toml`` beside this script (a 2-stage MBConv space for 64x64 thumbnails,
5 classes). The images are generated here: 5 classes of 64x64 PNGs (a bright square in one of
five places on a noisy background) in an ``imagefolder`` layout, ``train/<class>/*.png`` and
``val/<class>/*.png``. Everything runs at 32x32 to stay short: about a minute or two on 2 cores.

    python examples/own_space.py [WORK_DIR]

WORK_DIR (default: a new temporary folder) receives the images, the latency table, the run
folder and the exported ONNX file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import hwnas

SPACE = Path(__file__).resolve().with_name("thumbs64.toml")
RESOLUTION = 32  # profile and search below the file's own 64 to stay fast
QUICK = {"rounds": 1, "min_time": 0.01, "warmup_time": 0.005}  # a short, noisy protocol: fine for a demo


def make_images(root: Path, per_class: int = 40, classes: int = 5, size: int = 64, seed: int = 0) -> None:
    """``root/train/c<k>/*.png`` and ``root/val/c<k>/*.png``: class k puts a bright square in the k-th of five places."""
    rng = np.random.default_rng(seed)
    corners = [(8, 8), (8, 40), (40, 8), (40, 40), (24, 24)]
    for split, count in (("train", per_class), ("val", per_class // 4)):
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                y, x = corners[k]
                y, x = y + rng.integers(-3, 4), x + rng.integers(-3, 4)
                image[y : y + 16, x : x + 16] = rng.integers(180, 256, 3, dtype=np.uint8)
                Image.fromarray(image).save(folder / f"{i}.png")


def main(work: Path) -> dict:
    images = work / "images"
    make_images(images)
    data = f"imagefolder:{images}"

    # the ops, then a few whole nets that calibrate the table's sums
    profiled = hwnas.profile(SPACE, resolution=RESOLUTION, output=work / "table.json", **QUICK)
    print(f"profiled {profiled.entries} entries of {profiled.table.meta['space']} into {profiled.path}")
    error = profiled.calibration["calibrated"]["p90_relative_error"]
    print(f"calibrated on whole nets: leave-one-out p90 relative error {error:.1%}")

    # a budget halfway between the fastest and the slowest net of the space, as the table predicts them
    shown = hwnas.show_table(profiled.path)
    budget = shown.fastest_ms + 0.5 * (shown.slowest_ms - shown.fastest_ms)
    found = hwnas.search(
        f"{budget}ms",
        method="dsnas",
        space=SPACE,
        resolution=RESOLUTION,
        table=profiled.path,
        data=data,
        epochs=2,
        batch_size=32,
        bn_batches=2,
        out=work / "run",
    )
    print(
        f"derived {found.arch}: predicted {found.predicted_ms:.4f} ms (budget {found.budget_ms:.4f} ms), "
        f"child val acc {found.child_val_acc:.3f}"
    )

    report = hwnas.export(work / "child.onnx", run=found.run, rounds=2, references=0)
    print(f"exported {', '.join(report.files)}: measured {report.verdict.measured_ms:.4f} ms -> {report.verdict.verdict}")
    return {"table": profiled, "search": found, "export": report}


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(Path(folder))
