"""The API's names stay functions: no subpackage of aimass may shadow one once it is imported."""

from __future__ import annotations

import importlib
import pkgutil

import aimass
from aimass import api


def test_no_subpackage_shadows_an_api_function():
    for info in pkgutil.iter_modules(aimass.__path__):
        if info.name == "__main__":  # runs the CLI
            continue
        importlib.import_module(f"aimass.{info.name}")  # importing sets aimass.<name> to the module
    shadowed = [name for name in aimass.__all__ if not callable(getattr(aimass, name))]
    assert not shadowed, f"submodules shadow the API functions {shadowed}"
    assert callable(aimass.evaluate) and aimass.evaluate is api.evaluate
