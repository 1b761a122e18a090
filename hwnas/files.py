"""Writing files so that an interruption never leaves half a file, and nothing is overwritten by surprise."""

from __future__ import annotations

import json
import os
import re
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


def load_torch(path: str | Path, what: str = "file", expected: str = "a torch file") -> Any:
    """``torch.load`` with ``weights_only=True`` onto the CPU; a missing or unreadable file is a clear error."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise HwnasError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises several types for truncated or foreign files
        raise HwnasError(f"{what} {path} cannot be read as {expected}: {_load_failure(error)}") from None


def _load_failure(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, without torch's advice to turn ``weights_only`` off.

    hwnas never runs code from a file, so a pickled object (a whole model, not its state dict)
    is refused; the reason names what it found.
    """
    text = " ".join(str(error).split())
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"(\S+) was not an allowed global", text)
    if found:
        return f"it holds a Python object ({found.group(1)}), not only tensors: save model.state_dict(), not the model"
    if "TorchScript" in text:
        return "a TorchScript archive, not a state dict"
    found = re.search(r"WeightsUnpickler error: (.+?)(?: Check the documentation|$)", text)
    if found:
        return f"not a PyTorch file ({found.group(1)})"
    text = re.split(r" (?:In PyTorch 2\.6|Re-running)", text)[0]
    return text or f"{type(error).__name__} (empty or cut short?)"


def load_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file; unreadable, malformed or not an object is a clear error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HwnasError(f"{path} is not a readable JSON file: {error}") from None
    if not isinstance(data, dict):
        raise HwnasError(f"{path} must hold a JSON object")
    return data


def read_jsonl(path: str | Path) -> list[Any]:
    """The rows of a JSON-lines file (blank lines skipped); none if it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
