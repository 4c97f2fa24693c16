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
IMPORTS_DIR = "imports"  # the rejects of each later import of data already stored


@dataclass(frozen=True)
class Kind:
    """How rows of one kind of dataset hold their input: the column, and whether it names a file
    stored in the dataset folder (then :meth:`Dataset.inputs` gives absolute paths)."""

    column: str
    stored_file: bool = False
    format_lines: tuple[str, ...] = ()  # ``describe()`` lines, formatted with the summary
    words: str = ""  # what its rows hold, in the words of an error message
    covers: str | None = None  # a kind whose rows are a special case of these (one label: a set of one)


KINDS = {  # a new kind of data is one entry; tasks name the kind they read (``Task.data_kind``)
    "text": Kind(
        "text",
        words="texts with one label each",
        format_lines=(
            "  format {format}, encoding {encoding}, language {language}",
            "  columns: text={columns[text]!r} label={columns[label]!r}",
        ),
    ),
    "image": Kind(
        "image",
        stored_file=True,
        words="images with one label each",
        format_lines=("  {kind} dataset, format {format}, layout {layout}",),
    ),
    "chat": Kind(
        "messages",
        words="conversations",
        format_lines=("  chat dataset, format {format}, encoding {encoding}",),
    ),
    "multilabel-image": Kind(  # images with several labels each (a manifest's label lists)
        "image",
        stored_file=True,
        words="images with several labels each",
        covers="image",
        format_lines=("  multi-label images, format {format}, layout {layout}",),
    ),
    "entities": Kind(  # texts with their entity spans (:mod:`aimass.data.entities`)
        "text",
        words="texts with entity spans",
        format_lines=(
            "  texts with named entities, format {format}, encoding {encoding}, language {language}",
        ),
    ),
    "multilabel": Kind(  # texts with several labels each (:mod:`aimass.data.multilabel`)
        "text",
        words="texts with several labels each",
        covers="text",
        format_lines=(
            "  multi-label texts, format {format}, encoding {encoding}, language {language}",
            "  columns: text={columns[text]!r} labels={columns[label]!r}",
        ),
    ),
}


class HeldOut(tuple):
    """``(inputs, targets)`` read from a file or folder as held-out data (``evaluate --data``), with
    the ``rejects`` left out of it: a model scores the pair as any ``(inputs, targets)``, and the
    evaluation reports how many rows were left out and why (nothing is dropped unsaid).

    >>> held = HeldOut(["a", "b"], ["x", "y"], [{"line": 3, "reason": "empty text"}])
    >>> inputs, targets = held
    >>> inputs, len(held.rejects)
    (['a', 'b'], 1)
    """

    def __new__(cls, inputs, targets, rejects=()):
        held = super().__new__(cls, (inputs, targets))
        held.rejects = list(rejects)
        return held


@dataclass
class Dataset:
    """An imported dataset stored under ``AIMASS_HOME/datasets/<id>/``.

    Text datasets hold their texts in ``data.jsonl``; image datasets hold the images
    under ``images/`` and :meth:`inputs` gives their absolute paths.

    >>> ds = load_dataset("pets")                     # doctest: +SKIP
    >>> ds.kind, ds.inputs("train")[0], ds.labels("train")[0]  # doctest: +SKIP
    ('image', '/home/me/.aimass/datasets/3f2a.../images/ab/ab12....jpg', 'cat')

    Attributes:
        id: First 12 hex characters of ``digest``.
        digest: sha256 of the canonical content and split settings.
        name: The name given at import (default: the file name without extension).
        path: The dataset folder.
        manifest: The content of ``manifest.json``.
        imported: Set when this content was stored already and imported again: that import's entry
            in ``manifest["imports"]``, whose rejects :meth:`summary` then reports (they are not the
            rejects of the first import, kept in ``rejects.jsonl``).
    """

    id: str
    digest: str
    name: str
    path: Path
    manifest: dict
    _rows: list[dict] | None = field(default=None, repr=False, compare=False)
    imported: dict | None = field(default=None, repr=False, compare=False)

    @classmethod
    def open(cls, folder: Path) -> Dataset:
        """Load a dataset from its folder (reads ``manifest.json`` only)."""
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        return cls(manifest["id"], manifest["digest"], manifest["name"], folder, manifest)

    @property
    def kind(self) -> str:
        """``text`` or ``image`` (manifests written before image support are text)."""
        return self.manifest.get("kind", "text")

    def rows(self, split: str | None = None) -> list[dict]:
        """Rows of one split or all, in stored order (file order for text, sha256 order for images).

        Text rows are ``{"text", "label", "split", "source"}``; image rows are ``{"image",
        "label", "split", "source", "sha256", "width", "height"}`` where ``image`` is the
        stored file relative to the dataset folder.

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
        """The texts of one split (all rows when None).

        Raises:
            ConfigError: This is an image dataset (use :meth:`inputs`).
        """
        if KINDS[self.kind].column != "text":
            raise ConfigError(
                f"dataset {self.name!r} holds {self.kind}s, not texts",
                hint="Use inputs() instead of texts().",
            )
        return [row["text"] for row in self.rows(split)]

    def inputs(self, split: str | None = None) -> list[str]:
        """What a model reads, one per row: the texts, or the absolute paths of the stored images."""
        kind = KINDS[self.kind]
        values = [row[kind.column] for row in self.rows(split)]
        return [str(self.path / v) for v in values] if kind.stored_file else values

    def labels(self, split: str | None = None) -> list[str]:
        """The labels of one split (all rows when None), aligned with :meth:`inputs`."""
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

    def imports(self) -> list[dict]:
        """Every import of this content, oldest first: name, time, source, its rejects (count, by
        reason) and the file listing them (absolute; None for an import recorded before each import
        kept its own rejects)."""
        entries = self.manifest.get("imports", [])
        return [self._import_view(index, entry) for index, entry in enumerate(entries)]

    def _import_view(self, index: int, entry: dict) -> dict:
        kept = entry.get("rejects_file", REJECTS_FILE if index == 0 else None)
        return {
            "index": index,
            "name": entry.get("name"),
            "at": entry.get("at"),
            "source": entry.get("source"),
            "rejects": entry.get("rejects", 0),
            "rejects_by_reason": entry.get("rejects_by_reason", {}),
            "rejects_file": str(self.path / kept) if kept else None,
            **{k: entry[k] for k in ("format", "encoding", "columns") if k in entry},  # how it was read
        }

    def summary(self, this_import: bool = True) -> dict:
        """Counts per split and class, rejects, source file, format and columns used.

        Text datasets give their encoding and language; image datasets their layout and
        the images found in more than one split (``leakage``). When this content was stored
        already (:attr:`imported`), ``rejects``, ``rejects_by_reason`` and ``rejects_file`` are
        this import's, ``import`` describes it and ``already_stored`` is True (``this_import``
        False: the stored dataset's summary alone, what its listings show).
        """
        m = self.manifest
        return {
            **self._stored_summary(m),
            "imports": self.imports(),
            **(self._this_import() if this_import else {}),
        }

    def _stored_summary(self, m: dict) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path),
            "file": m["source"],
            "format": m["format"],
            "encoding": m.get("encoding"),
            "encodings": m.get("encodings"),
            "language": m.get("language"),
            "layout": m.get("layout"),
            "columns": m["columns"],
            "rows": m["counts"]["total"],
            "splits": m["counts"]["by_split"],
            "classes": m["counts"]["by_class"],
            "per_split_class": m["counts"]["by_split_class"],
            "rejects": m["rejects"],
            "rejects_by_reason": m["rejects_by_reason"],
            "rejects_file": str(self.rejects_path),
            "warnings": m["warnings"],
            "leakage": m.get("leakage", []),
            **({"documents": m["documents"]} if "documents" in m else {}),  # a folder: rows by format
            **({"tokens": m["tokens"]} if "tokens" in m else {}),  # generation data: token statistics
            **({"parent": m["parent"], "changes": m["changes"]} if "parent" in m else {}),  # a revision
        }

    def _this_import(self) -> dict:
        """The summary keys that report the import that found this content stored already."""
        if self.imported is None:
            return {}
        entries = self.manifest.get("imports", [])
        index = next((i for i, e in enumerate(entries) if e is self.imported), len(entries) - 1)
        this = self._import_view(index, self.imported)
        keys = ("rejects", "rejects_by_reason", "rejects_file")
        return {**{k: this[k] for k in keys}, "already_stored": True, "import": this}

    def describe(self) -> str:
        """A few human-readable lines for the terminal, naming the rejects file."""
        s = self.summary()
        this = s.get("import") if s.get("already_stored") else None
        if this:  # what the import just made read: its name, file, format and columns
            s = {**s, **{k: this[k] for k in ("format", "encoding", "columns") if k in this}}
        splits = ", ".join(f"{k} {v:,}" for k, v in s["splits"].items())
        classes = ", ".join(f"{k} {v:,}" for k, v in s["classes"].items())
        kinds = ", ".join(f"{k} {v:,}" for k, v in s["rejects_by_reason"].items())
        head = f"Dataset {self.name!r} (id {self.id}) from {s['file']}"
        if this:
            head = f"Dataset {this['name']!r} (id {self.id}) from {this['source']}"
        lines = [
            head,
            *self._format_lines(s),
            f"  rows: {s['rows']:,} ({splits})",
            f"  classes: {classes}",
            f"  rejects: {s['rejects']:,}"
            + (f" ({kinds})" if kinds else "")
            + f", listed in {s['rejects_file']}",
        ]
        if s.get("already_stored"):
            lines.insert(1, _already_stored_line(s))
        if s.get("documents"):  # a class folder of documents: rows per format
            lines.append("  documents: " + ", ".join(f"{n:,} {kind}" for kind, n in s["documents"].items()))
        lines += _token_lines(s.get("tokens"))
        lines += _lineage_lines(s, self.path)
        lines += _later_import_lines(s)
        return "\n".join(lines + [f"  warning: {w}" for w in s["warnings"]])

    def _format_lines(self, s: dict) -> list[str]:
        return [line.format(**s) for line in KINDS[self.kind].format_lines]


def _token_lines(tokens: dict | None) -> list[str]:
    """Generation data: tokens per split (prompt and answer: mean, p95, max)."""
    if not tokens:
        return []
    out = [f"  tokens ({tokens['tokenizer']}, limit {tokens['limit']}):"]
    for split, parts in tokens["by_split"].items():
        cells = [
            f"{k} mean {v['mean']} p95 {v['p95']} max {v['max']}" for k, v in parts.items() if v.get("mean")
        ]
        out.append(f"    {split}: " + "; ".join(cells))
    return out


def _already_stored_line(s: dict) -> str:
    first = s["imports"][0] if s.get("imports") else {"name": s["name"], "source": s["file"]}
    return (
        f"  already stored: the same rows as {first['name']!r} from {first['source']} (the same split, "
        "nothing copied); the rejects below are this import's"
    )


SHOWN_IMPORTS = 5


def _later_import_lines(s: dict) -> list[str]:
    """The imports after the first, newest ``SHOWN_IMPORTS``, with their rejects (the one being
    reported on is left out: its rejects are the summary's)."""
    this = s.get("import", {}).get("index")
    later = [e for e in s["imports"][1:] if e["index"] != this]
    hidden = len(later) - SHOWN_IMPORTS
    lines = [f"  imported again {hidden} more time(s) before these:"] if hidden > 0 else []
    for entry in later[-SHOWN_IMPORTS:]:
        kinds = ", ".join(f"{k} {v:,}" for k, v in entry["rejects_by_reason"].items())
        listed = f", listed in {entry['rejects_file']}" if entry["rejects_file"] and entry["rejects"] else ""
        lines.append(
            f"  imported again as {entry['name']!r} on {entry['at']} from {entry['source']}: "
            f"rejects {entry['rejects']:,}" + (f" ({kinds})" if kinds else "") + listed
        )
    return lines


def _lineage_lines(s: dict, folder: Path) -> list[str]:
    """A revised dataset: its parent and what changed (``aimass data fix``)."""
    if "parent" not in s:
        return []
    parent, changes = s["parent"], s["changes"]
    return [
        f"  revised from {parent['id']} ({parent['name']}): dropped {changes['dropped']:,}, "
        f"relabelled {changes['relabelled']:,}, listed in {folder / changes['file']}"
    ]


def _split_name(split: str) -> str:
    name = SPLIT_ALIASES.get(str(split).lower())
    if name is None:
        raise ConfigError(f"unknown split {split!r}", hint="Use train, valid or test.")
    return name
