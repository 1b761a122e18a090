"""Cost of scoring one candidate in a one-shot selection (SPOS, GreedyNAS, random): memory format side by side.

    python bench/selection_cost.py [--resolution 32 --score-images 144 --bn-images 64 --paths 10 --rounds 3]

The evolution scores up to 1,000 archs (SPOS's 50 x 20), each with a BN recalibration on
``--bn-images`` training images and a forward pass over ``--score-images`` held-out images
(``hwnas.search.oneshot.PathScorer``), so this cost is the selection's wall time. Both
memory formats score the same random paths (uniform under a middle aim of a synthetic table)
in interleaved rounds, so drift hits both alike; the figure is the median time per arch and
the ratio. The weights are random: the cost does not depend on them.
"""

from __future__ import annotations

import statistics
import sys
import time

import bench_cli


def main() -> None:
    parser = bench_cli.Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--score-images", type=int, default=144, help="digits' held-out share (10 %% of its training set)")
    parser.add_argument("--bn-images", type=int, default=64)
    parser.add_argument("--paths", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    from hwnas.latency import LatencyModel
    from hwnas.search.oneshot import PathScorer
    from hwnas.search.random_archs import BandSampler
    from hwnas.search.supernet import Supernet
    from hwnas.search.synthetic import synthetic_table
    from hwnas.spaces import get_space

    torch.set_num_threads(args.threads)
    space = get_space(args.space, resolution=args.resolution, in_channels=1, num_classes=10)
    latency = LatencyModel(synthetic_table(space), space)
    fastest, slowest = latency.fastest()[1], latency.slowest()[1]
    sampler = BandSampler(latency, fastest, fastest + 0.4 * (slowest - fastest))
    rng = np.random.default_rng(0)
    paths = [tuple(sampler.draw_in_band(rng)) for _ in range(args.paths)]
    generator = torch.Generator().manual_seed(0)
    bn_images = torch.randn(args.bn_images, 1, args.resolution, args.resolution, generator=generator)
    images = torch.randn(args.score_images, 1, args.resolution, args.resolution, generator=generator)
    labels = torch.randint(0, 10, (args.score_images,), generator=generator)
    supernet = Supernet(space).eval()

    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    seconds: dict[str, list[float]] = {name: [] for name in formats}
    for _ in range(args.rounds):
        for name, memory_format in formats.items():
            supernet.to(memory_format=memory_format)
            scorer = PathScorer(
                supernet,
                bn_images.contiguous(memory_format=memory_format),
                images.contiguous(memory_format=memory_format),
                labels,
            )
            scorer(paths[0])  # warm-up
            for path in paths:
                started = time.perf_counter()
                scorer(path)
                seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["contiguous"])
    print(
        f"space {args.space} r{args.resolution}, {args.bn_images} BN + {args.score_images} scored images, {args.threads} thread(s), "
        f"median of {args.paths} paths x {args.rounds} rounds"
    )
    for name in formats:
        median = statistics.median(seconds[name])
        print(
            f"{name:<14} {1000 * median:8.1f} ms per arch  {median / base:5.2f} x contiguous  "
            f"(1000 archs: {1000 * median / 60:.1f} min)"
        )


if __name__ == "__main__":
    sys.exit(bench_cli.run(main))
