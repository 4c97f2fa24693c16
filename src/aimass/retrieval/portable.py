"""A vector store as a folder that moves to another machine: its documents, their attributes and
every chunk with its vector, so the store there answers as it does here without embedding anything
again.

The folder holds ``store.json`` (format, name, encoder, chunking, metadata and each file's
filename, attributes, chunking and status), ``documents/<n>`` (each document's bytes as uploaded)
and ``chunks.safetensors`` (``vectors``, float32, one row a chunk) beside ``chunks.jsonl`` (its
file and text, in the same order). :func:`import_store` checks the format, the encoder (known here,
vectors of its width), the chunk count and each document's name and size before it writes anything,
then makes a new store with new file ids, reading each document as an upload is; a failure there
takes the new store and its documents away again.

:func:`push_store` carries the same folder to S3-compatible storage, sealed (``SHA256SUMS``) and
laid out as pushed model versions are (:mod:`aimass.store.remote`), under
``s3://BUCKET/PREFIX/vector-stores/<store id>/v<N>``; :func:`pull_store` downloads one, checks every
file against its sums and imports it.

>>> sorted(FORMAT.split("/"))
['1', 'aimass-vector-store']
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from aimass.backbones.embeddings import EMBEDDERS
from aimass.errors import ConfigError, DataError
from aimass.retrieval import files, stores
from aimass.retrieval.tables import ChunkRecord, StoreFileRecord, session
from aimass.store import artifacts, remote

FORMAT = "aimass-vector-store/1"
MAX_CHUNKS = 2_000_000  # rows a folder may bring (about 3 GB of 384-d vectors)


def export_store(store_id: str, folder: str | Path) -> dict:
    """Write store ``store_id`` into ``folder`` (created; it must not hold anything yet)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} is not empty.", where=str(folder), hint="Export into a new folder.")
    found = stores.get(store_id)
    with session() as s:
        records = (
            s.query(StoreFileRecord).filter_by(store_id=store_id).order_by(StoreFileRecord.created).all()
        )
        listed = [
            (r.file_id, r.status, dict(r.attributes or {}), dict(r.chunking), r.tokens) for r in records
        ]
        rows = (
            s.query(ChunkRecord.file_id, ChunkRecord.text, ChunkRecord.vector)
            .filter_by(store_id=store_id)
            .order_by(ChunkRecord.file_id, ChunkRecord.seq)
            .all()
        )
    (folder / "documents").mkdir(parents=True, exist_ok=True)
    entries = []
    for n, (file_id, status, attributes, chunking, tokens) in enumerate(listed):
        (folder / "documents" / str(n)).write_bytes(files.original(file_id))
        name = files.info(file_id)["filename"]
        entries.append(
            {"file_id": file_id, "filename": name, "status": status, "attributes": attributes,
             "chunking": chunking, "tokens": tokens}
        )  # fmt: skip
    dims = EMBEDDERS.backbone(found["embedding_model"]).dimensions
    vectors = np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(len(rows), dims)
    save_file({"vectors": np.ascontiguousarray(vectors)}, str(folder / "chunks.safetensors"))
    with open(folder / "chunks.jsonl", "w", encoding="utf-8") as f:
        for file_id, text, _ in rows:
            f.write(json.dumps({"file_id": file_id, "text": text}, ensure_ascii=False) + "\n")
    manifest = {
        "format": FORMAT,
        "name": found["name"],
        "embedding_model": found["embedding_model"],
        "dimensions": dims,
        "chunking": found["chunking_strategy"],
        "metadata": found["metadata"],
        "expires_after": found["expires_after"],
        "files": entries,
        "chunks": len(rows),
    }
    (folder / "store.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return {"folder": str(folder), "vector_store_id": store_id, "files": len(entries), "chunks": len(rows)}


def import_store(folder: str | Path, name: str | None = None) -> dict:
    """A new store made of the export in ``folder`` (see the module docstring); its object."""
    folder = Path(folder)
    manifest = _manifest(folder)
    model, entries = manifest["embedding_model"], manifest["files"]
    chunks = _chunks(folder, manifest)
    known = {e["file_id"] for e in entries}
    if stray := next((c.get("file_id") for c in chunks[1] if c.get("file_id") not in known), None):
        raise DataError(
            f"chunks.jsonl names file {stray!r}, which store.json does not list.", where=str(folder)
        )
    documents = [_document(folder, n, entry) for n, entry in enumerate(entries)]
    made = stores.create(
        str(manifest.get("name") or "") if name is None else name,
        [],
        chunking_strategy=manifest.get("chunking"),
        metadata=manifest.get("metadata") or {},
        expires_after=manifest.get("expires_after"),
        embedding_model=model,
    )
    by_file: dict[str, list] = {}
    for row, vector in zip(chunks[1], chunks[0], strict=True):
        by_file.setdefault(row["file_id"], []).append((row["text"], vector))
    kept: list[str] = []
    try:
        for entry, source in zip(entries, documents, strict=True):
            kept.append(files.add(source, filename=entry["filename"])["id"])  # read as an upload is
            strategy = {"type": "static", "static": entry["chunking"]} if entry.get("chunking") else None
            stores.add_file(made["id"], kept[-1], entry.get("attributes") or {}, strategy)
            if entry.get("status") == "completed":
                pieces, tokens = by_file.get(entry["file_id"], []), entry.get("tokens") or 0
                stores.finish(made["id"], kept[-1], pieces, tokens=tokens)
            else:  # never embedded there (failed, cancelled, in progress): embedded here
                stores.process(made["id"], kept[-1])
    except BaseException:
        stores.remove(made["id"])
        for file_id in kept:
            shutil.rmtree(files.folder(file_id), ignore_errors=True)
        raise
    return stores.get(made["id"])


def _manifest(folder: Path) -> dict:
    where = str(folder / "store.json")
    try:
        manifest = json.loads((folder / "store.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataError(
            f"store.json cannot be read ({reason}).",
            where=where,
            hint="Point at a folder `aimass stores export` wrote.",
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{where} is not a {FORMAT} export.", where=where)
    model = manifest.get("embedding_model")
    if model not in EMBEDDERS.names():
        raise ConfigError(
            f"The store was embedded with {model!r}, which this machine does not have.",
            where=f"{where}: embedding_model",
            hint=f"Install the package that provides it; known here: {', '.join(EMBEDDERS.names())}.",
        )
    entries = manifest.get("files")
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "file_id" in e and isinstance(e.get("tokens", 0), int) for e in entries
    ):
        raise DataError(f"{where}: files is not a list of files.", where=f"{where}: files")
    return manifest


def _chunks(folder: Path, manifest: dict) -> tuple[np.ndarray, list[dict]]:
    """(vectors, rows), checked against the manifest and the encoder's width."""
    count = manifest.get("chunks")
    if not isinstance(count, int) or not 0 <= count <= MAX_CHUNKS:
        raise DataError(f"store.json: chunks must be 0 to {MAX_CHUNKS:,}.", where="store.json: chunks")
    dims = EMBEDDERS.backbone(manifest["embedding_model"]).dimensions
    try:
        vectors = load_file(str(folder / "chunks.safetensors"))["vectors"]
    except Exception as exc:  # noqa: BLE001 — a torn, foreign or missing file
        raise DataError(f"chunks.safetensors cannot be read: {exc}.", where=str(folder)) from None
    if vectors.dtype != np.float32 or vectors.shape != (count, dims):
        raise DataError(
            f"chunks.safetensors holds {vectors.dtype} {vectors.shape}; {count} vectors of {dims} float32 "
            f"are expected for {manifest['embedding_model']}.",
            where=str(folder / "chunks.safetensors"),
        )
    rows, lines = [], 0
    try:
        with open(folder / "chunks.jsonl", encoding="utf-8") as f:
            for lines, line in enumerate(f, 1):
                if lines > count:
                    break
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise ValueError("not a chunk")
                rows.append(row)
    except (OSError, ValueError) as exc:
        where = f"chunks.jsonl line {lines}"
        raise DataError(f"{where} cannot be read: {exc}.", where=where) from None
    if len(rows) != count or lines > count:
        more = "more than " if lines > count else ""
        raise DataError(
            f"chunks.jsonl has {more}{len(rows)} lines where store.json says {count}.",
            where=str(folder / "chunks.jsonl"),
            hint="Export the store again: the folder was changed or cut short.",
        )
    return vectors, rows


def _document(folder: Path, n: int, entry: dict) -> Path:
    """The n-th document's path, there and within an upload's size; its name may only be a file
    name. (Its text is read when it is added: a document that has none undoes the import.)"""
    name = str(entry.get("filename") or "")
    where = f"store.json: files[{n}]"
    if not name or Path(name).name != name or name in (".", ".."):
        raise DataError(f"File {n} of the store has no plain file name ({name!r}).", where=where)
    source = folder / "documents" / str(n)
    if not source.is_file():
        raise DataError(f"documents/{n} ({name}) is missing.", where=str(source))
    if source.stat().st_size > files.MAX_BYTES:
        raise DataError(f"documents/{n} ({name}) is over {files.MAX_BYTES:,} bytes.", where=str(source))
    return source


REMOTE_PREFIX = "vector-stores"  # under the URL a store is pushed to; model versions sit beside it
REMOTE_TASK = "vector-store"  # version.json's ``task``: what a pull of this folder makes


def push_store(store_id: str, url: str) -> dict:
    """Export store ``store_id``, seal it and upload it under ``URL/vector-stores/<id>/v<N>``: N is
    the newest version there when it holds the very same files (nothing is sent: ``unchanged``),
    else one past it. ``url``: ``s3://BUCKET[/PREFIX]``."""
    import tempfile

    base = f"{url.rstrip('/')}/{REMOTE_PREFIX}"
    remote.parse_url(base)
    with tempfile.TemporaryDirectory(prefix="aimass-store-") as tmp:
        folder = Path(tmp) / "store"
        done = export_store(store_id, folder)
        artifacts.seal(folder)
        pushed = remote.remote_versions(base, name=store_id)
        version = pushed[-1]["version"] if pushed else 1
        if pushed and not _same_files(folder, pushed[-1]["url"]):
            version += 1
        found = stores.get(store_id)
        meta = {
            "name": store_id,
            "version": version,
            "task": REMOTE_TASK,
            "metrics": {"files": done["files"], "chunks": done["chunks"]},
            "parent": None,
            "store_name": found["name"],
            "embedding_model": found["embedding_model"],
        }
        sent = remote.push_folder(folder, base, store_id, version, meta)
    return {"vector_store_id": store_id, "files": done["files"], "chunks": done["chunks"], **sent}


def _same_files(folder: Path, url: str) -> bool:
    """Whether the pushed version at ``url`` holds exactly the files of the sealed ``folder``."""
    meta = remote.resolve(url, remote.client())[2]
    here = {**artifacts.read_sums(folder), artifacts.SUMS: artifacts.sha256_file(folder / artifacts.SUMS)}
    return meta["files"] == here


def pull_store(url: str, name: str | None = None) -> dict:
    """Download a pushed store (``s3://.../vector-stores/<id>/vN``, or without ``/vN`` its newest),
    check every file against the sums it was pushed with, and import it as a new store here
    (:func:`import_store`; ``name`` default: the pushed store's)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="aimass-store-") as tmp:
        folder = Path(tmp) / "store"
        meta = remote.pull_folder(url, folder)
        if meta.get("task") != REMOTE_TASK:
            raise ConfigError(
                f"{meta['url']} holds a {meta.get('task')} version, not a vector store.",
                hint="Pull model versions with `aimass models pull`.",
            )
        made = import_store(folder, name)
    return {**made, "pulled_from": meta["url"]}
