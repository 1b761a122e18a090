"""What every bench script shares at its command line: bad flags and bad input as ``error:`` lines, exit 2.

``Parser`` is ``argparse.ArgumentParser`` whose refusals read as hwnas's (``error: ...`` on
stderr, exit 2, the usage line after it); ``run(main)`` turns an ``HwnasError`` (a missing
data set, a foreign table) or an ``OSError`` on a named file (an unwritable ``--work``) into
the same, and Ctrl-C into exit 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from hwnas.errors import HwnasError

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message}\n{self.format_usage().rstrip()}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def count(text: str) -> int:
    """An argparse type: an integer >= 1 (workers, processes, steps, rounds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def run(main: Callable[[], Any]) -> int:
    """``main()``'s exit code; bad input ends as an ``error:`` line and exit 2, not a traceback."""
    try:
        return int(main() or 0)
    except HwnasError as error:
        print(f"error: {error}", file=sys.stderr)
    except OSError as error:
        if error.filename is None:
            raise
        print(f"error: {error.filename}: {(error.strerror or str(error)).lower()}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_ERROR
