"""Packaging: every subpackage is installed, and a wheel carries the shipped latency tables."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "hwnas").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert "hwnas.latency_tables" in listed


def test_shipped_tables_are_found_where_the_package_looks():
    from hwnas.latency.lookup import shipped_tables_dir

    shipped = sorted(p.name for p in shipped_tables_dir().glob("*.json"))
    assert shipped == sorted(p.name for p in (ROOT / "latency_tables").glob("*.json")) and shipped
