"""Which table belongs to this target: the meta a table must carry, default names, and the search path.

Tables are found by what they say about themselves (their ``meta``), not by file name, so a
renamed table is still found and a table of another machine is never picked up by accident.
The search path is ``./latency_tables/`` of the working directory, then the tables shipped
inside the package.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError
from hwnas.files import read_json
from hwnas.latency.fingerprint import device_name
from hwnas.latency.model import profile_command
from hwnas.latency.precision import dtype_of
from hwnas.spaces import Space, get_space, space_from_text, user_space_file

LOCAL_TABLES = Path("latency_tables")


def _precision(precision: str | bool) -> str:
    """``--precision``'s value; True / False are the older ``fp16`` flag (callers written before ``--precision``)."""
    if isinstance(precision, bool):
        return "fp16" if precision else "fp32"
    return precision


def expected_meta(
    device: str,
    runtime: str,
    batch_size: int = 1,
    precision: str | bool = "fp32",
    space: Space | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Meta values a table must match to describe this machine, runtime, precision and shape.

    ``name``: the device's name where the caller read it (a phone's, over adb); else this machine's.
    """
    meta: dict[str, Any] = {
        "device": device,
        "device_name": name or device_name(device),
        "runtime": runtime,
        "batch_size": batch_size,
        "dtype": dtype_of(_precision(precision)),
    }
    if space is not None:
        meta["space_args"] = space.args.to_dict()
        source = user_space_file(space)
        if source is not None:  # a user's space file is known by its content, not its name alone
            meta["space_sha256"] = source.sha256
    return meta


def space_file_meta(space: Space) -> dict[str, Any]:
    """What a table or run folder keeps of a user's space file: its path, hash and whole text (empty for a built-in)."""
    source = user_space_file(space)
    if source is None:
        return {}
    return {"space_file": {"path": source.source, "sha256": source.sha256, "text": source.text}}


def table_space(table: Any) -> Space:
    """The space a table measured, built from its meta; a table of a space file builds it from the copy it keeps."""
    meta = table.meta
    kept = meta.get("space_file")
    where = table.path or "latency table"
    if kept is not None:
        if not isinstance(kept, dict) or not isinstance(kept.get("text"), str):
            raise HwnasError(f"{where}: meta 'space_file' must hold the space file's 'text'")
        space_from_text(kept["text"], f"{where} (its copy of {kept.get('path', 'the space file')})")
    space = get_space(meta["space"], **meta["space_args"])
    source = user_space_file(space)
    if (source.sha256 if source else None) != meta.get("space_sha256"):
        raise HwnasError(
            f"{where}: its space {meta['space']!r} has sha256 {source.sha256 if source else None}, but the table says "
            f"{meta.get('space_sha256')}; the table was edited: profile the space again"
        )
    return space


def shipped_tables_dir() -> Path:
    """The folder of tables shipped with hwnas (the repository's ``latency_tables/``)."""
    try:
        spec = importlib.util.find_spec("hwnas.latency_tables")
    except (ModuleNotFoundError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:  # installed wheel (regular or namespace package)
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[2] / "latency_tables"  # source checkout / editable install


def default_table_path(
    space: Space,
    device: str,
    runtime: str,
    threads: int | None,
    batch_size: int,
    precision: str | bool = "fp32",
    name: str | None = None,
) -> Path:
    """``latency_tables/<device>_<runtime>_t<threads>_b<batch>[_fp16|_int8]_<space>_r<res>_c<in>_n<classes>_w<width>.json``."""
    slug = re.sub(r"[^a-z0-9]+", "-", (name or device_name(device)).lower()).strip("-")[:40]
    args = space.args
    parts = [f"{device}-{slug}", runtime, f"t{threads or 0}", f"b{batch_size}"]
    if _precision(precision) != "fp32":
        parts.append(_precision(precision))
    parts += [space.name, f"r{args.resolution}", f"c{args.in_channels}", f"n{args.num_classes}", f"w{args.width_mult:g}"]
    return LOCAL_TABLES / ("_".join(parts) + ".json")


def _matches(path: Path, wanted: dict[str, Any], space_name: str, threads: int | None) -> bool:
    try:
        meta = read_json(path).get("meta", {})
    except (HwnasError, AttributeError):  # not a table (or not readable): not this target's
        return False
    if meta.get("space") != space_name or any(meta.get(key) != value for key, value in wanted.items()):
        return False
    return threads is None or meta.get("threads") == threads


def find_table(
    space: Space,
    device: str,
    runtime: str,
    threads: int | None = None,
    batch_size: int = 1,
    precision: str | bool = "fp32",
    dirs: list[Path] | None = None,
    name: str | None = None,
) -> Path:
    """The first table in ``dirs`` (default: local, then shipped) made for this target and space.

    ``name``: the device's name where the caller read it (a phone's). None found is an error
    naming the ``hwnas profile`` command that makes one.
    """
    wanted = expected_meta(device, runtime, batch_size, precision, space, name)
    folders = dirs if dirs is not None else [LOCAL_TABLES, shipped_tables_dir()]
    for folder in folders:
        if Path(folder).is_dir():
            for path in sorted(Path(folder).glob("*.json")):
                if _matches(path, wanted, space.name, threads):
                    return path
    command = profile_command(
        space, {"device": device, "runtime": runtime, "threads": threads, "batch_size": batch_size, "dtype": wanted["dtype"]}
    )
    looked = ", ".join(str(f) for f in folders)
    raise HwnasError(
        f"no latency table for space {space.name} {space.args.to_dict()} on {wanted['device_name']} "
        f"({runtime}, batch {batch_size}, {wanted['dtype']}) in {looked}; make one with: {command}"
    )
