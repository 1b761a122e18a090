"""Checks of values read from configs a person may have edited: the right type, a finite number."""

from __future__ import annotations

import dataclasses
import math

from hwnas.errors import HwnasError


def check_field_types(config: object) -> None:
    """Refuse a dataclass whose int, float, bool or str fields hold another type, or a float that is not finite.

    Configs are also read back from JSON files a person may have edited (``"epochs": "many"``);
    this makes such a value an error that names the field instead of a ``TypeError`` deep in a run.
    An int is accepted where a float is declared; a bool is never taken for a number.
    """
    kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        declared = [part.strip() for part in str(field.type).split("|")]
        value = getattr(config, field.name)
        if value is None and "None" in declared:
            continue
        simple = [part for part in declared if part in kinds]
        if not simple:
            continue  # containers and other types are checked where they are used
        if (isinstance(value, bool) and "bool" not in simple) or not any(isinstance(value, kinds[part]) for part in simple):
            words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "None": "null"}
            names = " or ".join(words[part] for part in declared if part in words)
            raise HwnasError(f"{field.name} must be {names}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise HwnasError(f"{field.name} must be a finite number, got {value!r}")
