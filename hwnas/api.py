"""The Python API: ``hwnas.profile``, ``validate``, ``predict``, ``search``, ``train``, ``export``.

Each function takes the options of its command (``--min-time`` is ``min_time=``), returns a result
object, raises ``HwnasError`` on bad input and prints nothing: progress bars only with
``progress=True``, warnings through ``on_warning`` and in the result. The commands in
``hwnas.cli`` call these same functions and only turn flags into arguments and results into
text, so there is one code path. ``docs/python_api.md`` documents each result's fields.
"""

from __future__ import annotations

import datetime
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from hwnas.arch import Arch, load_arch
from hwnas.data import load_data, natural_space_args
from hwnas.distributed import launch_size, launched
from hwnas.errors import HwnasError
from hwnas.export.artifact import ExportReport, ExportRequest, export_and_verify, output_format
from hwnas.export.drift import DEFAULT_REFERENCES, pick_references
from hwnas.export.int8 import DEFAULT_CALIBRATION_IMAGES, Int8Plan, int8_recipe, plan_int8
from hwnas.files import LOCK_NAME, check_writable, locked, read_json, refuse_overwrite
from hwnas.latency import LatencyPredictor, LatencyTable, latency_model
from hwnas.latency.android import phone_name, phone_options
from hwnas.latency.lookup import default_table_path, expected_meta, find_table, table_space
from hwnas.latency.model import calibration_formula, calibration_record
from hwnas.latency.precision import precision_of_dtype, resolve_precision
from hwnas.latency.profiler import profile_space
from hwnas.latency.protocol import Protocol
from hwnas.latency.quantize import Recipe
from hwnas.latency.runtimes import get_runtime
from hwnas.latency.validate import (
    PROFILE_NETS,
    calibrate_profiled,
    plot_validation,
    store_validation,
    summary,
    validate_table,
)
from hwnas.run_folder import RUNS_ROOT, SEARCH_FILES, TRAIN_FILES, TRAINED, RunFolder, load_weights, recorded_table
from hwnas.search import STRATEGIES
from hwnas.search.budget import parse_latency
from hwnas.search.loop import SearchConfig, SearchRun
from hwnas.spaces import SPACES, Space, get_space, load_space_file, user_space_file
from hwnas.train import TrainConfig, resumed_options, train_child

#: ``search --force`` removes these first, so a rerun never mixes with an old result (nor export with an old run's weights)
RUN_FILES = SEARCH_FILES + TRAIN_FILES
#: every method's own options (``Strategy.knobs``)
METHOD_KNOB_NAMES = tuple(dict.fromkeys(name for cls in STRATEGIES.values() for name in cls.knobs))
#: the search options that are ``SearchConfig`` fields (the rest are set from the space, the table and the budget)
SEARCH_OPTIONS = tuple(
    f.name
    for f in fields(SearchConfig)
    if f.name not in ("method", "table", "budget_ms", "space", "space_args", "space_sha256", "method_options")
)
Warn = Callable[[str], None]


def _ignore(message: str) -> None:
    """The default ``on_warning``: say nothing (the warnings are in the result too)."""


def _space_args(resolution: int | None, num_classes: int | None, in_channels: int | None, width_mult: float | None) -> dict:
    given = {"resolution": resolution, "num_classes": num_classes, "in_channels": in_channels, "width_mult": width_mult}
    return {key: value for key, value in given.items() if value is not None}


def read_space(space: str | Path | None) -> None:
    """Read and register a space file (``FILE.toml``), so that archs of its space build; a built-in name or None does nothing."""
    if space is not None and str(space) not in SPACES:
        load_space_file(space)


# -- profile ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileResult:
    """What ``profile`` measured: the table (loaded), where it is, and what this run added."""

    path: Path
    table: LatencyTable
    entries: int
    measured: int
    measurements: int
    resumed: bool
    wall_s: float
    #: what could not be controlled while measuring the ops (also in the table)
    warnings: list[str]
    #: the calibration on whole nets this call made (``validate``'s report: ``calibrated``, ``wall_s``, ``warnings``,
    #: ...), or None where it kept the table's own or was told not to calibrate
    calibration: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def calibrated(self) -> bool:
        return self.table.calibration is not None

    @property
    def precision(self) -> str:
        """fp32, fp16 or int8: what the table's entries were measured in."""
        return precision_of_dtype(self.table.meta.get("dtype"))

    def to_dict(self) -> dict[str, Any]:
        """What ``hwnas profile --json`` prints."""
        report = self.calibration
        return {
            "table": str(self.path),
            "entries": self.entries,
            "measured": self.measured,
            "measurements": self.measurements,
            "resumed": self.resumed,
            "wall_s": self.wall_s,
            "warnings": self.warnings,
            "calibration": None if report is None else {**summary(report), "wall_s": report["wall_s"]},
            "calibrated": self.calibrated,
        }


def _runtime(name: str, device: str, threads: int | None, precision: str, protocol: Protocol | None = None, **options: Any):
    return get_runtime(name, device=device, threads=threads, precision=precision, protocol=protocol, **options)


def profile(
    space: str | Path = "proxyless",
    *,
    resolution: int | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    width_mult: float | None = None,
    device: str = "cpu",
    runtime: str | None = None,
    batch_size: int = 1,
    threads: int = 1,
    precision: str | None = None,
    fp16: bool = False,
    rounds: int = Protocol.rounds,
    min_time: float = Protocol.min_s,
    warmup_time: float = Protocol.warmup_s,
    output: str | Path | None = None,
    force: bool = False,
    calibration_nets: int = PROFILE_NETS,
    no_validate: bool = False,
    progress: bool = False,
    adb: str | None = None,
    serial: str | None = None,
    runner: str | None = None,
) -> ProfileResult:
    """Measure every candidate op of ``space`` (a built-in name or a space file) into a latency table; resumes one.

    Then time ``calibration_nets`` random whole nets, the fastest and the slowest, and store the calibration
    (unless ``no_validate``); a table calibrated before, with nothing measured now, keeps its own. ``runtime``
    defaults to onnxruntime, or executorch on ``device="android"`` (reached through ``adb``, ``serial``, ``runner``).
    ``precision`` (fp32, fp16, int8; ``fp16=True`` is the older spelling of fp16) is what every entry and net is
    measured in.
    """
    processes = launch_size()
    if processes > 1:  # N processes timing ops at once would measure each other, into one table
        raise HwnasError(
            f"hwnas profile measures in one process, alone on the machine; it was started by torchrun as {processes} "
            "processes: run it without torchrun (`hwnas profile ...`)"
        )
    chosen = get_space(space, **_space_args(resolution, num_classes, in_channels, width_mult))
    runtime = runtime or ("executorch" if device == "android" else "onnxruntime")
    measuring = _runtime(
        runtime,
        device,
        None if threads == 0 else threads,
        resolve_precision(precision, fp16),
        Protocol(warmup_s=warmup_time, min_s=min_time, rounds=rounds),
        **phone_options(device, adb, serial, runner),
    )
    path = (
        Path(output)
        if output
        else default_table_path(
            chosen, device, runtime, measuring.threads, batch_size, measuring.precision, measuring.device_name()
        )
    )
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path, "latency table"):  # one profile writes a table at a time; a second is refused with the first's pid
        done = profile_space(chosen, measuring, path, batch_size, force=force, progress=progress)
        table = LatencyTable.load(path, check_calibration=False)  # a calibration fitted before is fitted again below
        report = None
        if not no_validate and (table.calibration is None or done.measured):
            report = calibrate_profiled(table, chosen, measuring, calibration_nets, progress=progress)
    return ProfileResult(
        path, table, done.entries, done.measured, done.measurements, done.resumed, done.wall_s, done.warnings, report
    )


# -- validate -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationResult:
    """``validate``'s scores of the table's predictions; the calibration is stored in ``table`` (and its file)."""

    table: LatencyTable
    #: the figures ``--json`` prints: mape, p90_relative_error, kendall_tau, noise_floor, calibration, ...
    summary: dict[str, Any]
    #: everything measured: each arch's predicted and measured ms, the fits
    report: dict[str, Any]
    #: the calibration this one replaced, in words (None for the first)
    replaced: str | None
    warnings: list[str]


def validate(
    table: str | Path,
    *,
    n: int = 30,
    rounds: int = Protocol.rounds,
    min_time: float = Protocol.min_s,
    warmup_time: float = Protocol.warmup_s,
    seed: int = 0,
    precision: str | None = None,
    plot: str | Path | None = None,
    force: bool = False,
    allow_foreign_table: bool = False,
    progress: bool = False,
    adb: str | None = None,
    serial: str | None = None,
    runner: str | None = None,
) -> ValidationResult:
    """Measure ``n`` random archs end to end, score the table's predictions and store the calibration in it.

    A phone's table is measured on the phone (``adb``, ``serial``, ``runner``), whose name must match the table's.
    The nets are measured at the table's precision (an INT8 table: quantized as its entries were);
    ``precision``, where given, must be the table's.
    """
    if plot:
        refuse_overwrite(plot, force)
        check_writable(plot)
    loaded = LatencyTable.load(table, check_calibration=False)  # its calibration is fitted again here
    meta = loaded.meta
    space = table_space(loaded)
    table_precision = precision_of_dtype(meta.get("dtype"))
    asked = precision or table_precision
    options = phone_options(meta["device"], adb, serial, runner)
    if not options:  # a phone's name is read from the phone, once it is reached
        loaded.check_matches(
            expected_meta(meta["device"], meta["runtime"], meta["batch_size"], asked, space), allow_foreign_table
        )
    measuring = _runtime(
        meta["runtime"],
        meta["device"],
        meta.get("threads"),
        table_precision,
        Protocol(warmup_s=warmup_time, min_s=min_time, rounds=rounds),
        **options,
    )
    if options:
        expect = expected_meta(meta["device"], meta["runtime"], meta["batch_size"], asked, space, measuring.device_name())
        loaded.check_matches(expect, allow_foreign_table)
    report = validate_table(loaded, space, measuring, n, seed, progress=progress)
    replaced = calibration_line(loaded)
    store_validation(loaded, report)
    try:
        with locked(table, "latency table"):  # not while a profile writes it
            if LatencyTable.load(table, check_calibration=False).entries != loaded.entries:
                raise HwnasError(f"latency table {table} changed while it was validated; validate it again")
            loaded.save()
    except OSError as error:  # e.g. a shipped table inside a read-only site-packages
        raise HwnasError(
            f"cannot store the calibration in {table}: {error}; copy the table to ./latency_tables/ and validate the copy"
        ) from None
    if plot:
        plot_validation(report, plot, f"{Path(table).name}\n{meta.get('device_name')}, {meta['runtime']}")
    return ValidationResult(loaded, summary(report), report, replaced, list(report["warnings"]))


def calibration_line(table: LatencyTable) -> str | None:
    """The table's calibration in words, with when it was fitted and how noisy the machine was then."""
    fit = table.calibration
    if not fit:
        return None
    if not isinstance(fit, dict) or not all(isinstance(fit.get(k), (int, float)) for k in ("a", "b")):
        return f"{fit!r} (not a calibration)"
    floor = (table.validation or {}).get("noise_floor", {}).get("mape")
    noise = f", noise floor {floor:.1%}" if floor is not None else ""
    return f"{calibration_formula(fit)} [{fit.get('fit', 'fit')}], fitted {fit.get('fitted', '?')}{noise}"


# -- show_table -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableInfo:
    """A table and the extremes of its space as it predicts them (what ``hwnas tables show`` prints)."""

    table: LatencyTable
    space: Space
    fastest: Arch
    fastest_ms: float
    slowest: Arch
    slowest_ms: float


def show_table(table: str | Path) -> TableInfo:
    """Load ``table`` and find the fastest and the slowest net of its space (calibrated where it was validated)."""
    loaded = LatencyTable.load(table)
    space = table_space(loaded)
    model = latency_model(loaded, space)
    (fastest, fastest_ms), (slowest, slowest_ms) = model.fastest(), model.slowest()
    return TableInfo(loaded, space, fastest, fastest_ms, slowest, slowest_ms)


# -- predict ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    arch: Arch
    table: LatencyTable

    @property
    def calibrated(self) -> bool:
        """Whether ``latency_ms`` is calibrated on whole nets (else a raw sum of the table's entries)."""
        return self.table.calibration is not None


def predict(arch: str | Path | Arch, *, table: str | Path, space: str | Path | None = None) -> Prediction:
    """The predicted latency of ``arch`` (an Arch, a JSON file or a compact string) under ``table``.

    A table of a space file brings its copy of the file; ``space`` (a space file) is needed only to
    check that the arch's file is the table's.
    """
    loaded = LatencyTable.load(table)
    measured_space = table_space(loaded)
    read_space(space)
    chosen = arch.validated() if isinstance(arch, Arch) else load_arch(arch)
    arch_space = chosen.build_space()
    if chosen.space != measured_space.name or arch_space.args != measured_space.args:
        raise HwnasError(
            f"arch is for {chosen.space} {chosen.space_args}, table {table} for {measured_space.name} "
            f"{measured_space.args.to_dict()}"
        )
    given, measured = user_space_file(arch_space), user_space_file(measured_space)
    if given is not None and measured is not None and given.sha256 != measured.sha256:
        raise HwnasError(
            f"space file {given.source} (sha256 {given.sha256}) is not the space file table {table} measured "
            f"(sha256 {measured.sha256}); leave it out to use the table's copy"
        )
    return Prediction(latency_model(loaded, measured_space).predict(chosen), chosen, loaded)


# -- search -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchResult:
    """A finished search: its run folder and the derived child (the run's ``result.json`` in ``result``)."""

    run: Path
    arch: Arch
    predicted_ms: float
    budget_ms: float
    aim_ms: float
    supernet_val_acc: float
    child_val_acc: float
    result: dict[str, Any] = field(repr=False)
    warnings: list[str] = field(default_factory=list)


def default_out(method: str) -> Path:
    """A new run folder's default: ``runs/<time>-<method>``."""
    return RUNS_ROOT / f"{time.strftime('%Y%m%d-%H%M%S')}-{method}"


def _check_out(out: Path, force: bool) -> None:
    """Refuse an --out that holds a run, unless --force (nothing is removed here: the caller does once it holds the lock)."""
    if out.exists() and not out.is_dir():
        raise HwnasError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(path.name != LOCK_NAME for path in out.iterdir()) and not force:
        raise HwnasError(f"--out {out} is not empty; pass --resume {out} to continue that run or --force to start over in it")


def _clear_out(out: Path) -> None:
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


def search_target(
    table: str | Path | None, device: str | None, runtime: str | None, precision: str | None = None
) -> dict[str, str]:
    """The target a search's table must describe: ``device``, ``runtime`` and ``precision`` as given, else the ``table``'s own.

    The target is where the child will run; the search itself trains here (on the GPU for a
    ``cuda`` target where torch sees one, else on the CPU). A table given alone names its target,
    so a phone's table (device ``android``) is searched without naming the phone, and an INT8
    table as INT8 (a precision asked for that is not the table's is refused); a table of
    another machine's CPU or GPU is still foreign (its ``device_name`` is not this machine's).
    Without a table, the target is this machine's CPU with ONNX Runtime, or a phone with ExecuTorch
    for ``device="android"``, whose table must then be given (a search does not reach the phone).
    """
    meta: dict[str, Any] = {}
    if table is not None and (device is None or runtime is None or precision is None):
        try:
            meta = read_json(table).get("meta", {})
        except (HwnasError, AttributeError):
            meta = {}  # unreadable or not a table: SearchRun says what is wrong with it
    device = device or meta.get("device") or SearchConfig.device
    runtime = runtime or meta.get("runtime") or ("executorch" if device == "android" else SearchConfig.runtime)
    if device == "android" and table is None:
        raise HwnasError(
            "--device android: name the phone's table with --table (hwnas profile --device android -o phone.json makes one); "
            "a search trains here and does not reach the phone"
        )
    try:
        precision = precision or precision_of_dtype(meta.get("dtype"))
    except HwnasError:
        precision = SearchConfig.precision  # a dtype of no precision: the table check names it
    return {"device": device, "runtime": runtime, "precision": precision}


def search(
    latency: str | float | None = None,
    *,
    method: str = "dsnas",
    space: str | Path = "proxyless",
    resolution: int | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    width_mult: float | None = None,
    table: str | Path | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    force: bool = False,
    progress: bool = False,
    on_warning: Warn = _ignore,
    **options: Any,
) -> SearchResult | None:
    """Search ``space`` for the most accurate net whose predicted latency meets ``latency`` (``"80ms"`` or a number of ms).

    ``options``: the search options of ``hwnas search`` (``data``, ``epochs``, ``batch_size``, ``steps_per_epoch``,
    ``lr``, ``margin``, ``seed``, ...; ``SearchConfig``'s defaults) and the method's own (``tau0``, ...). With ``resume``
    (a run folder) nothing else is given: the run continues with the options it saved. Under torchrun, ranks other
    than 0 return None.
    """
    warned: list[str] = []

    def warn(message: str | None) -> None:
        if message:
            warned.append(message)
            on_warning(message)

    if resume is not None:
        folder = Path(resume)
        config = SearchConfig.load(folder)
        with launched(config.device) as dist, ExitStack() as stack:
            if dist.is_main:  # one writer per run folder: a second resume (or a --force search) is refused
                stack.enter_context(locked(folder, "run folder"))
            result = SearchRun(config, folder, progress=progress, dist=dist).run(resume=True)
    else:
        if latency is None:
            raise HwnasError("--latency is required (e.g. --latency 80ms), unless you --resume a run")
        unknown = sorted(set(options) - set(SEARCH_OPTIONS) - set(METHOD_KNOB_NAMES))
        if unknown:
            raise HwnasError(
                f"search has no option {', '.join(unknown)}; its options: {', '.join(SEARCH_OPTIONS + METHOD_KNOB_NAMES)}"
            )
        knobs = {name: options.pop(name) for name in METHOD_KNOB_NAMES if name in options}
        if method not in STRATEGIES:
            raise HwnasError(f"unknown method {method!r}; known: {', '.join(STRATEGIES)}")
        foreign = [
            f"--{name.replace('_', '-')}"
            for name, value in knobs.items()
            if value is not None and name not in STRATEGIES[method].knobs
        ]
        if foreign:
            raise HwnasError(f"method {method} has no option {', '.join(foreign)}")
        options.update(search_target(table, options.get("device"), options.get("runtime"), options.get("precision")))
        data = options.get("data", SearchConfig.data)
        built = get_space(space, **{**natural_space_args(data), **_space_args(resolution, num_classes, in_channels, width_mult)})
        if table is None:
            table = find_table(
                built,
                options["device"],
                options["runtime"],
                options.get("threads", SearchConfig.threads),
                1,
                options["precision"],
            )
        source = user_space_file(built)
        config = SearchConfig(
            method=method,
            table=str(table),
            budget_ms=parse_latency(str(latency)),  # a bare number is milliseconds
            space=str(space),
            space_args=built.args.to_dict(),
            space_sha256=source.sha256 if source else None,
            method_options={k: v for k, v in knobs.items() if v is not None},
            **options,
        )
        folder = Path(out) if out else default_out(method)
        with launched(config.device) as dist, ExitStack() as stack:
            if dist.is_main:
                check_writable(folder, folder=True)
                _check_out(folder, force)
            # checks the options, the table, the budget and the data before anything is written
            run = SearchRun(config, folder, progress=progress, dist=dist)
            if dist.is_main:
                folder.mkdir(parents=True, exist_ok=True)
                stack.enter_context(locked(folder, "run folder"))  # two searches into one --out: the second is refused
                _check_out(folder, force)  # again, under the lock: another run may have filled it meanwhile
                _clear_out(folder)
                warn(run.target.clamp_note())
            result = run.run()
    if not dist.is_main:
        return None
    return SearchResult(
        folder,
        RunFolder.open(folder).arch(),
        result["predicted_ms"],
        result["budget_ms"],
        result["aim_ms"],
        result["supernet_val_acc"],
        result["child_val_acc"],
        result,
        warned,
    )


# -- train --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    """A finished training: the folder holding ``trained.pt``, the arch and its validation accuracy."""

    folder: Path
    arch: Arch
    val_acc: float
    #: train_result.json: the accuracy, the epochs' history, the options
    result: dict[str, Any] = field(repr=False)


def train(
    *,
    run: str | Path | None = None,
    arch: str | Path | Arch | None = None,
    space: str | Path | None = None,
    from_scratch: bool = False,
    weights: str | Path | None = None,
    out: str | Path | None = None,
    data: str | None = None,
    device: str = "cpu",
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    **options: Any,
) -> TrainResult | None:
    """Fine-tune a search run's child in place (``run``, default the newest) or train ``arch`` into ``out``.

    ``options``: ``TrainConfig``'s fields (``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``label_smoothing``,
    ``seed``, ``workers``, ``bn_batches``). ``data`` defaults to digits, or to the data a resumed training started on.
    ``on_epoch(row)`` is called after each epoch with its history row and ``epochs``, the number of epochs. Under torchrun, ranks other than 0 return None.
    """
    unknown = sorted(set(options) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise HwnasError(
            f"train has no option {', '.join(unknown)}; its options: {', '.join(f.name for f in fields(TrainConfig))}"
        )
    config = TrainConfig(**options)
    weights = Path(weights) if weights else None
    if arch is not None:
        if run:
            raise HwnasError("give --run or --arch, not both")
        if from_scratch and weights:
            raise HwnasError("--from-scratch and --weights: give one of them, not both")
        if not (from_scratch or weights or resume):
            raise HwnasError("with --arch, say where to start: --from-scratch or --weights FILE")
        read_space(space)
        chosen = arch.validated() if isinstance(arch, Arch) else load_arch(arch)
        torch.manual_seed(config.seed)  # --from-scratch: the initial weights are --seed's, whatever ran before in this process
        model = chosen.build()
        if weights:
            load_weights(model, weights)
        folder = Path(out) if out else RUNS_ROOT / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-train"
    else:
        if from_scratch or weights or out or space:
            raise HwnasError("--from-scratch, --weights, --out and --space go with --arch; a run is fine-tuned in place")
        opened = RunFolder.open(run) if run else RunFolder.newest()
        chosen, model, _ = opened.child()
        folder = opened.path
    if (folder / TRAINED).exists() and not (resume or force):
        raise HwnasError(
            f"{folder} already holds a trained child ({TRAINED}); pass --resume to continue or --force to train again"
        )
    if resume:  # refused here, before the data is loaded; the data and its split are the ones the training started with
        config, started_on = resumed_options(folder)
        if started_on is not None and data is not None and data != started_on:
            raise HwnasError(f"--resume continues a training on the data it started with ({started_on}); leave out --data {data}")
        data = started_on or data
    data = data or "digits"
    if arch is not None and not resume and folder.exists() and any(p.name != LOCK_NAME for p in folder.iterdir()) and not force:
        raise HwnasError(f"{folder} exists and is not empty; pass --force to write into it")
    space_args = chosen.space_args
    splits = load_data(data, space_args["resolution"], space_args["in_channels"], config.seed)
    if splits.num_classes != space_args["num_classes"]:
        raise HwnasError(f"data {data!r} has {splits.num_classes} classes but the arch's net has {space_args['num_classes']}")
    with launched(device) as dist, ExitStack() as stack:
        if dist.is_main:  # one writer per run folder
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(locked(folder, "run folder"))
        result = train_child(
            chosen,
            model,
            splits,
            folder,
            config,
            resume=resume,
            progress=progress,
            on_epoch=(lambda row: on_epoch({**row, "epochs": config.epochs})) if on_epoch and dist.is_main else None,
            dist=dist,
            device=device,
        )
    if not dist.is_main:
        return None
    return TrainResult(folder, chosen, result["val_acc"], result)


# -- export -------------------------------------------------------------------------------------------------------------
def prediction_model(
    arch: Arch,
    request: ExportRequest,
    table: str | None,
    allow_foreign: bool,
    uncalibrated: bool = False,
    name: str | None = None,
) -> LatencyPredictor | None:
    """The latency model of ``table`` (else of this target's table, if one exists) for the arch's space.

    A table without a calibration is refused unless ``uncalibrated`` (its prediction is then a raw sum).
    ``name``: the device's name where it was read from the device (a phone's).
    """
    space = arch.build_space()
    if table is None:
        try:
            table = str(
                find_table(
                    space, request.device, request.runtime, request.threads, request.batch_size, request.precision, name=name
                )
            )
        except HwnasError:
            return None
    expect = expected_meta(request.device, request.runtime, request.batch_size, request.precision, space, name)
    loaded = LatencyTable.load(table, expect=expect, allow_foreign=allow_foreign)
    loaded.require_calibration(uncalibrated)
    return latency_model(loaded, space)


def _run_table(run: RunFolder, request: ExportRequest) -> str | None:
    """The table the search used, as it was then (``recorded_table``), if it was made for the runtime, device and
    precision measured now; None for another target. A changed or lost table is refused: ``--table`` chooses another."""
    config = run.config()
    same_target = (
        config.get("runtime") == request.runtime
        and config.get("device") == request.device
        and config.get("precision", "fp32") == request.precision
    )
    path, sha256 = config.get("table"), config.get("table_sha256")
    if not (same_target and isinstance(path, str) and path):
        return None
    if not isinstance(sha256, str):  # a run from before tables were recorded by their hash
        return path if Path(path).exists() else None
    other = f"pass --table {path} to predict with the table as it is now"
    found = recorded_table(run.path, path, sha256, other)
    if str(found) != path:
        warnings.warn(f"the run's table {path} is gone: predicting with the run's copy {found} (the same bytes)", stacklevel=2)
    return str(found)


def export(
    output: str | Path,
    *,
    run: str | Path | None = None,
    arch: str | Path | Arch | None = None,
    space: str | Path | None = None,
    weights: str | Path | None = None,
    runtime: str | None = None,
    device: str = "cpu",
    threads: int = 1,
    precision: str | None = None,
    fp16: bool = False,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    calibration_method: str = Recipe.method,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    budget: str | float | None = None,
    table: str | Path | None = None,
    allow_foreign_table: bool = False,
    uncalibrated: bool = False,
    rounds: int = 3,
    references: int = DEFAULT_REFERENCES,
    force: bool = False,
    adb: str | None = None,
    serial: str | None = None,
    runner: str | None = None,
) -> ExportReport:
    """Export a child net (a run's, default the newest, or ``arch``'s), measure the artifact and judge it against the budget.

    The report (``verdict.verdict`` is ``"PASS"`` or ``"FAIL"``) is saved beside the artifact as ``OUTPUT.report.json``;
    its ``details["source"]["calibration"]`` is None where the prediction is a raw sum (an uncalibrated table).
    The output's suffix chooses the format (``.onnx``, ``.engine``, ``.pte``) and, where ``runtime`` is None, the
    runtime that measures it; ``device="android"`` measures a ``.pte`` on a phone (``adb``, ``serial``, ``runner``).
    ``precision="int8"`` quantizes the run's child on ``calibration_images`` training images of its data set and
    adds ``details["quantization"]`` and ``details["accuracy"]`` (float and INT8 validation accuracy, top-1 agreement).
    """
    if run and arch is not None:
        raise HwnasError("give --run or --arch, not both")
    if (weights or space) and arch is None:
        raise HwnasError("--weights and --space go with --arch (a run brings its own weights and space file)")
    path_out, runtime = output_format(Path(output), runtime)
    options = phone_options(device, adb, serial, runner)
    precision = resolve_precision(precision, fp16)
    if precision == "int8":
        if arch is not None:
            raise HwnasError(
                "--precision int8 calibrates on the images of a run's data set: export a run (--run RUN), not --arch"
            )
        _runtime(runtime, device, threads, precision, **options)  # no INT8 path here: the error says which runtime has one
        recipe = int8_recipe(path_out, calibration_method)
    request = ExportRequest(
        path_out,
        runtime,
        device,
        threads,
        precision=precision,
        batch_size=batch_size,
        dynamic_batch=dynamic_batch,
        rounds=rounds,
        force=force,
        runtime_options=options,
    )
    for path in request.outputs():
        refuse_overwrite(path, force)
        check_writable(path)
    budget_ms = None if budget is None else parse_latency(str(budget))  # a bare number is milliseconds
    source: dict[str, Any]
    if arch is not None:
        read_space(space)
        chosen = arch.validated() if isinstance(arch, Arch) else load_arch(arch)
        model = chosen.build()
        if weights:
            load_weights(model, weights)
        source = {"arch": chosen.to_compact(), "weights": str(weights) if weights else None}
        run_table = None if table is None else str(table)
    else:
        opened = RunFolder.open(run) if run else RunFolder.newest()
        chosen, model, weights_path = opened.child()
        budget_ms = budget_ms if budget is not None else opened.result().get("budget_ms")
        source = {"run": str(opened.path), "arch": chosen.to_compact(), "weights": str(weights_path)}
        if table is not None:  # an explicit choice over the run's own table: the report names both
            recorded = opened.config()
            source["table_given"] = True
            source["run_table"] = {"path": recorded.get("table"), "sha256": recorded.get("table_sha256")}
        run_table = str(table) if table is not None else _run_table(opened, request)
        uncalibrated = uncalibrated or bool(opened.config().get("uncalibrated"))
    int8: Int8Plan | None = None
    if precision == "int8":  # read the calibration images and the validation split now: before anything is written
        int8 = plan_int8(opened, chosen.space_args, calibration_images, batch_size, recipe)
    latency = prediction_model(chosen, request, run_table, allow_foreign_table, uncalibrated, phone_name(options, threads))
    predicted_ms = None if latency is None else latency.predict(chosen)
    source["table"] = None if latency is None else str(latency.table.path)
    source["table_sha256"] = None if latency is None else latency.table.sha256
    source["calibration"] = None if latency is None else calibration_record(latency.table)
    reference_nets = [] if latency is None else pick_references(latency, predicted_ms, references)
    space_built: Space = chosen.build_space()
    return export_and_verify(model, space_built.input_shape, request, budget_ms, predicted_ms, source, reference_nets, int8)


__all__ = [
    "ExportReport",
    "Prediction",
    "ProfileResult",
    "SearchResult",
    "TableInfo",
    "TrainResult",
    "ValidationResult",
    "export",
    "predict",
    "profile",
    "read_space",
    "search",
    "show_table",
    "train",
    "validate",
]
