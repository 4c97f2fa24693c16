"""The stored ``Dataset``: rows by split, classes and a summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from aimass.data.validate import SPLIT_ALIASES
from aimass.errors import ConfigError

DATA_FILE = "data.jsonl"
MANIFEST_FILE = "manifest.json"
REJECTS_FILE = "rejects.jsonl"


@dataclass
class Dataset:
    """An imported dataset stored under ``AIMASS_HOME/datasets/<id>/``.

    Attributes:
        id: First 12 hex characters of ``digest``.
        digest: sha256 of the canonical content and split settings.
        name: The name given at import (default: the file name without extension).
        path: The dataset folder.
        manifest: The content of ``manifest.json``.
    """

    id: str
    digest: str
    name: str
    path: Path
    manifest: dict
    _rows: list[dict] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def open(cls, folder: Path) -> Dataset:
        """Load a dataset from its folder (reads ``manifest.json`` only)."""
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        return cls(manifest["id"], manifest["digest"], manifest["name"], folder, manifest)

    def rows(self, split: str | None = None) -> list[dict]:
        """Rows ``{"text", "label", "split", "source"}`` in file order, of one split or all.

        Raises:
            ConfigError: ``split`` is not train, valid (validation, dev) or test.
        """
        if self._rows is None:
            with open(self.path / DATA_FILE, encoding="utf-8") as fh:
                self._rows = [json.loads(line) for line in fh]
        if split is None:
            return [dict(row) for row in self._rows]
        wanted = _split_name(split)
        return [dict(row) for row in self._rows if row["split"] == wanted]

    def texts(self, split: str | None = None) -> list[str]:
        """The texts of one split (all rows when None)."""
        return [row["text"] for row in self.rows(split)]

    def labels(self, split: str | None = None) -> list[str]:
        """The labels of one split (all rows when None), aligned with :meth:`texts`."""
        return [row["label"] for row in self.rows(split)]

    @property
    def classes(self) -> list[str]:
        """The class labels, sorted."""
        return sorted(self.manifest["counts"]["by_class"])

    @property
    def names(self) -> list[str]:
        """Every name this content was imported under."""
        return sorted({entry["name"] for entry in self.manifest.get("imports", [])} | {self.name})

    @property
    def rejects_path(self) -> Path:
        """The ``rejects.jsonl`` file of this dataset."""
        return self.path / REJECTS_FILE

    def summary(self) -> dict:
        """Counts per split and class, rejects, language, source file and columns used."""
        m = self.manifest
        return {
            "id": self.id,
            "name": self.name,
            "path": str(self.path),
            "file": m["source"],
            "format": m["format"],
            "encoding": m["encoding"],
            "language": m["language"],
            "columns": m["columns"],
            "rows": m["counts"]["total"],
            "splits": m["counts"]["by_split"],
            "classes": m["counts"]["by_class"],
            "per_split_class": m["counts"]["by_split_class"],
            "rejects": m["rejects"],
            "rejects_by_reason": m["rejects_by_reason"],
            "rejects_file": str(self.rejects_path),
            "warnings": m["warnings"],
        }

    def describe(self) -> str:
        """A few human-readable lines for the terminal, naming the rejects file."""
        s = self.summary()
        splits = ", ".join(f"{k} {v:,}" for k, v in s["splits"].items())
        classes = ", ".join(f"{k} {v:,}" for k, v in s["classes"].items())
        kinds = ", ".join(f"{k} {v:,}" for k, v in s["rejects_by_reason"].items())
        lines = [
            f"Dataset {self.name!r} (id {self.id}) from {s['file']}",
            f"  format {s['format']}, encoding {s['encoding']}, language {s['language']}",
            f"  columns: text={s['columns']['text']!r} label={s['columns']['label']!r}",
            f"  rows: {s['rows']:,} ({splits})",
            f"  classes: {classes}",
            f"  rejects: {s['rejects']:,}"
            + (f" ({kinds})" if kinds else "")
            + f", listed in {s['rejects_file']}",
        ]
        return "\n".join(lines + [f"  warning: {w}" for w in s["warnings"]])


def _split_name(split: str) -> str:
    name = SPLIT_ALIASES.get(str(split).lower())
    if name is None:
        raise ConfigError(f"unknown split {split!r}", hint="Use train, valid or test.")
    return name
