"""The table keys a space needs (stem, head, per-call overhead, every part) and the ``hwnas profile`` call that fills them."""

from __future__ import annotations

import shlex

from hwnas.errors import HwnasError
from hwnas.latency.precision import precision_of_dtype
from hwnas.latency.table import LatencyTable
from hwnas.spaces import Space, user_space_file


def stem_key(space: Space) -> str:
    """Table key of the fixed stem (input shape included)."""
    c, h, w = space.input_shape
    return f"stem:{space.name}:c{c}-{space.stem_out_channels}:h{h}w{w}"


def head_key(space: Space) -> str:
    """Table key of the fixed head (its input shape and the number of classes)."""
    c, h, w = space.head_in_shape
    return f"head:{space.name}:c{c}-{space.args.num_classes}:h{h}w{w}"


def overhead_key(space: Space) -> str:
    """Table key of the per-call cost of the runtime (an identity model at the net's input shape)."""
    c, h, w = space.input_shape
    return f"overhead:identity:c{c}:h{h}w{w}"


def required_keys(space: Space) -> list[str]:
    """Every key a table needs to cover ``space``: every part its nets can run, the stem and the head."""
    return [part.key for part in space.parts()] + [stem_key(space), head_key(space)]


def profile_command(space: Space, meta: dict) -> str:
    """The ``hwnas profile`` call that measures ``space`` on the target ``meta`` describes."""
    source = user_space_file(space)
    parts = ["hwnas", "profile", "--space", source.source if source else space.name]
    defaults = source.defaults if source else {"resolution": 224, "num_classes": 1000, "in_channels": 3, "width_mult": 1.0}
    for name, value in space.args.to_dict().items():
        if defaults.get(name) != value:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    for name in ("device", "runtime", "threads", "batch_size"):
        if meta.get(name) is not None:
            parts += [f"--{name.replace('_', '-')}", str(meta[name])]
    if meta.get("dtype") not in (None, "float32"):
        parts += ["--precision", precision_of_dtype(meta["dtype"])]
    if meta.get("path"):
        parts += ["-o", str(meta["path"])]
    return shlex.join(parts)


def check_covers(table: LatencyTable, space: Space) -> None:
    """An error naming the missing entries and the ``hwnas profile`` call that fills them, unless ``table`` covers ``space``."""
    missing = table.missing(required_keys(space))
    if missing:
        meta = dict(table.meta, path=table.path)
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise HwnasError(
            f"latency table {table.path or ''} lacks {len(missing)} entr{'y' if len(missing) == 1 else 'ies'} "
            f"for space {space.name} ({shown}); fill them with: {profile_command(space, meta)}"
        )
