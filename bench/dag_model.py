"""Does the fitted whole-net model bring the DAG space's predictions to the chain space's level on this machine?

For ``dsonas-small`` (width 0.25) and ``proxyless`` at the same input (32x32, 1 channel, 10
classes), one runtime (onnxruntime, 1 thread), one process and one run: profile each space
into a temporary table (or take ``--tables DSONAS PROXYLESS``), draw ``--train`` random nets
plus the space's fastest and slowest net (the training nets) and ``--held-out`` other random
nets of each space, and time all of them, both spaces together, in interleaved rounds with
hwnas's own runtime and protocol. The training timings go through an ``arch,ms`` CSV into the
code ``hwnas tables fit`` runs (``read_timings``, ``fit_into``); the calibration line is the
one ``hwnas tables validate`` fits (``calibration_fit``), on the same training nets. Scored on
the held-out nets of each space, side by side: the plain sum of entries, the calibration
line, the fitted whole-net model (and, beside it, the same model fitted without the table's
sum as its line's start: ``unanchored``, what ``hwnas tables fit`` did before), and the noise floor (the even rounds of the held-out nets
against their odd rounds).

    python bench/dag_model.py                                   # profiles both spaces, ~10 min on 2 cores
    python bench/dag_model.py --tables dsonas.json proxyless.json --json
    python bench/dag_model.py --rescore previous.json           # score a previous --json run again, no timing

Figures are fractions of the measured latency, printed as percentages.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_cli
import numpy as np

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.latency.accuracy import error_metrics
from hwnas.latency.calibration import apply_calibration, count_ops
from hwnas.latency.fit import fit_into, read_timings
from hwnas.latency.model import latency_model
from hwnas.latency.profiler import profile_space
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import get_runtime
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import calibration_fit, random_archs
from hwnas.latency.whole_net import feature_matrix, fit_model, predict_log
from hwnas.spaces import get_space

#: the spaces compared: (name, width multiplier); dsonas-small at the width of docs/dsonas.md, proxyless at its own
SPACES = (("dsonas-small", 0.25), ("proxyless", 1.0))
PREDICTORS = ("sum", "calibrated", "whole_net", "unanchored")
SHOWN = (("within_5", "{:.0%}"), ("within_10", "{:.0%}"), ("mape", "{:.1%}"), ("kendall_tau", "{:.3f}"))


def build_space(name: str, width: float, args) -> Any:
    return get_space(
        name, resolution=args.resolution, in_channels=args.in_channels, num_classes=args.num_classes, width_mult=width
    )


def measure(args, folder: Path) -> dict[str, Any]:
    """Profile (or load) both tables, time the training and held-out nets of both spaces interleaved; the raw record."""
    runtime = get_runtime(args.runtime, "cpu", args.threads, protocol=Protocol(rounds=args.rounds, min_s=args.min_time))
    record: dict[str, Any] = {"runtime": runtime.meta(), "protocol": runtime.protocol.to_dict(), "spaces": {}}
    runners, owners = [], []
    for index, (name, width) in enumerate(SPACES):
        space = build_space(name, width, args)
        if args.tables:
            table = LatencyTable.load(args.tables[index])
            table.check_matches({"space": space.name, "space_args": space.args.to_dict()})
            profile_s = None
        else:
            started = time.perf_counter()
            profile_space(space, runtime, folder / f"{name}.json", progress=False)
            profile_s = time.perf_counter() - started
            table = LatencyTable.load(folder / f"{name}.json")
        additive = latency_model(LatencyTable(meta=table.meta, entries=table.entries), space)
        drawn = random_archs(space, args.train + args.held_out, args.seed)
        train = drawn[: args.train] + [additive.fastest()[0], additive.slowest()[0]]
        held = drawn[args.train :]
        record["spaces"][name] = {
            "width_mult": width,
            "table": {key: value for key, value in table.to_dict().items() if key not in ("validation", "whole_net")},
            "profile_s": profile_s,
            "train": [arch.to_compact() for arch in train],
            "held_out": [arch.to_compact() for arch in held],
        }
        for role, archs in (("train", train), ("held_out", held)):
            for arch in archs:
                runners.append(runtime.prepare_module(space.build(arch.choices), (1, *space.input_shape)))
                owners.append((name, role))
    rounds: list[list] = [[] for _ in runners]
    started = time.perf_counter()
    timings = runtime.measure(runners, on_measured=lambda i, r, timing: rounds[i].append(timing))
    record["measure_s"] = time.perf_counter() - started
    record["nets_timed"] = len(runners)
    for (name, role), timing, its_rounds in zip(owners, timings, rounds):
        entry = record["spaces"][name]
        entry.setdefault(f"{role}_ms", []).append(timing.median_ms)
        entry.setdefault(f"{role}_rounds_ms", []).append([t.median_ms for t in its_rounds])
    record["warnings"] = runtime.warnings()
    return record


def score(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Per space, the three predictors and the noise floor on the held-out nets (from a record of ``measure``)."""
    results = {}
    for name, width in SPACES:
        entry = record["spaces"][name]
        table = LatencyTable.from_dict(entry["table"], check_calibration=False)
        space = get_space(name, **table.meta["space_args"])
        additive = latency_model(LatencyTable(meta=table.meta, entries=table.entries), space)
        train = [Arch.from_compact(text) for text in entry["train"]]
        held = [Arch.from_compact(text) for text in entry["held_out"]]
        train_ms, held_ms = np.array(entry["train_ms"]), np.array(entry["held_out_ms"])
        # the training timings as hwnas tables fit reads them: an arch,ms CSV, then the same fit
        csv = folder / f"{name}_timings.csv"
        csv.write_text("arch,ms\n" + "".join(f"{arch.to_compact()},{float(ms)!r}\n" for arch, ms in zip(train, train_ms)))
        archs, ms = read_timings(csv, space)
        fit_into(table, space, archs, ms)
        full = latency_model(LatencyTable(meta=table.meta, entries=table.entries, whole_net=table.whole_net), space)
        # the calibration line as hwnas tables validate fits it (the fastest net is among the training nets)
        sums, ops = [additive.sum_ms(arch) for arch in train], [count_ops(arch) for arch in train]
        line = calibration_fit(sums, list(train_ms), (additive.sum_ms(train[-2]), ops[-2]), ops)
        held_sums = [additive.sum_ms(arch) for arch in held]
        predicted = {
            "sum": held_sums,
            "calibrated": [apply_calibration(line, s, count_ops(arch)) for s, arch in zip(held_sums, held)],
            "whole_net": [full.predict(arch) for arch in held],
            # the whole-net model before its line started from the table's sum (the ridge on the timings alone)
            "unanchored": list(
                np.exp(predict_log(fit_model(space, archs, ms), feature_matrix(space, [a.choices for a in held])))
            ),
        }
        scores = {key: error_metrics(values, held_ms) for key, values in predicted.items()}
        rounds = entry["held_out_rounds_ms"]  # each net's even rounds against its odd rounds
        scores["noise_floor"] = error_metrics(
            [float(np.median(r[0::2])) for r in rounds], [float(np.median(r[1::2])) for r in rounds]
        )
        results[name] = {
            "width_mult": width,
            "train": len(train),
            "held_out": len(held),
            "features": len(table.whole_net["features"]),
            "calibration": line,
            "measured_ms": {"min": float(held_ms.min()), "median": float(np.median(held_ms)), "max": float(held_ms.max())},
            "scores": scores,
        }
    return results


def format_results(results: dict[str, Any]) -> str:
    columns = [*PREDICTORS, "noise_floor"]
    lines = [f"{'':<20}{'':<12}" + "".join(f"{c:>14}" for c in columns)]
    for name, result in results.items():
        for key, fmt in SHOWN:
            label = f"{name} ({result['held_out']})" if key == SHOWN[0][0] else ""
            cells = "".join(f"{fmt.format(result['scores'][c][key]):>14}" for c in columns)
            lines.append(f"{label:<20}{key:<12}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_cli.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs=2, metavar=("DSONAS", "PROXYLESS"), help="tables of the two spaces (else profiled)")
    parser.add_argument("--rescore", metavar="JSON", help="score the timings of a previous --json run again, time nothing")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train", type=bench_cli.count, default=40, help="random training nets per space (+ fastest, slowest)")
    parser.add_argument("--held-out", type=bench_cli.count, default=30, help="random held-out nets per space")
    parser.add_argument("--rounds", type=bench_cli.count, default=Protocol.rounds)
    parser.add_argument("--min-time", type=float, default=Protocol.min_s, help="seconds timed per net and round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the record and the scores as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the noise floor splits them)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.rescore:
            try:
                record = json.loads(Path(args.rescore).read_text())["record"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise HwnasError(f"--rescore {args.rescore}: not the --json output of this bench ({error})") from None
        else:
            record = measure(args, folder)
        results = score(record, folder)
    if args.json:
        print(json.dumps({"results": results, "record": record}, indent=1))
        return 0
    runtime = record["runtime"]
    print(f"runtime {runtime.get('runtime', args.runtime)} {runtime.get('provider', '')}, protocol {record['protocol']}")
    if "measure_s" in record:
        print(f"timed {record['nets_timed']} nets interleaved in {record['measure_s']:.0f} s")
    for name, result in results.items():
        m = result["measured_ms"]
        print(
            f"{name} (width {result['width_mult']}): {result['train']} training nets, {result['held_out']} held out "
            f"({m['min']:.3f}-{m['max']:.3f} ms), {result['features']} model features"
        )
    for warning in record.get("warnings", []):
        print(f"warning: {warning}")
    print(format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(bench_cli.run(main))
