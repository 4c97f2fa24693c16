"""Pages of the metadata tables for lists that grow without bound (jobs, model versions, datasets).

Each function answers ``(rows, total)`` for one page: a ``LIMIT/OFFSET`` query on an indexed order plus
one ``COUNT``, so a page costs the same with 10 or 10,000 rows behind it. The REST read routes and
the web console call these; nothing else needs them.

``keep`` (names -> the names the caller may see, e.g. by access policy) pages what it keeps instead:
the (id, name) of every row are read and filtered, then only the page's rows are loaded, so
``total`` counts only visible rows and no page has gaps.

>>> clamp(5000, -3)
(1000, 0)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from sqlalchemy import String, cast, func, literal, select

from aimass.store.db import DatasetRecord, JobRecord, ModelVersionRecord, session

MAX_PAGE = 1000


def clamp(limit: int, offset: int) -> tuple[int, int]:
    """``limit`` into 1..MAX_PAGE and ``offset`` to at least 0."""
    return max(1, min(int(limit), MAX_PAGE)), max(0, int(offset))


Keep = Callable[[set[str]], set[str]]


def _page(query, count, limit: int, offset: int, keep: Keep | None = None, key=None) -> tuple[list, int]:
    """One page of ``query``; with ``keep``, of the rows whose ``key`` = (id column, name
    expression) names a row ``keep`` keeps."""
    limit, offset = clamp(limit, offset)
    with session() as s:
        if keep is not None:
            pairs = s.execute(query.with_only_columns(*key)).all()
            seen = keep({name for _, name in pairs})
            ids = [i for i, name in pairs if name in seen]
            page = ids[offset : offset + limit]
            rows = list(s.scalars(query.where(key[0].in_(page)))) if page else []
            return rows, len(ids)
        rows = list(s.scalars(query.limit(limit).offset(offset)).all())
        total = s.scalar(count) or 0
    return rows, total


def jobs(
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
    keep: Keep | None = None,
    metadata: dict | None = None,
) -> tuple[list[JobRecord], int]:
    """Jobs, newest first, optionally of one status and holding every pair of ``metadata``."""
    query = select(JobRecord).order_by(JobRecord.created.desc(), JobRecord.id)
    count = select(func.count()).select_from(JobRecord)
    wheres = [JobRecord.status == status] if status else []
    wheres += [JobRecord.meta[k].as_string() == v for k, v in (metadata or {}).items()]
    for where in wheres:
        query, count = query.where(where), count.where(where)
    return _page(query, count, limit, offset, keep, (JobRecord.id, JobRecord.id))


def versions(
    name: str | None = None, limit: int = 50, offset: int = 0, keep: Keep | None = None
) -> tuple[list[ModelVersionRecord], int]:
    """Model versions, newest first, optionally of one model."""
    query = select(ModelVersionRecord).order_by(ModelVersionRecord.id.desc())
    count = select(func.count()).select_from(ModelVersionRecord)
    if name:
        where = ModelVersionRecord.name == name
        query, count = query.where(where), count.where(where)
    ref = ModelVersionRecord.name + literal(":") + cast(ModelVersionRecord.version, String)
    return _page(query, count, limit, offset, keep, (ModelVersionRecord.id, ref))


def datasets(limit: int = 50, offset: int = 0, keep: Keep | None = None) -> tuple[list[DatasetRecord], int]:
    """Imported datasets, newest first."""
    query = select(DatasetRecord).order_by(DatasetRecord.created.desc(), DatasetRecord.id)
    count = select(func.count()).select_from(DatasetRecord)
    return _page(query, count, limit, offset, keep, (DatasetRecord.id, DatasetRecord.name))


def dataset_record(dataset_id: str) -> DatasetRecord | None:
    with session() as s:
        return s.get(DatasetRecord, dataset_id)


def deployable_versions(name: str) -> list[str]:
    """Refs of every version of ``name``, newest first (at most MAX_PAGE)."""
    rows, _ = versions(name, MAX_PAGE, 0)
    return [r.ref for r in rows]


def keeping(visible: Callable[[str, set[str]], set[str]] | None, kind: str) -> Keep | None:
    """A ``keep`` for the page functions: the names ``visible(kind, names)`` answers (an access
    policy's "may read"); None (every row) without ``visible``."""
    return None if visible is None else functools.partial(visible, kind)
