"""INT8 against float latency on this CPU, measured side by side: per op family, for whole nets, for shipped files.

    python bench/int8_latency.py ops                        # every entry of proxyless 32x32, float and INT8
    python bench/int8_latency.py ops --nets 10              # ... and 10 random whole nets
    python bench/int8_latency.py ops --runtimes onnxruntime,executorch --per-family 4   # both runtimes, same rounds
    python bench/int8_latency.py files a.onnx b.onnx        # exported files, timed in the same rounds
    python bench/int8_latency.py scaled INT8_TABLE FLOAT_TABLE

``ops``: each table entry of the space (the profiler's items: each op at each layer shape, the
stem, the head, the per-call overhead) is built once, exported, and prepared twice by ONNX
Runtime (CPU, 1 thread): as float32 and as INT8 (``hwnas.latency.quantize``'s recipe, random
calibration inputs, exactly what ``hwnas profile --precision int8`` measures). All of them are
timed in the same interleaved rounds, so a slow minute hits both halves of a ratio alike. A
control pair per family (the float model in a second session) gives the noise floor of a ratio:
what two timings of the same model differ by on this machine now. Ratios are INT8 / float
(below 1: INT8 is faster), summarised per op family (``mb6_k5`` etc.) as the median, min and
max over the layer shapes, and for whole random nets the same way.

With ``--runtimes onnxruntime,executorch`` the same entries are also lowered to ExecuTorch
programs (XNNPACK delegate, 1 thread in this process) twice: float32 and INT8 (the XNNPACK
quantizer's PT2E recipe, ``hwnas.latency.executorch_quantize``, exactly what ``hwnas profile
--runtime executorch --precision int8`` measures), its control being the float program loaded
again; every runtime's runners are timed in the same interleaved rounds. Lowering takes seconds
per program, so ``--per-family N`` keeps N layer shapes per family, spread over the network.

``files``: ONNX files (e.g. two INT8 exports) timed in the same interleaved rounds, each with a
second session of itself as a control.

``scaled``: is an INT8 table needed, or would the float table times one constant do? Over the
whole INT8 nets an INT8 table's validation measured (``hwnas tables validate``), both are
reduced to one scale fitted on the first half (the median of measured / predicted) and scored
on the held-out second half: the float table's calibrated prediction times k, and the INT8
table's plain sum of entries times k'. No new measurement: it reads the two tables.

The load average (``uptime``) is printed at the start and the end: on a shared VM it moves the
absolute figures, not the ratios much, which is why only ratios are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from hwnas.arch import Arch
from hwnas.latency.onnx_export import export_onnx_bytes
from hwnas.latency.profiler import profile_items
from hwnas.latency.protocol import Protocol
from hwnas.latency.quantize import quantize_onnx, random_calibration
from hwnas.latency.runtimes import get_runtime
from hwnas.latency.validate import random_archs
from hwnas.spaces import get_space


def family(key: str) -> str:
    """``mb6_k5:c40-80:s2:h28w28`` -> ``mb6_k5``; ``stem:...`` -> ``stem``."""
    return key.split(":", 1)[0]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def summarise(ratios: list[float]) -> dict[str, float]:
    return {"n": len(ratios), "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def _onnx_runners(protocol: Protocol):
    """(float, int8, control) runner makers through ONNX Runtime: the float model, its QDQ model, the float model again."""
    runtime = get_runtime("onnxruntime", "cpu", 1, protocol=protocol)

    def prepare(module, shape):
        data = export_onnx_bytes(module, shape)
        quantized = quantize_onnx(data, random_calibration(shape))
        return (
            lambda: runtime.prepare_onnx(data, shape),
            lambda: runtime.prepare_onnx(quantized, shape),
            lambda: runtime.prepare_onnx(data, shape),
        )

    return runtime, prepare


def _executorch_runners(protocol: Protocol):
    """The same through ExecuTorch: the float program, the INT8 program (what ``--precision int8`` times), the float again."""
    floats = get_runtime("executorch", "cpu", 1, protocol=protocol)
    int8 = get_runtime("executorch", "cpu", 1, protocol=protocol, precision="int8")

    def prepare(module, shape):
        return (
            lambda: floats.prepare_module(module, shape),
            lambda: int8.prepare_module(module, shape),
            lambda: floats.prepare_module(module, shape),
        )

    return floats, prepare


RUNNERS = {"onnxruntime": _onnx_runners, "executorch": _executorch_runners}


def spread(items: list, per_family: int | None) -> list:
    """At most ``per_family`` entries of each family, spread over its layer shapes (all where None)."""
    if per_family is None:
        return items
    groups: dict[str, list] = defaultdict(list)
    for item in items:
        groups[family(item[0])].append(item)
    kept = []
    for group in groups.values():
        step = max(1, -(-len(group) // per_family))
        kept += group[::step][:per_family]
    return [item for item in items if item in kept]


def ops(args: argparse.Namespace) -> dict:
    space = get_space("proxyless", resolution=args.resolution, in_channels=1, num_classes=10)
    protocol = Protocol(rounds=args.rounds, min_s=args.min_time)
    items = spread([(item.key, item.build(), item.input_shape) for item in profile_items(space)], args.per_family)
    nets = [(f"net:{arch.to_compact()}", arch.build(), (1, *space.input_shape)) for arch in random_archs(space, args.nets, 0)]
    runners, labels = [], []
    runtime = None
    for name in args.runtimes.split(","):
        measuring, prepare = RUNNERS[name](protocol)
        runtime = runtime or measuring
        controls: set[str] = set()
        for key, module, shape in items + nets:
            float_runner, int8_runner, control_runner = prepare(module, shape)
            runners += [float_runner(), int8_runner()]
            labels += [(name, key, "float"), (name, key, "int8")]
            if family(key) not in controls:  # the first entry of each family, and the first net, get a control
                controls.add(family(key))
                runners.append(control_runner())
                labels.append((name, key, "control"))
    print(f"{len(runners)} runners prepared; {load()}", file=sys.stderr)
    timings = runtime.measure(runners)  # every runtime's runners in the same interleaved rounds
    result: dict = {"space": f"proxyless r{args.resolution} c1 n10", "protocol": {"rounds": args.rounds, "min_s": args.min_time}}
    for name in args.runtimes.split(","):
        ms: dict[str, dict[str, float]] = defaultdict(dict)
        for (which, key, kind), timing in zip(labels, timings):
            if which == name:
                ms[key][kind] = timing.median_ms
        by_family: dict[str, list[float]] = defaultdict(list)
        noise: list[float] = []
        for key, values in ms.items():
            by_family[family(key)].append(values["int8"] / values["float"])
            if "control" in values:
                noise.append(abs(values["control"] / values["float"] - 1))
        result[name] = {
            "families": {family_name: summarise(ratios) for family_name, ratios in sorted(by_family.items())},
            "entries_ms": ms,
            "noise_floor": {"n": len(noise), "median_abs": statistics.median(noise), "max_abs": max(noise)},
        }
    return result


def files(args: argparse.Namespace) -> dict:
    runtime = get_runtime("onnxruntime", "cpu", 1, protocol=Protocol(rounds=args.rounds, min_s=args.min_time))
    runners = []
    for path in args.paths:
        import onnx

        dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value or 1 for d in dims)
        runners += [runtime.prepare_onnx(path, shape), runtime.prepare_onnx(path, shape)]
    timings = runtime.measure(runners)
    result = {}
    for i, path in enumerate(args.paths):
        first, second = timings[2 * i], timings[2 * i + 1]
        result[str(path)] = {"ms": first.median_ms, "p90_ms": first.p90_ms, "control_ms": second.median_ms}
    return {"files": result, "protocol": {"rounds": args.rounds, "min_s": args.min_time}}


def scaled(args: argparse.Namespace) -> dict:
    from hwnas.latency.accuracy import error_metrics
    from hwnas.latency.model import latency_model
    from hwnas.latency.table import LatencyTable

    int8, floats = LatencyTable.load(args.int8_table), LatencyTable.load(args.float_table)
    points = int8.validation["points"]
    archs = [Arch.from_compact(point["arch"]) for point in points]
    space = archs[0].build_space()
    measured = [point["measured_ms"] for point in points]
    predictions = {
        "float table (calibrated) x k": [latency_model(floats, space).predict(arch) for arch in archs],
        "int8 table (sum of entries) x k'": [point["predicted_sum_ms"] for point in points],
    }
    half = len(points) // 2
    result = {}
    for name, predicted in predictions.items():
        k = statistics.median(m / p for p, m in zip(predicted[:half], measured[:half]))
        result[name] = {"k": k, **error_metrics([k * p for p in predicted[half:]], measured[half:])}
    result["int8 table, its own calibration (hwnas tables validate)"] = int8.validation["calibrated"]
    return {"scaled": result, "nets": len(points), "held_out": len(points) - half}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.1, help="seconds timed per item and round")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    commands = parser.add_subparsers(dest="command", required=True)
    op_parser = commands.add_parser("ops")
    op_parser.add_argument("--resolution", type=int, default=32)
    op_parser.add_argument("--nets", type=int, default=0, help="random whole nets measured too")
    op_parser.add_argument(
        "--runtimes", default="onnxruntime", help="comma-separated: onnxruntime, executorch (all timed in the same rounds)"
    )
    op_parser.add_argument("--per-family", type=int, help="at most this many layer shapes per op family [default: all]")
    file_parser = commands.add_parser("files")
    file_parser.add_argument("paths", nargs="+", type=Path)
    scaled_parser = commands.add_parser("scaled")
    scaled_parser.add_argument("int8_table", type=Path)
    scaled_parser.add_argument("float_table", type=Path)
    args = parser.parse_args(argv)
    if args.command == "scaled":
        result = scaled(args)
        for name, row in result["scaled"].items():
            k = f"k {row['k']:.3f}, " if "k" in row else ""
            print(
                f"{name:55s} {k}held-out MAPE {row['mape']:.1%}, p90 {row['p90_relative_error']:.1%}, tau {row['kendall_tau']:.2f}"
            )
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    start = load()
    result = ops(args) if args.command == "ops" else files(args)
    result["load"] = {"start": start, "end": load()}
    if args.command == "ops":
        for runtime in args.runtimes.split(","):
            print(f"{runtime}\n{'family':10s} {'n':>3s} {'int8/float median':>18s} {'min':>6s} {'max':>6s}")
            for name, row in result[runtime]["families"].items():
                print(f"{name:10s} {row['n']:3d} {row['median']:18.2f} {row['min']:6.2f} {row['max']:6.2f}")
            floor = result[runtime]["noise_floor"]
            print(f"noise floor (same model, second session): median {floor['median_abs']:.1%}, max {floor['max_abs']:.1%}")
    else:
        for path, row in result["files"].items():
            print(f"{path}: {row['ms']:.3f} ms median (p90 {row['p90_ms']:.3f}); control session {row['control_ms']:.3f} ms")
    print(f"{result['load']['start']} at the start, {result['load']['end']} at the end")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
