"""ExecuTorch: a module lowered to a ``.pte`` program with the XNNPACK delegate, timed in process or on a phone.

Lowering follows ExecuTorch's documented path: ``torch.export`` -> ``to_edge_transform_and_lower``
with the ``XnnpackPartitioner`` -> ``to_executorch``, in float32. The partitioner hands XNNPACK
what it supports; anything else (a ShuffleNet channel split ``x[:, 0::2]``) stays in the
portable kernels. Every lowered item records whether the delegate took all of it
(``delegated``) and the ops it left out (``portable_ops``); the profiler stores both in the
table entry, ``hwnas tables show`` and ``hwnas tables validate`` name the partly delegated ones.

In process (``--device cpu``) a program runs through the wheel's pybindings, timed with the
host clock per call (that includes ~0.1 ms of Python call per run, the same for every entry,
and taken off the parts like every runtime's fixed cost by the table's ``overhead`` entry).
Threads: XNNPACK uses ExecuTorch's own process-wide thread pool, which Python can resize only
through a private call (``set_threads``); ``threads=N`` sizes it when the runtime is created,
``threads=None`` leaves the pool as it is (one thread per core). Unlike the other runtimes the
size is not restored afterwards (see ``set_threads``).

On a phone (``--device android``) the same programs go to the device over adb and run under
``executor_runner`` (``hwnas.latency.android``).

Programs are cached on the host by what they compute (``lowered_program``): the module's classes
(their source), its hyper-parameters, the shapes of its weights, the input shape and the versions
of torch and executorch. Weights are not part of the key (a profile builds every op with fresh
random weights; a dense float32 kernel takes the same time whatever they hold), so a cached
program serves timing only; an exported artifact (``hwnas export model.pte``) is always lowered
from its own weights.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError
from hwnas.files import write_bytes_atomic, write_json_atomic
from hwnas.latency.protocol import Runner, Timing
from hwnas.latency.runtime_base import Runtime

#: how to get the optional dependency (named in every error that lacks it)
INSTALL = "pip install -e '.[mobile]'"
DELEGATE = "XnnpackPartitioner"
#: where lowered programs are cached (override with $HWNAS_CACHE)
CACHE_ENV = "HWNAS_CACHE"
#: part of every cache key: bumped when what is cached beside a program changes
CACHE_FORMAT = 2


def import_executorch():
    """The ``executorch`` package, or an error naming the install command."""
    try:
        import executorch
        import executorch.exir  # noqa: F401
        from executorch.extension.pybindings import portable_lib  # noqa: F401
    except ImportError as error:
        raise HwnasError(f"the executorch runtime needs the executorch package: {INSTALL} ({error})") from None
    return executorch


def executorch_version() -> str:
    import_executorch()
    from executorch.version import __version__

    return __version__


@dataclass(frozen=True)
class Lowered:
    """A ``.pte`` program and how much of it XNNPACK took."""

    program: bytes
    portable_ops: tuple[str, ...]  # ops left to the portable kernels, one name per node

    @property
    def delegated(self) -> bool:
        return not self.portable_ops

    def info(self) -> dict[str, Any]:
        """What a table entry records about the program (beside ``ms``, ``p10``, ``p90``, ``n``)."""
        return {"delegated": self.delegated, "portable_ops": sorted(set(self.portable_ops))}


def lower(module: Any, input_shape: tuple[int, ...]) -> Lowered:
    """``module`` (eval mode, float32) at ``input_shape`` (batch included) as an XNNPACK-delegated ``.pte``."""
    import_executorch()
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module = module.eval().float()
    example = (torch.randn(*input_shape),)
    try:
        with torch.no_grad():
            exported = torch.export.export(module, example)
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        outside = tuple(
            _op_name(node.target)
            for node in edge.exported_program().graph_module.graph.nodes
            if node.op == "call_function"
            and node.target is not operator.getitem
            and "executorch_call_delegate" not in str(node.target)
        )
        program = edge.to_executorch().buffer
    except HwnasError:
        raise
    except Exception as error:  # torch.export and the lowering raise many types; the message says what failed
        raise HwnasError(f"ExecuTorch could not lower {type(module).__name__} at {list(input_shape)}: {error}") from None
    return Lowered(bytes(program), outside)


def _op_name(target: Any) -> str:
    """``aten.slice_copy.Tensor`` from an edge op (its ``str`` carries the whole schema)."""
    text = str(target)
    if text.startswith("<EdgeOpOverload: "):
        return text.removeprefix("<EdgeOpOverload: ").split(">", 1)[0]
    return text


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hwnas") / "executorch"


def program_key(module: Any, input_shape: tuple[int, ...]) -> str:
    """What a lowered program depends on except the weights' values (see the module docstring)."""
    import torch

    described = []
    for name, sub in module.named_modules():
        hyper = {
            key: value
            for key, value in vars(sub).items()
            if not key.startswith("_") and key != "training" and isinstance(value, (int, float, str, bool, tuple, type(None)))
        }
        described.append([name, type(sub).__module__, type(sub).__qualname__, _class_source_hash(type(sub)), repr(hyper)])
    tensors = [[name, list(t.shape), str(t.dtype)] for name, t in module.state_dict().items()]
    text = json.dumps([CACHE_FORMAT, described, tensors, list(input_shape), torch.__version__, executorch_version(), DELEGATE])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@functools.cache
def _class_source_hash(cls: type) -> str:
    try:
        return hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()[:16]
    except (OSError, TypeError):  # built-in or compiled classes: their name and version say enough
        return ""


def lowered_program(module: Any, input_shape: tuple[int, ...]) -> Lowered:
    """``lower(module, input_shape)`` through the host cache (for timing only: weights are not in the key)."""
    key = program_key(module, input_shape)
    folder = cache_dir()
    program, info = folder / f"{key}.pte", folder / f"{key}.json"
    try:
        return Lowered(program.read_bytes(), tuple(json.loads(info.read_text())["portable_ops"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    lowered = lower(module, input_shape)
    try:
        write_bytes_atomic(program, lowered.program)
        write_json_atomic(info, {"portable_ops": list(lowered.portable_ops)})
    except HwnasError:  # an unwritable cache costs time, not results
        pass
    return lowered


def load_program(program: bytes | str | Path):
    """The program's ``forward`` loaded by the wheel's runtime (pybindings).

    The loaded program does not copy ``program``'s bytes: the caller keeps them alive while it runs.
    """
    import_executorch()
    from executorch.extension.pybindings import portable_lib

    data = program if isinstance(program, bytes) else _read(program)
    try:
        return portable_lib._load_for_executorch_from_buffer(data)
    except Exception as error:  # the pybindings raise RuntimeError for a bad program
        raise HwnasError(f"ExecuTorch cannot load {'the program' if isinstance(program, bytes) else program}: {error}") from None


def _read(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise HwnasError(f".pte file {path} does not exist")
    return path.read_bytes()


def set_threads(threads: int) -> None:
    """Size ExecuTorch's process-wide thread pool (XNNPACK runs on it) before programs are loaded.

    Python can resize the pool only through a private call, and resizing it under a loaded
    XNNPACK program crashed the next run of that program (a segfault here, with executorch
    1.5.1: measured). So the pool is sized when a runtime is created, before it loads anything,
    and left so; programs loaded earlier in the process must not run afterwards.
    """
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


def run_program(loaded: Any, inputs: Sequence[Any]) -> list[Any]:
    """Run a loaded program's ``forward`` on ``inputs`` (torch tensors); its outputs."""
    return list(loaded.forward(tuple(inputs)))


class ExecuTorchRuntime(Runtime):
    """ExecuTorch with the XNNPACK delegate, float32: in this process (``cpu``) or on a phone over adb (``android``).

    ``adb``, ``serial`` and ``runner`` (see ``hwnas.latency.android.AndroidTarget``) apply to ``android`` only.
    """

    name = "executorch"
    devices = ("cpu", "android")

    def __init__(
        self, *args: Any, adb: str | None = None, serial: str | None = None, runner: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.fp16:
            raise HwnasError("the executorch runtime measures float32 programs (the XNNPACK delegate's float path); drop --fp16")
        self.target = None
        if self.device == "android":  # adb and the phone are checked first: their errors say more than a missing package
            from hwnas.latency.android import AndroidTarget

            self.target = AndroidTarget(adb, serial, runner, self.threads, self.protocol)
        elif any(value is not None for value in (adb, serial, runner)):
            raise HwnasError("--adb, --serial and --runner go with --device android")
        import_executorch()
        if self.target is None and self.threads is not None:
            set_threads(self.threads)

    # -- preparing ------------------------------------------------------------------------
    def prepare_module(self, module: Any, input_shape: tuple[int, ...]) -> Runner:
        lowered = lowered_program(module, tuple(input_shape))
        runner = self.prepare_pte(lowered.program, input_shape)
        runner.info.update(lowered.info())
        return runner

    def prepare_pte(self, program: bytes | str | Path, input_shape: tuple[int, ...]) -> Runner:
        """A runner of a ``.pte`` program (bytes or a file) at ``input_shape``."""
        data = program if isinstance(program, bytes) else _read(program)
        if self.target is not None:
            return self.target.prepare(data, input_shape)
        import torch

        loaded = load_program(data)
        example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        inputs = (example,)
        try:
            loaded.forward(inputs)  # a wrong shape fails here, not in the middle of a measurement
        except Exception as error:
            raise HwnasError(f"the ExecuTorch program does not run at input shape {list(input_shape)}: {error}") from None

        def run() -> None:
            loaded.forward(inputs)

        run.program = data  # the loaded program reads its weights from this buffer: it must live as long as the runner
        return Runner(run, label="forward")

    def prepare_onnx(self, onnx_model: bytes | str | Path, input_shape: tuple[int, ...]) -> Runner:
        raise HwnasError("the executorch runtime runs .pte programs, not ONNX files; use --runtime onnxruntime for .onnx")

    # -- measuring ------------------------------------------------------------------------
    def measure(
        self,
        runners: Sequence[Runner],
        rounds: int | None = None,
        on_measured: Callable[[int, int, Timing], None] | None = None,
        rounds_done: Sequence[int] | None = None,
    ) -> list[Timing]:
        if self.target is not None:
            return self.target.measure(runners, rounds, on_measured, rounds_done)
        return super().measure(runners, rounds, on_measured, rounds_done)

    # -- describing -----------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        meta = {
            "runtime": self.name,
            "runtime_version": executorch_version(),
            "provider": "xnnpack",
            "delegate": DELEGATE,
            "device": self.device,
            "threads": self.threads,
            "dtype": self.dtype,
        }
        if self.target is not None:
            meta.update(self.target.meta())
        return meta

    def device_name(self) -> str:
        return self.target.device_name if self.target is not None else super().device_name()

    def warnings(self) -> list[str]:
        return self.target.warnings() if self.target is not None else super().warnings()


def partly_delegated(entries: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Entries XNNPACK did not take whole: key -> the ops left to the portable kernels."""
    return {key: list(entry.get("portable_ops") or ["?"]) for key, entry in entries.items() if entry.get("delegated") is False}


def delegation_warnings(entries: dict[str, dict[str, Any]], shown: int = 3) -> list[str]:
    """One line naming the partly delegated entries of a table (none: no line)."""
    partly = partly_delegated(entries)
    if not partly:
        return []
    ops = sorted({op for names in partly.values() for op in names})
    names = ", ".join(list(partly)[:shown]) + (f" and {len(partly) - shown} more" if len(partly) > shown else "")
    return [
        f"{len(partly)} of {len(entries)} entries are only partly delegated to XNNPACK ({names}): "
        f"{', '.join(ops)} run in the portable kernels, which a phone runs the same way (see docs/mobile.md)"
    ]
