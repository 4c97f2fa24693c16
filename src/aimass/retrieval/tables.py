"""The vector store tables, in the registry's SQLite file (``AIMASS_HOME/aimass.db``), on their own
declarative base, created on first use by :func:`session`; a column added since a home's database
was made is added to it then (as the registry's are, :func:`aimass.store.db._add_new_columns`)."""

from __future__ import annotations

from sqlalchemy import JSON, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aimass.store import db


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON}


class StoreRecord(Base):
    __tablename__ = "vector_stores"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    embedding_model: Mapped[str] = mapped_column(String(100))
    chunking: Mapped[dict] = mapped_column(default=dict)
    labels: Mapped[dict] = mapped_column(default=dict)  # OpenAI's metadata
    expires_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[int] = mapped_column(Integer)
    last_active: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer, default=0)  # bumped whenever its chunks change


class StoreFileRecord(Base):
    __tablename__ = "vector_store_files"
    store_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    last_error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    attributes: Mapped[dict] = mapped_column(default=dict)
    chunking: Mapped[dict] = mapped_column(default=dict)
    usage_bytes: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer)
    # the key that added it: its embedding is metered to that key (and held to its quota), also when
    # a restarted server finishes it; None for the Python API's and the command line's files
    added_by: Mapped[str | None] = mapped_column(String(16), nullable=True)


class ChunkRecord(Base):
    __tablename__ = "vector_store_chunks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(40), index=True)
    file_id: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class FileBatchRecord(Base):
    __tablename__ = "vector_store_file_batches"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(40), index=True)
    file_ids: Mapped[list] = mapped_column(default=list)
    created: Mapped[int] = mapped_column(Integer)


def session():
    """A session on the registry's database, with the vector store tables created (and the columns
    they gained since it was made added)."""
    return db.session_with(Base.metadata)
