"""Vector stores: documents cut into chunks, embedded once, and searched by meaning and by words.

A store keeps, in ``aimass.db``, its files (each with its status, attributes and chunking) and their
chunks (text and vector). Adding a file records it ``in_progress``; :func:`process` then reads its
text, cuts it (:mod:`aimass.retrieval.chunks`), embeds the chunks with the store's encoder
(``passage: `` for E5) and marks it ``completed``, or ``failed`` with the reason. A file's chunks are
written in one transaction with its status, so a search never sees half a file, and a file left
``in_progress`` by a stopped server is processed again (:func:`pending`), for the key that added it.
The tokens embedded are reported as they are embedded, so a file taken out (or its store deleted)
halfway is still metered for the work done.

Searching is :mod:`aimass.retrieval.search`; attributes and filters :mod:`aimass.retrieval.filters`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy import update as sql_update

from aimass.backbones.embeddings import EMBEDDERS, Embedder, canonical
from aimass.errors import AimassError, ConfigError, NotFoundError, QuotaExceeded
from aimass.retrieval import chunks, files, filters
from aimass.retrieval.tables import ChunkRecord, FileBatchRecord, StoreFileRecord, StoreRecord, session

DEFAULT_MODEL = "multilingual-e5-small"
MAX_FILE_IDS = 500  # files one create or file batch names (OpenAI's limit)
EMBED_GROUP = 8  # chunks embedded at a time (the encoder is shared: a search waits for one group at most)
STATUSES = ("in_progress", "completed", "failed", "cancelled")
UNREADABLE = "The file's text could not be read (was the file deleted?)."  # an OSError: no server path
FAILED = "The file could not be processed (a server error, in the server's log)."
Embedded = Callable[[str, int], None]  # (the store's encoder, tokens): after each group embedded


def _now() -> int:
    return int(time.time())


# ------------------------------------------------------------------ stores
def create(
    name: str = "",
    file_ids: list[str] | None = None,
    chunking_strategy: dict | None = None,
    metadata: dict | None = None,
    expires_after: dict | None = None,
    embedding_model: str = DEFAULT_MODEL,
    added_by: str | None = None,
) -> dict:
    """A new store (files in ``file_ids`` added ``in_progress``: :func:`process` each, by the key
    ``added_by``); its object."""
    model = embedding_model and canonical(embedding_model)
    if model not in EMBEDDERS.names():
        raise ConfigError(
            f"Unknown embedding_model {embedding_model!r}.",
            where="embedding_model",
            hint=f"Use one of {', '.join(EMBEDDERS.names())}.",
        )
    strategy = _chunking(chunking_strategy, model)
    file_ids = _file_ids(file_ids)
    store_id, stamp = f"vs_{secrets.token_hex(12)}", _now()
    record = StoreRecord(
        id=store_id,
        name=_name(name),
        embedding_model=model,
        chunking=strategy,
        labels=filters.check_metadata(metadata),
        expires_days=_expiry(expires_after),
        created=stamp,
        last_active=stamp,
    )
    with session() as s:
        s.add(record)
        s.flush()  # the write lock: a file deleted from here on is seen below, one deleted later forgets it
        for file_id in file_ids:
            files.info(file_id)  # still there (deleted meanwhile: 404, and no store is made)
            s.add(_file_record(store_id, file_id, {}, strategy, added_by))
        s.commit()
    return get(store_id)


def build(name: str, documents: list, **options) -> dict:
    """A store of local ``documents`` (paths), embedded before it returns: the Python API's
    one call, for any number of documents. ``options`` as :func:`create`'s."""
    ids = [files.add(path)["id"] for path in documents]
    found = create(name, ids[:MAX_FILE_IDS], **options)
    for file_id in ids[MAX_FILE_IDS:]:  # past what one request may name: added one by one
        add_file(found["id"], file_id)
    for file_id in ids:
        process(found["id"], file_id)
    return get(found["id"])


def get(store_id: str) -> dict:
    with session() as s:
        return _store_object(s, store_of(s, store_id))


def listed() -> list[dict]:
    """Every store, newest first."""
    with session() as s:
        found = s.scalars(select(StoreRecord).order_by(StoreRecord.created.desc(), StoreRecord.id)).all()
        return [_store_object(s, r) for r in found]


def update(store_id: str, changes: dict) -> dict:
    """Change ``name``, ``metadata`` (replaced whole) or ``expires_after`` (None: never)."""
    with session() as s:
        record = store_of(s, store_id)
        if "name" in changes and changes["name"] is not None:
            record.name = _name(changes["name"])
        if "metadata" in changes and changes["metadata"] is not None:
            record.labels = filters.check_metadata(changes["metadata"])
        if "expires_after" in changes:
            record.expires_days = _expiry(changes["expires_after"])
        record.last_active = _now()
        s.commit()
        return _store_object(s, record)


def remove(store_id: str) -> dict:
    """Delete the store, its files' records and chunks (the uploaded files stay)."""
    with session() as s:
        _write_lock(s)
        store_of(s, store_id)
        for table in (ChunkRecord, StoreFileRecord, FileBatchRecord, StoreRecord):
            column = table.id if table is StoreRecord else table.store_id
            s.execute(delete(table).where(column == store_id))
        s.commit()
    return {"id": store_id, "object": "vector_store.deleted", "deleted": True}


# ------------------------------------------------------------------- files
def add_file(
    store_id: str,
    file_id: str,
    attributes: dict | None = None,
    chunking: dict | None = None,
    added_by: str | None = None,
) -> dict:
    """Add an uploaded document to the store, ``in_progress`` (:func:`process` it; its tokens are
    the key ``added_by``'s); adding it again re-reads it with the new attributes and chunking."""
    files.info(file_id)
    with session() as s:
        _write_lock(s)
        store = store_of(s, store_id)
        strategy = _chunking(chunking, store.embedding_model) if chunking else store.chunking
        attrs = filters.check_attributes(attributes)
        # read again under the write lock: an upload deleted before it is gone here (404), one
        # deleted after waits for this commit and then takes the file out (:func:`forget_file`)
        files.info(file_id)
        _drop_chunks(s, store, file_id)
        s.merge(_file_record(store_id, file_id, attrs, strategy, added_by))
        s.commit()
    return get_file(store_id, file_id)


def get_file(store_id: str, file_id: str) -> dict:
    with session() as s:
        return _file_object(_file(s, store_id, file_id))


def listed_files(store_id: str, status: str | None = None) -> list[dict]:
    """The store's files, newest first, of one ``status`` if given."""
    if status is not None and status not in STATUSES:
        raise ConfigError(
            f"Unknown status {status!r}.", where="filter", hint=f"Use one of {', '.join(STATUSES)}."
        )
    with session() as s:
        store_of(s, store_id)
        query = select(StoreFileRecord).where(StoreFileRecord.store_id == store_id)
        if status:
            query = query.where(StoreFileRecord.status == status)
        found = s.scalars(query.order_by(StoreFileRecord.created.desc(), StoreFileRecord.file_id)).all()
        return [_file_object(r) for r in found]


def set_attributes(store_id: str, file_id: str, attributes: dict) -> dict:
    """Replace a file's attributes (what filters read); its chunks stay."""
    with session() as s:
        record = _file(s, store_id, file_id)
        record.attributes = filters.check_attributes(attributes)
        s.commit()
        return _file_object(record)


def remove_file(store_id: str, file_id: str) -> dict:
    """Take a file out of the store (its chunks go; the uploaded file stays)."""
    with session() as s:
        store = store_of(s, store_id)
        record = _file(s, store_id, file_id)
        _drop_chunks(s, store, file_id)
        s.delete(record)
        s.commit()
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


def forget_file(file_id: str) -> list[str]:
    """Take a deleted upload out of every store that holds it; those stores' ids. Call it once the
    upload is gone: under the write lock, a store adding it meanwhile has either committed (and is
    found here) or will find it gone (:func:`add_file`)."""
    with session() as s:
        _write_lock(s)
        held = s.scalars(select(StoreFileRecord).where(StoreFileRecord.file_id == file_id)).all()
        ids = [r.store_id for r in held]
        for record in held:
            mine = (ChunkRecord.store_id == record.store_id, ChunkRecord.file_id == file_id)
            s.execute(delete(ChunkRecord).where(*mine))
            s.delete(record)
        if ids:
            moved = StoreRecord.revision + 1
            s.execute(sql_update(StoreRecord).where(StoreRecord.id.in_(ids)).values(revision=moved))
        s.commit()
    return ids


def file_content(store_id: str, file_id: str) -> dict:
    """A file's parsed text as the store holds it, chunk by chunk."""
    with session() as s:
        record = _file(s, store_id, file_id)
        texts = s.scalars(
            select(ChunkRecord.text)
            .where(ChunkRecord.store_id == store_id, ChunkRecord.file_id == file_id)
            .order_by(ChunkRecord.seq)
        ).all()
    info = files.info(file_id)
    return {
        "file_id": file_id,
        "filename": info["filename"],
        "attributes": record.attributes,
        "content": [{"type": "text", "text": t} for t in texts],
    }


def pending() -> list[tuple[str, str, str | None]]:
    """(store, file, the key that added it) of every file still ``in_progress``, oldest first."""
    with session() as s:
        rows = s.execute(
            select(StoreFileRecord.store_id, StoreFileRecord.file_id, StoreFileRecord.added_by)
            .where(StoreFileRecord.status == "in_progress")
            .order_by(StoreFileRecord.created)
        ).all()
    return [(a, b, c) for a, b, c in rows]


def process(
    store_id: str,
    file_id: str,
    admit: Callable[[int], None] | None = None,
    embedded: Embedded | None = None,
) -> int:
    """Chunk and embed a file added ``in_progress``: ``completed`` with its chunks, or ``failed``
    with the reason. Tokens embedded: those of every group embedded, also when the file was taken
    out (or its store deleted) halfway and nothing is kept; 0 if it was removed, or done, before.
    ``admit(tokens)`` is called before the embedding; a QuotaExceeded it raises fails the file
    (``rate_limit_exceeded``, OpenAI's code) with nothing embedded. ``embedded(model, tokens)`` is
    called after each group embedded (``model``: the store's encoder, as it was when the file was
    started), also when an error ends the file later: what to meter, whatever happens next."""
    with session() as s:
        record = s.get(StoreFileRecord, (store_id, file_id))
        store = s.get(StoreRecord, store_id)
        if record is None or store is None or record.status != "in_progress":
            return 0
        strategy, model = dict(record.chunking), store.embedding_model
    spent = [0]

    def count(tokens: int) -> None:
        spent[0] += tokens
        if embedded is not None:
            embedded(model, tokens)

    try:
        embedder = EMBEDDERS.backbone(model)
        pieces = chunks.split(
            files.text(file_id),
            embedder.tokenizer,
            strategy["max_chunk_size_tokens"],
            strategy["chunk_overlap_tokens"],
        )
        vectors, tokens = _embed(embedder, pieces, lambda: _still_wanted(store_id, file_id), admit, count)
    except QuotaExceeded as exc:
        finish(store_id, file_id, None, error={"code": "rate_limit_exceeded", "message": exc.message})
        return spent[0]
    except OSError:  # its text is gone (the upload deleted meanwhile): said without the server's paths
        finish(store_id, file_id, None, error={"code": "invalid_file", "message": UNREADABLE})
        return spent[0]
    except (AimassError, ValueError) as exc:
        finish(store_id, file_id, None, error={"code": "invalid_file", "message": str(exc)})
        return spent[0]
    except Exception:  # noqa: BLE001 — never left in_progress for ever; the details go to the log
        finish(store_id, file_id, None, error={"code": "server_error", "message": FAILED})
        raise
    if vectors is None:  # removed while it was embedded: what was embedded is still the key's
        return tokens
    finish(store_id, file_id, list(zip(pieces, vectors, strict=True)), tokens=tokens)
    return tokens


def _embed(
    embedder: Embedder, pieces: list[str], wanted, admit=None, embedded=None
) -> tuple[np.ndarray | None, int]:
    """The vectors of ``pieces`` (None once ``wanted()`` says no, between groups) and the tokens
    embedded: all of them, or those of the groups embedded before it stopped. ``embedded(tokens)``
    after each group."""
    prepared = embedder.prepare(pieces, "passage")
    counts = embedder.token_counts(prepared) if prepared else []
    if admit is not None:
        admit(sum(counts))
    found, spent = [], 0
    for start in range(0, len(prepared), EMBED_GROUP):
        if not wanted():
            return None, spent
        found.append(embedder.embed(prepared[start : start + EMBED_GROUP], batch_size=EMBED_GROUP).numpy())
        group = int(sum(counts[start : start + EMBED_GROUP]))
        spent += group
        if embedded is not None:
            embedded(group)
    dims = embedder.dimensions
    return (np.concatenate(found) if found else np.zeros((0, dims), np.float32)), spent


def _still_wanted(store_id: str, file_id: str) -> bool:
    with session() as s:
        record = s.get(StoreFileRecord, (store_id, file_id))
        return record is not None and record.status == "in_progress"


def finish(store_id: str, file_id: str, pieces, tokens: int = 0, error: dict | None = None) -> None:
    """End a file added ``in_progress``: ``completed`` with ``pieces`` (``(text, vector)`` pairs,
    kept in order) or ``failed`` with ``error``; a file no longer in progress is left alone."""
    with session() as s:
        _write_lock(s)  # what is read next stays so until the commit (a file taken out meanwhile)
        record = s.get(StoreFileRecord, (store_id, file_id))
        store = s.get(StoreRecord, store_id)
        if record is None or store is None or record.status != "in_progress":
            return
        if error is not None:
            record.status, record.last_error = "failed", error
        else:
            for seq, (text, vector) in enumerate(pieces):
                blob = np.asarray(vector, "<f4").tobytes()
                s.add(ChunkRecord(store_id=store_id, file_id=file_id, seq=seq, text=text, vector=blob))
            record.status, record.last_error, record.tokens = "completed", None, tokens
            record.usage_bytes = sum(len(t.encode()) + 4 * len(v) for t, v in pieces)
            store.revision += 1
        s.commit()


def cancel_file(store_id: str, file_id: str) -> None:
    """Stop a file still ``in_progress`` (``cancelled``); others are left as they are."""
    with session() as s:
        record = _file(s, store_id, file_id)
        if record.status == "in_progress":
            record.status = "cancelled"
            s.commit()


# ------------------------------------------------------------ file batches
def add_batch(store_id: str, entries: list[dict], added_by: str | None = None) -> dict:
    """Add several files at once (each ``{"file_id", "attributes", "chunking_strategy"}``, by the
    key ``added_by``), as one batch to follow; its object."""
    if not entries or len(entries) > MAX_FILE_IDS:
        raise ConfigError(f"A file batch holds 1 to {MAX_FILE_IDS} files.", where="file_ids")
    ids = _file_ids([e["file_id"] for e in entries])
    with session() as s:
        store_of(s, store_id)
    for entry in entries:
        add_file(
            store_id, entry["file_id"], entry.get("attributes"), entry.get("chunking_strategy"), added_by
        )
    batch_id = f"vsfb_{secrets.token_hex(12)}"
    with session() as s:
        s.add(FileBatchRecord(id=batch_id, store_id=store_id, file_ids=ids, created=_now()))
        s.commit()
    return get_batch(store_id, batch_id)


def get_batch(store_id: str, batch_id: str) -> dict:
    with session() as s:
        record = _batch(s, store_id, batch_id)
        counts = dict.fromkeys(STATUSES, 0)
        for status in _batch_statuses(s, record).values():
            counts[status] += 1
    busy = counts["in_progress"]
    status = "in_progress" if busy else "cancelled" if counts["cancelled"] else "completed"
    status = "failed" if not busy and counts["failed"] == len(record.file_ids) else status
    return {
        "id": record.id,
        "object": "vector_store.files_batch",
        "created_at": record.created,
        "vector_store_id": store_id,
        "status": status,
        "file_counts": counts | {"total": len(record.file_ids)},
    }


def batch_files(store_id: str, batch_id: str, status: str | None = None) -> list[dict]:
    with session() as s:
        record = _batch(s, store_id, batch_id)
        ids = record.file_ids
    found = [f for f in listed_files(store_id, status) if f["id"] in set(ids)]
    return found


def cancel_batch(store_id: str, batch_id: str) -> dict:
    """Stop the batch's files still ``in_progress``."""
    with session() as s:
        record = _batch(s, store_id, batch_id)
        for file_id, status in _batch_statuses(s, record).items():
            if status == "in_progress":
                s.get(StoreFileRecord, (store_id, file_id)).status = "cancelled"
        s.commit()
    return get_batch(store_id, batch_id)


def _batch(s, store_id: str, batch_id: str) -> FileBatchRecord:
    store_of(s, store_id)
    record = s.get(FileBatchRecord, batch_id) if isinstance(batch_id, str) else None
    if record is None or record.store_id != store_id:
        raise NotFoundError(f"Vector store {store_id} has no file batch '{batch_id}'.")
    return record


def _batch_statuses(s, record: FileBatchRecord) -> dict[str, str]:
    """Each of the batch's files' status now (one taken out since counts as cancelled)."""
    rows = s.execute(
        select(StoreFileRecord.file_id, StoreFileRecord.status).where(
            StoreFileRecord.store_id == record.store_id, StoreFileRecord.file_id.in_(record.file_ids)
        )
    ).all()
    found = dict(rows)
    return {f: found.get(f, "cancelled") for f in record.file_ids}


# ------------------------------------------------------------------ helpers
def store_of(s, store_id: str) -> StoreRecord:
    record = s.get(StoreRecord, store_id) if isinstance(store_id, str) else None
    if record is None:
        raise NotFoundError(
            f"No vector store {store_id!r}.",
            hint="`aimass stores list` (or GET /v1/vector_stores) lists them.",
        )
    return record


def _file(s, store_id: str, file_id: str) -> StoreFileRecord:
    store_of(s, store_id)
    record = s.get(StoreFileRecord, (store_id, file_id))
    if record is None:
        raise NotFoundError(
            f"Vector store {store_id} has no file '{file_id}'.",
            hint=f"GET /v1/vector_stores/{store_id}/files lists its files.",
        )
    return record


def _write_lock(s) -> None:
    """Take the database's write lock before reading: SQLite lets one writer at a time, and the
    transaction begins at its first write, so what this session reads next is the latest and stays
    so until it commits. An UPDATE of no row is enough."""
    s.execute(sql_update(StoreRecord).where(StoreRecord.id == "").values(revision=StoreRecord.revision))


def _drop_chunks(s, store: StoreRecord, file_id: str) -> None:
    s.execute(delete(ChunkRecord).where(ChunkRecord.store_id == store.id, ChunkRecord.file_id == file_id))
    store.revision += 1


def attributes_of(s, store_id: str) -> dict[str, dict]:
    rows = s.execute(
        select(StoreFileRecord.file_id, StoreFileRecord.attributes).where(
            StoreFileRecord.store_id == store_id
        )
    ).all()
    return {f: a or {} for f, a in rows}


def _file_record(
    store_id: str, file_id: str, attributes: dict, strategy: dict, added_by: str | None = None
) -> StoreFileRecord:
    return StoreFileRecord(
        store_id=store_id,
        file_id=file_id,
        status="in_progress",
        last_error=None,
        attributes=attributes,
        chunking=strategy,
        usage_bytes=0,
        tokens=0,
        created=_now(),
        added_by=added_by,
    )


def _file_ids(file_ids) -> list[str]:
    file_ids = list(dict.fromkeys(file_ids or []))
    if len(file_ids) > MAX_FILE_IDS:
        raise ConfigError(f"Add at most {MAX_FILE_IDS} files at once.", where="file_ids")
    for file_id in file_ids:
        files.info(file_id)
    return file_ids


def _chunking(requested: dict | None, model: str) -> dict:
    try:
        return chunks.strategy(requested, most_tokens(model))
    except ValueError as exc:
        raise ConfigError(str(exc), where="chunking_strategy") from None


def most_tokens(model: str) -> int:
    """The most tokens a chunk may hold for ``model``: its window less the special tokens, the
    passage prefix and one more (a chunk's first word can split differently after the prefix)."""
    embedder = EMBEDDERS.backbone(model)
    prefix = (
        embedder.tokenizer(embedder.prefix, add_special_tokens=False)["input_ids"] if embedder.prefix else []
    )
    return embedder.max_length - 2 - len(prefix) - 1


def _name(name) -> str:
    if not isinstance(name, str) or len(name) > 256:
        raise ConfigError("name is a string of at most 256 characters.", where="name")
    return name


def _expiry(expires_after: dict | None) -> int | None:
    if expires_after is None:
        return None
    days = expires_after.get("days") if isinstance(expires_after, dict) else None
    anchor = expires_after.get("anchor") if isinstance(expires_after, dict) else None
    if (
        anchor != "last_active_at"
        or not isinstance(days, int)
        or isinstance(days, bool)
        or not 1 <= days <= 365
    ):
        raise ConfigError(
            'expires_after is {"anchor": "last_active_at", "days": 1 to 365}.', where="expires_after"
        )
    return days


def status_of(s, store: StoreRecord) -> str:
    if store.expires_days and _now() > store.last_active + store.expires_days * 86400:
        return "expired"
    busy = s.scalar(
        select(func.count())
        .select_from(StoreFileRecord)
        .where(StoreFileRecord.store_id == store.id, StoreFileRecord.status == "in_progress")
    )
    return "in_progress" if busy else "completed"


def _store_object(s, store: StoreRecord) -> dict:
    rows = s.execute(
        select(StoreFileRecord.status, func.count(), func.sum(StoreFileRecord.usage_bytes))
        .where(StoreFileRecord.store_id == store.id)
        .group_by(StoreFileRecord.status)
    ).all()
    counts = dict.fromkeys(STATUSES, 0) | {status: n for status, n, _ in rows}
    expires_at = store.last_active + store.expires_days * 86400 if store.expires_days else None
    return {
        "id": store.id,
        "object": "vector_store",
        "created_at": store.created,
        "name": store.name,
        "usage_bytes": int(sum(b or 0 for *_, b in rows)),
        "file_counts": counts | {"total": sum(counts.values())},
        "status": status_of(s, store),
        "expires_after": {"anchor": "last_active_at", "days": store.expires_days}
        if store.expires_days
        else None,
        "expires_at": expires_at,
        "last_active_at": store.last_active,
        "metadata": store.labels or {},
        "embedding_model": store.embedding_model,
        "chunking_strategy": {"type": "static", "static": store.chunking},
    }


def _file_object(record: StoreFileRecord) -> dict:
    return {
        "id": record.file_id,
        "object": "vector_store.file",
        "usage_bytes": record.usage_bytes,
        "created_at": record.created,
        "vector_store_id": record.store_id,
        "status": record.status,
        "last_error": record.last_error,
        "chunking_strategy": {"type": "static", "static": record.chunking},
        "attributes": record.attributes or {},
    }
