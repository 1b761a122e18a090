"""How well a freshly built latency table predicts whole nets on this machine, and what building it costs.

Profiles a space into a temporary table (wall time measured, export included), validates it
on N random archs with the same runtime and protocol, and prints one table of figures: the
plain sum of entries, the calibrated prediction on the held-out half, and the noise floor
(one round of the same archs against another round).

    python bench/latency_accuracy.py                                   # proxyless 32x32, onnxruntime
    python bench/latency_accuracy.py --space shufflenet --runtime torch --n 20
    python bench/latency_accuracy.py --resolution 224 --in-channels 3 --num-classes 1000

Figures are fractions of the measured latency, printed as percentages.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import bench_cli

from hwnas.latency.model import LatencyModel, calibration_formula
from hwnas.latency.profiler import profile_space
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import get_runtime
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import format_report, validate_table
from hwnas.spaces import get_space


def main(argv: list[str] | None = None) -> int:
    parser = bench_cli.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=30, help="random archs validated end to end")
    parser.add_argument("--rounds", type=int, default=Protocol.rounds)
    parser.add_argument("--min-time", type=float, default=Protocol.min_s, help="seconds timed per item and round")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    space = get_space(args.space, resolution=args.resolution, in_channels=args.in_channels, num_classes=args.num_classes)
    runtime = get_runtime(args.runtime, args.device, args.threads, protocol=Protocol(rounds=args.rounds, min_s=args.min_time))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.json"
        started = time.perf_counter()
        profile = profile_space(space, runtime, path, progress=False)
        profile_s = time.perf_counter() - started
        table = LatencyTable.load(path)
        report = validate_table(table, space, runtime, args.n, args.seed, progress=False)
    model = LatencyModel(table, space)
    print(
        f"space {space.name} {space.args.to_dict()}  runtime {args.runtime} ({runtime.meta()['provider']}, "
        f"{args.threads} thread(s), {table.meta.get('device_name')})"
    )
    print(f"protocol {runtime.protocol.to_dict()}")
    print(
        f"profiling: {profile.entries} entries, {profile.measurements} measurements, {profile_s:.1f} s wall "
        f"(export and session creation included); validation of {args.n} archs: {report['wall_s']:.1f} s wall"
    )
    print(
        f"space range (sum of entries): fastest {model.fastest()[1]:.3f} ms, slowest {model.slowest()[1]:.3f} ms; "
        f"per-call overhead {model.call_overhead_ms * 1e3:.1f} us; "
        f"calibration {calibration_formula(report['calibration'])}"
    )
    for warning in dict.fromkeys(table.meta.get("warnings", []) + report["warnings"]):  # the profile's, then the validation's
        print(f"warning: {warning}")
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(bench_cli.run(main))
