"""Writing files so that an interruption never leaves half a file, and nothing is overwritten by surprise."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
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
        with warnings.catch_warnings():  # torch's own warnings about a foreign pickle: the error below says what it is
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises several types for truncated or foreign files
        if _cut_short_zip(path):
            reason = "it is cut short (an interrupted write or copy?)"
        elif _plain_pickle(path):
            reason = "a plain Python pickle, not a file torch.save wrote (hwnas never runs a pickle: refused unread)"
        else:
            reason = _load_failure(error)
        raise HwnasError(f"{what} {path} cannot be read as {expected}: {reason}") from None


def _cut_short_zip(path: Path) -> bool:
    """A file that starts as a zip archive (torch.save's format) but has no end: truncated."""
    try:
        with open(path, "rb") as handle:
            starts_as_zip = handle.read(4) == b"PK\x03\x04"
        return starts_as_zip and not zipfile.is_zipfile(path)
    except OSError:
        return False


def _plain_pickle(path: Path) -> bool:
    """A file that starts as a pickle (protocol 2 or later: the PROTO opcode) rather than torch.save's zip archive."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
        return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5
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


def read_json(path: str | Path, what: str = "") -> Any:
    """The JSON value in a file; unreadable, undecodable, malformed or too deeply nested is a clear error.

    ``what`` names the file in the message ("latency table"); the message always names the path.
    """
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise HwnasError(f"{name} cannot be read: {os_reason(error)}") from None
    return parse_json(raw, name)


def parse_json(raw: bytes | str, name: str) -> Any:
    """``json.loads`` whose every failure is an ``HwnasError`` naming ``name``: bytes that are not UTF-8, malformed or
    cut-short JSON, nesting too deep for the parser (``RecursionError``), numbers too long to convert."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as error:
        raise HwnasError(f"{name} is not a JSON text file: byte {error.start} is not UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        cut = " (cut short?)" if error.pos >= len(text.rstrip()) else ""
        raise HwnasError(f"{name} is not a readable JSON file: it is not valid JSON{cut} ({error})") from None
    except RecursionError:
        raise HwnasError(f"{name} is nested too deeply to be read as JSON (not a file hwnas wrote)") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise HwnasError(f"{name} is not a readable JSON file: {error}") from None


def load_json(path: str | Path, what: str = "") -> dict[str, Any]:
    """A JSON object from a file; unreadable, malformed or not an object is a clear error."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise HwnasError(f"{f'{what} ' if what else ''}{path} must hold a JSON object, not {type(data).__name__}")
    return data


def read_jsonl(path: str | Path) -> list[Any]:
    """The rows of a JSON-lines file (blank lines skipped); none if it does not exist.

    A last line that does not parse is dropped: a process killed while it appended a row leaves
    it torn, and the rows before it are whole. A bad line before the last is an error.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise HwnasError(f"{path} cannot be read: {os_reason(error)}") from None
    lines = [line for line in raw.split(b"\n") if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(parse_json(line, f"{path} line {number}"))
        except HwnasError:
            if number == len(lines):
                break  # torn by a kill during the append
            raise
    return rows


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: the name of a folder's lock file, and the suffix of a file's (``.NAME.lock`` beside it)
LOCK_NAME, LOCK_SUFFIX = ".hwnas.lock", ".lock"


def lock_path(path: str | Path) -> Path:
    """Where the lock of ``path`` lives: inside a folder, beside a file."""
    path = Path(path)
    return path / LOCK_NAME if path.is_dir() else path.with_name(f".{path.name}{LOCK_SUFFIX}")


@contextmanager
def locked(path: str | Path, what: str) -> Iterator[None]:
    """Hold an OS lock (``fcntl.flock``) on ``path`` (a folder, or a file) for the duration of the block.

    A second holder is refused at once with an error naming the first one's pid and command. The
    kernel releases the lock of a process that ends in any way (kill -9 included), so a lock left by
    a dead process never blocks: its file may remain, and the next holder takes it over. The lock
    file is removed on release; a holder that finds it was removed (or replaced) between its open
    and its lock takes the new one, so two processes never both hold the lock.
    """

    target = lock_path(path)
    while True:
        try:
            handle = open(target, "a+")
        except OSError as error:
            raise HwnasError(f"cannot lock {path}: {os_reason(error)}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().split("\n", 1)
            handle.close()
            pid = holder[0].strip() or "?"
            command = f" ({holder[1].strip()})" if len(holder) > 1 and holder[1].strip() else ""
            raise HwnasError(
                f"{what} {path} is in use by process {pid}{command}; wait for it to finish or stop it "
                "(a lock of a process that has ended never blocks)"
            ) from None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(target).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # the file was removed by its last holder after we opened it: lock the new one
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n{' '.join(['hwnas', *sys.argv[1:]])[:500]}\n")
        handle.flush()
        yield
    finally:
        target.unlink(missing_ok=True)
        handle.close()
