"""Progress: live bars on a terminal, one line per phase in a log.

tqdm redraws its bar in place with carriage returns: on a terminal that is one line, in a file
(CI, nohup, a scheduler) it is every redraw, several hundred kilobytes for a short search.
``progress_bar`` gives tqdm where stderr is a terminal, and elsewhere a ``LineProgress`` that
writes one line when its phase ends (and one a minute while a long phase runs).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

#: seconds between the lines a long phase writes into a log before it ends
LOG_INTERVAL_S = 60.0


class LineProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``close`` / iteration, written as one line per phase (plus one a minute)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        file: TextIO | None = None,
        interval_s: float = LOG_INTERVAL_S,
        clock: Any = time.monotonic,
    ) -> None:
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.postfix = total, 0, ""
        self.file, self.interval_s, self.clock = file, interval_s, clock
        self.started = self.last_line = clock()
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        finished = self.total is not None and self.n >= self.total  # its line comes with close
        if not self.disable and not finished and self.clock() - self.last_line >= self.interval_s:
            self._write("")

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in {**(ordered_dict or {}), **values}.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.disable and (self.n or self.total):
                self._write(" done")

    def _write(self, state: str) -> None:
        self.last_line = now = self.clock()
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        postfix = f", {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {count} {self.unit}{state} in {now - self.started:.1f} s{postfix}",
            file=self.file or sys.stderr,
            flush=True,
        )


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where progress goes) is a terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
) -> tqdm | LineProgress:
    """A live tqdm bar on a terminal; elsewhere a ``LineProgress`` (one line per phase). ``enabled=False``: silent."""
    if interactive():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=not enabled)
