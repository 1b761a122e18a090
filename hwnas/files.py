"""Writing files so that an interruption never leaves half a file, and nothing is overwritten by surprise."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def refuse_overwrite(path: str | Path, force: bool) -> None:
    """Raise unless ``path`` is free or ``force`` says it may be replaced."""
    if Path(path).exists() and not force:
        raise HwnasError(f"{path} exists; pass --force to overwrite it")


def save_torch_atomic(path: str | Path, obj: Any) -> None:
    """``torch.save`` of a state dict (or a dict of them), written atomically."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())
