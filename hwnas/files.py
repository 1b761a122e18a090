"""Writing files so that an interruption never leaves half a file, and nothing is overwritten by surprise."""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError


def remove_stale_temps(path: str | Path) -> None:
    """Remove the temporary files of ``path`` (``.NAME.PID.tmp...``) that processes no longer running left behind.

    A process killed while it writes cannot clean up after itself; the next writer of the
    same file does. Temporary files of a live process (a concurrent writer) are left alone.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        pid = temp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            temp.unlink(missing_ok=True)


def os_reason(error: OSError) -> str:
    """The system's reason for ``error`` as words in a sentence ("permission denied")."""
    return (error.strerror or str(error)).lower()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def check_writable(path: str | Path, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a file where a folder must be, or a place that
    takes no files (read-only, /proc). ``folder``: ``path`` is a folder to be made. Leaves nothing behind."""
    path = Path(path).absolute()
    existing = path if folder else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise HwnasError(f"cannot write {path}: {existing} is a file, not a folder")
    if path.exists() and path.is_dir() != folder:
        raise HwnasError(f"cannot write {path}: it is a {'file' if folder else 'folder'}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise HwnasError(f"cannot write {path}: {existing} takes no files ({os_reason(error)})") from None


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``.

    Temporary files of ``path`` left by a killed process are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:  # name the file asked for, not the temporary one
        raise HwnasError(f"cannot write {path}: {os_reason(error)}") from None
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

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_torch(path: str | Path, what: str = "file", expected: str = "a torch file") -> Any:
    """``torch.load`` with ``weights_only=True`` onto the CPU; a missing or unreadable file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise HwnasError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises several types for truncated or foreign files
        reason = "it is cut short (an interrupted write or copy?)" if _cut_short_zip(path) else _load_failure(error)
        raise HwnasError(f"{what} {path} cannot be read as {expected}: {reason}") from None


def _cut_short_zip(path: Path) -> bool:
    """A file that starts as a zip archive (torch.save's format) but has no end: truncated."""
    try:
        with open(path, "rb") as handle:
            starts_as_zip = handle.read(4) == b"PK\x03\x04"
        return starts_as_zip and not zipfile.is_zipfile(path)
    except OSError:
        return False


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
