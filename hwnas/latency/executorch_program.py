"""ExecuTorch programs: lowering a module to a ``.pte`` with the XNNPACK delegate, the program cache, loading and running.

Shared by the in-process runtime (``hwnas.latency.executorch_runtime``), the phone target
(``hwnas.latency.android``) and the ``.pte`` export (``hwnas.export.pte_file``); the lowering path
and the cache key are described in ``hwnas.latency.executorch_runtime``.
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

import torch

from hwnas.errors import HwnasError
from hwnas.files import write_bytes_atomic, write_json_atomic

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
    #: quantize / dequantize ops inside the XNNPACK delegate, one name per node (none in a float program)
    quantized_ops: tuple[str, ...] = ()

    @property
    def delegated(self) -> bool:
        return not self.portable_ops

    def info(self) -> dict[str, Any]:
        """What a table entry records about the program (beside ``ms``, ``p10``, ``p90``, ``n``)."""
        info: dict[str, Any] = {"delegated": self.delegated, "portable_ops": sorted(set(self.portable_ops))}
        if self.quantized_ops:
            info["delegated_quantized_ops"] = {op: self.quantized_ops.count(op) for op in sorted(set(self.quantized_ops))}
        return info


def lower(module: Any, input_shape: tuple[int, ...]) -> Lowered:
    """``module`` (eval mode, float32) at ``input_shape`` (batch included) as an XNNPACK-delegated ``.pte``."""
    import_executorch()
    module = module.eval().float()
    example = (torch.randn(*input_shape),)
    try:
        with torch.no_grad():
            exported = torch.export.export(module, example)
    except Exception as error:  # torch.export raises many types; the message says what failed
        raise HwnasError(f"ExecuTorch could not lower {type(module).__name__} at {list(input_shape)}: {error}") from None
    return lower_exported(exported, f"{type(module).__name__} at {list(input_shape)}")


def lower_exported(exported: Any, what: str) -> Lowered:
    """An exported program (``torch.export``; float, or quantized by ``hwnas.latency.executorch_quantize``) as a ``.pte``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        outside = tuple(
            _op_name(node.target)
            for node in edge.exported_program().graph_module.graph.nodes
            if node.op == "call_function"
            and node.target is not operator.getitem
            and "executorch_call_delegate" not in str(node.target)
        )
        inside = tuple(
            _op_name(node.target)
            for delegate in edge.exported_program().graph_module.children()
            if hasattr(delegate, "original_module")  # a LoweredBackendModule: the graph handed to XNNPACK
            for node in delegate.original_module.graph.nodes
            if node.op == "call_function" and _op_name(node.target).startswith("quantized_decomposed.")
        )
        program = edge.to_executorch().buffer
    except HwnasError:
        raise
    except Exception as error:  # the lowering raises many types; the message says what failed
        raise HwnasError(f"ExecuTorch could not lower {what}: {error}") from None
    return Lowered(bytes(program), outside, inside)


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


def lowered_program(
    module: Any, input_shape: tuple[int, ...], lowering: Callable[[Any, tuple[int, ...]], Lowered] = lower, variant: str = ""
) -> Lowered:
    """``lowering(module, input_shape)`` (default ``lower``) through the host cache (for timing only: weights are not in the key).

    ``variant`` names another lowering than the float one (``"int8"``) and is part of the key.
    """
    key = program_key(module, input_shape)
    if variant:
        key = hashlib.sha256(f"{key}:{variant}".encode()).hexdigest()[:32]
    folder = cache_dir()
    program, info = folder / f"{key}.pte", folder / f"{key}.json"
    try:
        recorded = json.loads(info.read_text())
        return Lowered(program.read_bytes(), tuple(recorded["portable_ops"]), tuple(recorded.get("quantized_ops", ())))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    lowered = lowering(module, input_shape)
    try:
        write_bytes_atomic(program, lowered.program)
        write_json_atomic(info, {"portable_ops": list(lowered.portable_ops), "quantized_ops": list(lowered.quantized_ops)})
    except HwnasError:  # an unwritable cache costs time, not results
        pass
    return lowered


def load_program(program: bytes | str | Path):
    """The program's ``forward`` loaded by the wheel's runtime (pybindings).

    The loaded program does not copy ``program``'s bytes: the caller keeps them alive while it runs.
    """
    import_executorch()
    from executorch.extension.pybindings import portable_lib

    data = program if isinstance(program, bytes) else read_program(program)
    try:
        return portable_lib._load_for_executorch_from_buffer(data)
    except Exception as error:  # the pybindings raise RuntimeError for a bad program
        raise HwnasError(f"ExecuTorch cannot load {'the program' if isinstance(program, bytes) else program}: {error}") from None


def read_program(path: str | Path) -> bytes:
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


def pool_threads() -> int:
    """How many threads ExecuTorch's process-wide pool has now (1: XNNPACK runs every op on the calling thread)."""
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())


def run_program(loaded: Any, inputs: Sequence[Any]) -> list[Any]:
    """Run a loaded program's ``forward`` on ``inputs`` (torch tensors); its outputs."""
    return list(loaded.forward(tuple(inputs)))
