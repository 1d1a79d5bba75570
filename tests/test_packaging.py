"""The package metadata: Python 3.11 to 3.13 (issue 23), read from pyproject.toml and from the
installed distribution (run.sh installs the checkout, so the two agree)."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]


def test_python_3_11_to_3_13_are_supported_and_nothing_else_is_claimed():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    installed = importlib.metadata.metadata("interventions")["Requires-Python"]
    for spec in (SpecifierSet(declared), SpecifierSet(installed)):
        assert all(version in spec for version in ("3.11.0", "3.12.5", "3.13.1"))
        assert not any(version in spec for version in ("3.10.14", "3.14.0"))
