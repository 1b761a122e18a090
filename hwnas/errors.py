"""The one exception type that carries a message meant for a person.

The CLI prints these without a traceback and exits non-zero; anything else is a bug.
"""


class HwnasError(Exception):
    """A user-facing error: bad input, a missing file, an impossible budget."""
