"""Where aimass keeps its files: ``AIMASS_HOME`` (default ``~/.aimass``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The root folder for datasets, models, caches and the metadata database."""
    root = Path(os.environ.get("AIMASS_HOME") or Path.home() / ".aimass").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def subdir(name: str) -> Path:
    """A folder under :func:`home`, created on first use."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
