"""Where the images of a dataset are and how their labels and splits are read.

Three layouts, tried in this order on a folder: a ``path,label`` manifest at its top,
``train/``/``valid/``/``test/`` folders of class folders, one folder per class. The
result lists every image found (:class:`Item`) and the files refused while listing
(no label, not an image, missing, a symbolic link that leads outside the folder); nothing is
decoded here. Links that stay inside the folder are followed, each real folder once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from aimass.data import multilabel
from aimass.data.archive import archive_kind, hidden_files, is_ignored
from aimass.data.columns import LABEL_NAMES, TEXT_NAMES, norm
from aimass.data.images import IMAGE_EXTENSIONS
from aimass.data.read import (
    TABLE_FORMATS,
    Record,
    decode_bytes,
    leads_outside,
    link_reject,
    loads_json,
    make_reject,
    read_source,
    walk,
)
from aimass.data.validate import SPLIT_ALIASES
from aimass.errors import DataError

PATH_COLUMNS = ("path", "image", "file", "filename", "image_path", "file_path")
SPLIT_DIRS = {**SPLIT_ALIASES, "val": "valid"}
HEADER_BYTES = 64 * 1024
LAYOUT_HINT = (
    "Lay the images out as <folder>/<label>/<image>, or <folder>/train|valid|test/<label>/<image>, "
    "or list them in a CSV with a header `path,label` (paths relative to the CSV's folder)."
)


@dataclass(slots=True)
class Item:
    """One image to import.

    Attributes:
        file: Where to read it now.
        source: Its path as the user knows it (relative to the dataset folder or manifest).
        label: The class.
        split: ``train``/``valid``/``test`` when the layout gives it, else None.
        shown: The file named in rejects (the image, the archive member or the manifest).
        line: The manifest line (1 for images found in folders).
        raw: The manifest line's text, or the source path.
    """

    file: Path
    source: str
    label: str
    split: str | None
    shown: str
    line: int = 1
    raw: str = ""

    def reject(self, reason: str, kind: str) -> dict:
        """A rejects-file entry for this image."""
        return make_reject(self.shown, self.line, reason, self.raw or self.source, kind)


@dataclass
class Layout:
    """The images found and how: ``kind`` is ``class folders``, ``split folders`` or ``manifest``."""

    kind: str
    format: str
    items: list[Item] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    columns: dict | None = None
    multi: bool = False  # a manifest whose rows carry several labels each (stored joined: "a|b")
    hidden: list[str] = field(default_factory=list)  # hidden files left out of folders (a warning)
    warnings: list[str] = field(default_factory=list)  # what the listing itself found wrong


def read_layout(
    root: Path, *, show: Callable[[Path], str] = str, descend: bool = False, label_sep: str | None = None
) -> Layout:
    """List the images of a manifest file or a folder.

    Args:
        root: A CSV/TSV/JSONL manifest or a folder.
        show: How a file is named in rejects (archives name the member, not the scratch copy).
        descend: Step into a lone top folder (an archive of the dataset folder itself).
        label_sep: A manifest's label cell holds several labels cut at this separator (a JSON
            list of labels needs none); class folders give one label an image.

    Raises:
        DataError: No layout fits, a manifest path leaves the manifest's folder, or ``label_sep``
            was given for class folders.
    """
    if root.is_file():
        return read_manifest(root, show, label_sep)
    top, notes = root, []
    if descend:
        root, notes = _lone_folder(root)
    manifests = [p for p in _visible(root, root) if p.is_file() and manifest_columns(p) is not None]
    if len(manifests) > 1:
        raise DataError(
            f"several manifests: {[p.name for p in manifests]}",
            where=show(root),
            hint="Keep one CSV or JSONL file with `path,label` columns.",
        )
    if manifests:
        return read_manifest(manifests[0], show, label_sep)
    if label_sep is not None:
        raise DataError(
            "label_sep applies to an image manifest; class folders give each image one label",
            where=show(root),
            hint="List the images in a CSV with a header `path,labels` (e.g. `a.jpg,beach;sunset` with "
            "--label-sep ';') or a JSONL manifest whose labels are lists.",
        )
    splits = split_folders(root, show)
    if splits:
        layout = _read_split_folders(root, splits, show)
    else:
        layout = _read_class_folders(root, Layout("class folders", "folder"), root, None, show)
    layout.hidden = hidden_files(root)
    layout.ignored += [p.relative_to(top).as_posix() for p in notes]  # a README beside the lone folder
    layout.rejects += [link_reject(path, root, show(path)) for path, out in walk(root, root) if out]
    if not (layout.items or layout.rejects):
        nested = sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and archive_kind(p)
        )
        if nested:  # an archive inside the archive: said, not "no images"
            raise DataError(
                f"no images found in class sub-folders, only archive(s) inside: {nested[:3]}",
                where=show(root),
                hint="Archives inside an archive are not opened: extract the inner one and import it, "
                "or put its folders in the outer archive.",
            )
        raise DataError("no images found in class sub-folders", where=show(root), hint=LAYOUT_HINT)
    return layout


def _visible(folder: Path, root: Path) -> list[Path]:
    """The entries of ``folder`` an import reads: hidden names and links leading outside ``root`` left
    out (:func:`read_layout` lists those links as rejects)."""
    return sorted(p for p in folder.iterdir() if not is_ignored((p.name,)) and not leads_outside(p, root))


def _lone_folder(root: Path) -> tuple[Path, list[Path]]:
    """Step down while the folder holds one folder and no image or manifest beside it (a README or
    LICENSE does not count: it is listed as ignored), unless it is a split or class folder. Returns
    the folder and the loose files stepped past."""
    top, passed = root, []
    while True:
        entries = _visible(root, top)
        folders = [p for p in entries if p.is_dir()]
        notes = [p for p in entries if not p.is_dir() and not _matters(p)]
        only = folders[0] if len(folders) == 1 and len(folders) + len(notes) == len(entries) else None
        inner = _visible(only, top) if only is not None else []
        if only is None or only.name.lower() in SPLIT_DIRS or not any(p.is_dir() for p in inner):
            return root, passed
        passed += notes
        root = only


def _matters(path: Path) -> bool:
    """Whether a loose file shapes the layout: an image, or a manifest."""
    return path.suffix.lower() in IMAGE_EXTENSIONS or manifest_columns(path) is not None


def image_files(folder: Path) -> Iterator[Path]:
    """Every image file under ``folder`` by extension, sorted, skipping hidden files and folders and
    links that lead outside ``folder``."""
    for path in _files(folder, folder):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            yield path


def _files(folder: Path, root: Path) -> Iterator[Path]:
    return (path for path, out in walk(folder, root) if not out)


def split_folders(root: Path, show: Callable[[Path], str] = str) -> dict[str, Path]:
    """``{"train": path, ...}`` when every folder at the top is a split name and train is one of them.

    Raises:
        DataError: Two folders name the same split (``val/`` and ``valid/``).
    """
    folders = [p for p in _visible(root, root) if p.is_dir()]
    names = [SPLIT_DIRS.get(p.name.lower()) for p in folders]
    if not folders or None in names or "train" not in names:
        return {}
    if len(set(names)) < len(names):
        raise DataError(
            f"two folders hold the same split: {[p.name for p in folders]}",
            where=show(root),
            hint="Keep one of valid/ and val/ (and of the other aliases).",
        )
    return dict(zip(names, folders, strict=True))


def _read_split_folders(root: Path, splits: dict[str, Path], show) -> Layout:
    layout = Layout("split folders", "folder")
    for split, folder in splits.items():
        _read_class_folders(folder, layout, root, split, show)
    for path in _visible(root, root):
        if path.is_file():
            _outside(path, root, layout, show, "not in a split folder")
    return layout


def _read_class_folders(folder: Path, layout: Layout, root: Path, split: str | None, show) -> Layout:
    """Add ``<folder>/<label>/**/<image>`` to the layout; files elsewhere are rejected or ignored. A
    class folder that gives no image is no class: a warning names it."""
    for entry in _visible(folder, root):
        if entry.is_file():
            _outside(entry, root, layout, show, "not in a class folder: its label is unknown")
            continue
        items, rejects = len(layout.items), len(layout.rejects)
        others = tuple(e.resolve() for e in _visible(folder, root) if e.is_dir() and e != entry)
        for file, fenced in walk(entry, root, others):
            if not fenced:
                _add_file(layout, file, root, entry.name, split, show)
            elif not leads_outside(file, root):  # into another class folder: a reject, not read again
                layout.rejects.append(link_reject(file, root, show(file)))  # (outside: the root's walk)
        if len(layout.items) == items:
            layout.warnings.append(
                _no_class(entry.relative_to(root).as_posix(), len(layout.rejects) - rejects)
            )
    return layout


def _no_class(folder: str, rejected: int) -> str:
    held = (
        f"none of its {rejected} file(s) is an image (see the rejects)" if rejected else "it holds no images"
    )
    return f"class folder {folder!r} was left out: {held}; put the class's images in it, or remove it"


def _add_file(layout: Layout, file: Path, root: Path, label: str, split: str | None, show) -> None:
    source = file.relative_to(root).as_posix()
    if file.suffix.lower() in IMAGE_EXTENSIONS:
        layout.items.append(Item(file, source, label, split, show(file)))
    else:
        layout.rejects.append(make_reject(show(file), 1, _not_image(file), source, "unsupported file"))


def _not_image(file: Path) -> str:
    return f"not an image file ({file.suffix or 'no extension'}; accepted: {' '.join(IMAGE_EXTENSIONS)})"


def _outside(path: Path, root: Path, layout: Layout, show, reason: str) -> None:
    """A file outside the class folders: an image is rejected, anything else ignored."""
    source = path.relative_to(root).as_posix()
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        layout.rejects.append(make_reject(show(path), 1, reason, source, "no label"))
    else:
        layout.ignored.append(source)


def manifest_columns(path: Path) -> dict | None:
    """``{"path", "label", "split"}`` column names when the file is an image manifest, else None.

    A manifest is a .csv/.tsv/.jsonl/.ndjson file whose header has a path column (``path``,
    ``image``, ``file`` ...) and a label column, and no text column. Only its start is read.
    """
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None or not path.is_file():
        return None
    with open(path, "rb") as fh:
        text = decode_bytes(fh.read(HEADER_BYTES))[0]
    names = _header_names(text, fmt)
    found = {norm(n): n for n in reversed(names)}
    path_col = next((found[c] for c in PATH_COLUMNS if c in found), None)
    label_col = next((found[c] for c in LABEL_NAMES if c in found), None)
    if path_col is None or label_col is None or any(c in found for c in TEXT_NAMES):
        return None
    return {"path": path_col, "label": label_col, "split": found.get("split")}


def _header_names(text: str, fmt: str) -> list[str]:
    lines = [line for line in io.StringIO(text, newline="") if line.strip()]
    if not lines:
        return []
    if fmt != "jsonl":
        delimiter = "\t" if fmt == "tsv" else ","
        return [c.strip() for c in next(csv.reader(lines[:1], delimiter=delimiter), [])]
    try:
        first = loads_json(lines[0])
    except ValueError:
        return []
    return list(first) if isinstance(first, dict) else []


def read_manifest(path: Path, show: Callable[[Path], str] = str, label_sep: str | None = None) -> Layout:
    """List the images of a ``path,label[,split]`` manifest; paths are relative to its folder.

    A label that is a JSON list, or a cell cut at ``label_sep``, gives an image several labels
    (:mod:`aimass.data.multilabel`): the layout is then ``multi`` and each item's label is the
    set joined (``"beach|sunset"``); a row whose labels cannot be read, or that has none, is
    rejected with its line.

    Raises:
        DataError: The file is not a manifest, or a path is absolute or leaves its folder.
    """
    columns = manifest_columns(path)
    if columns is None:
        raise DataError(
            "neither a .zip, .tar or .tar.gz archive nor an image manifest "
            "(a CSV or JSONL file whose header has a path or image column and a label column)",
            where=show(path),
            hint=LAYOUT_HINT,
        )
    table = read_source(path)
    layout = Layout("manifest", table.info["format"], columns=columns)
    layout.rejects += [dict(r, file=show(path)) for r in table.malformed]
    records = table.records
    if multilabel.is_multi(records, columns["label"], label_sep):
        if label_sep is not None and not label_sep.strip():
            raise DataError(f"label_sep {label_sep!r} is blank", hint="Give a separator such as ';' or ','.")
        records, unread = multilabel.join_records(records, columns["label"], label_sep)
        layout.rejects += [dict(r, file=show(path)) for r in unread]
        layout.multi = True
    base = path.parent.resolve()
    for record in records:
        item = _manifest_item(record, columns, base, show(path))
        (layout.items if isinstance(item, Item) else layout.rejects).append(item)
    return layout


def _manifest_item(record: Record, columns: dict, base: Path, shown: str) -> Item | dict:
    value = {role: _text(record.fields.get(col)) if col else "" for role, col in columns.items()}
    problem = _field_problem(value, columns)
    if problem:
        return make_reject(shown, record.line, problem[0], record.raw, problem[1])
    file = _inside(value["path"], base, f"{shown}:{record.line}")
    split = SPLIT_DIRS[value["split"].lower()] if columns["split"] else None
    source = PurePosixPath(value["path"].replace("\\", "/")).as_posix()
    item = Item(file, source, value["label"], split, shown, line=record.line, raw=record.raw)
    if not file.is_file():
        return item.reject(f"file not found: {value['path']}", "file not found")
    return item


def _text(value) -> str:
    return "" if value is None or isinstance(value, (dict, list)) else str(value).strip()


def _field_problem(value: dict, columns: dict) -> tuple[str, str] | None:
    if not value["path"]:
        return "missing path", "missing path"
    if not value["label"]:
        return "missing label", "missing label"
    if columns["split"] and value["split"].lower() not in SPLIT_DIRS:
        shown = repr(value["split"]) if value["split"] else "(empty)"
        return f"unknown split {shown} (accepted: {', '.join(SPLIT_DIRS)})", "unknown split"
    return None


def _inside(value: str, base: Path, where: str) -> Path:
    """The file a manifest path names, refusing absolute paths and paths leaving ``base``."""
    relative = value.replace("\\", "/")
    resolved = (base / relative).resolve()
    if relative.startswith("/") or PurePosixPath(relative).is_absolute() or not resolved.is_relative_to(base):
        raise DataError(
            f"path {value!r} is outside the manifest's folder",
            where=where,
            hint="Give paths relative to the folder holding the manifest, without '..', "
            "and keep the images inside that folder.",
        )
    return resolved
