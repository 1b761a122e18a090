"""A run folder: the names of its files, and reading its arch, options, result and the child's weights.

``hwnas search`` writes the folder, ``hwnas train`` adds fine-tuned weights to it, and
``hwnas export`` reads it. Weights are state dicts, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.arch import Arch, load_arch
from hwnas.errors import HwnasError
from hwnas.files import file_sha256, load_json, load_torch, write_bytes_atomic, write_text_atomic
from hwnas.spaces import Space, space_from_text, user_space_file
from hwnas.spaces.space_file import sha256_of

RUNS_ROOT = Path("runs")
# the files of a run folder: ``hwnas search`` writes SEARCH_FILES (SCORES and SELECTION_PLOT: one-shot methods only; SPACE_COPY:
# a space file's space only); ``hwnas train`` TRAIN_FILES (and ARCH, SPACE_COPY, for --arch)
ARCH, CONFIG, RESULT, HISTORY, CHECKPOINT = "arch.json", "config.json", "result.json", "history.jsonl", "checkpoint.pt"
CHILD, SUPERNET, PLOT, REPORT = "child.pt", "supernet.pt", "search.png", "report.md"
SCORES, SELECTION_PLOT = "scores.jsonl", "selection.png"
#: the copy of a user's space file a run keeps, so that it stays reproducible after the file changes
SPACE_COPY = "space.toml"
#: the copy of the run's latency table, byte for byte (where it is at most ``TABLE_COPY_LIMIT`` bytes)
TABLE_COPY, TABLE_COPY_LIMIT = "table.json", 4 << 20
TRAINED, TRAIN_RESULT, TRAIN_HISTORY, TRAIN_CHECKPOINT = (
    "trained.pt",
    "train_result.json",
    "train_history.jsonl",
    "train_checkpoint.pt",
)
SEARCH_FILES = (
    ARCH,
    CONFIG,
    RESULT,
    HISTORY,
    CHECKPOINT,
    CHILD,
    SUPERNET,
    PLOT,
    REPORT,
    SCORES,
    SELECTION_PLOT,
    SPACE_COPY,
    TABLE_COPY,
)
TRAIN_FILES = (TRAINED, TRAIN_RESULT, TRAIN_HISTORY, TRAIN_CHECKPOINT)
#: weights of the derived child, newest kind first: fine-tuned by ``hwnas train``, then as the search left them
CHILD_WEIGHTS = (TRAINED, CHILD)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict into ``model``; a file that is corrupt or does not fit is a clear error."""
    path = Path(path)
    state = load_torch(path, "weights file", "a state dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HwnasError(f"weights file {path} is not a state dict of tensors")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        details = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                details.append(f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''} ({len(items)})")
        raise HwnasError(f"weights file {path} does not fit this arch's net; {'; '.join(details)}")
    model.load_state_dict(state)
    return model


def read_space_copy(folder: Path, sha256: str | None = None) -> Space | None:
    """Register the space file copy ``folder`` keeps, if any (and if its content hash is ``sha256``, where given);
    return its space, built at the file's own options."""
    copy = Path(folder) / SPACE_COPY
    if not copy.is_file():
        return None
    try:
        text = copy.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise HwnasError(f"{copy}: cannot be read: {error}") from None
    if sha256 is not None and sha256_of(text) != sha256:
        return None
    return space_from_text(text, str(copy))()


def keep_space_copy(folder: Path, space: Space) -> None:
    """Write the copy of ``space``'s file into ``folder`` (a built-in space has none)."""
    source = user_space_file(space)
    if source is not None:
        write_text_atomic(Path(folder) / SPACE_COPY, source.text)


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        path = Path(path)
        if not path.is_dir():
            raise HwnasError(f"run folder {path} does not exist")
        if not (path / ARCH).exists():
            if not (path / CONFIG).exists():
                raise HwnasError(f"{path} is not a search run folder (no {CONFIG}, no {ARCH})")
            raise HwnasError(
                f"{path} holds no derived child (no {ARCH}): has its search finished? (`hwnas search --resume {path}`)"
            )
        return cls(path)

    @classmethod
    def newest(cls, root: Path = RUNS_ROOT) -> RunFolder:
        """The most recently changed run under ``root`` that holds a derived arch."""
        runs = [p.parent for p in root.glob(f"*/{ARCH}")] if root.is_dir() else []
        if not runs:
            raise HwnasError(f"no finished run under {root}/: run `hwnas search` first, or pass --run DIR or --arch ARCH")
        return cls(max(runs, key=lambda p: (p / ARCH).stat().st_mtime))

    def arch(self) -> Arch:
        """The derived arch; a run of a space file's space reads the copy it keeps first, so the arch builds."""
        read_space_copy(self.path)
        return load_arch(self.path / ARCH)

    def config(self) -> dict[str, Any]:
        path = self.path / CONFIG
        return load_json(path) if path.exists() else {}

    def result(self) -> dict[str, Any]:
        path = self.path / RESULT
        return load_json(path) if path.exists() else {}

    def weights_path(self) -> Path:
        for name in CHILD_WEIGHTS:
            if (self.path / name).exists():
                return self.path / name
        raise HwnasError(f"{self.path} holds no child weights ({' or '.join(CHILD_WEIGHTS)})")

    def child(self) -> tuple[Arch, nn.Module, Path]:
        """The run's arch, its child net with the newest weights loaded, and the weights' path."""
        arch = self.arch()
        weights = self.weights_path()
        return arch, load_weights(arch.build(), weights), weights


# -- the run's latency table ----------------------------------------------------------------------
def recorded_table(folder: Path, path: str | Path, sha256: str, other: str = "") -> Path:
    """The latency table a run recorded (absolute ``path`` and the SHA-256 of its bytes), as it was then.

    The file at ``path`` if it is unchanged, else the run folder's copy if that is the same table
    (``path`` removed or moved); a changed file is refused with both hashes, and so is a table that
    is gone without a copy. ``other``: what else the user may do (export: ``--table``), added to the fix.
    """
    path, copy = Path(path), Path(folder) / TABLE_COPY
    copy_ok = copy.is_file() and file_sha256(copy) == sha256
    restore = f"restore it from the run's copy (`cp {copy} {path}`)" if copy_ok else "restore the table as it was"
    also = f", or {other}" if other else ""
    if path.is_file():
        now = file_sha256(path)
        if now == sha256:
            return path
        raise HwnasError(
            f"the run's latency table {path} changed since the run {folder} started: sha256 {sha256} then, {now} now; "
            f"{restore}{also}"
        )
    if copy_ok:
        return copy
    raise HwnasError(f"the run's latency table {path} is gone and {folder} holds no copy of it; {restore}{also}")


def copy_table(folder: Path, path: Path, sha256: str) -> str | None:
    """Copy the run's table into ``folder`` (byte for byte, checked against ``sha256``); None, or why not."""
    size = path.stat().st_size
    if size > TABLE_COPY_LIMIT:
        return f"not copied: {size / 2**20:.1f} MiB is over the {TABLE_COPY_LIMIT / 2**20:.0f} MiB copied into a run folder"
    data = path.read_bytes()

    if hashlib.sha256(data).hexdigest() != sha256:
        raise HwnasError(f"latency table {path} changed while the run started (sha256 {sha256} when read); start it again")
    write_bytes_atomic(folder / TABLE_COPY, data)
    return None
