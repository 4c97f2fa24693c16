"""Documents uploaded for retrieval (OpenAI's ``purpose`` ``assistants``), and their text.

A document lives beside the batch input files in ``AIMASS_HOME/files/<id>/``: the bytes as sent
(``original``), the text read from them (``text.txt``) and ``file.json``. Its text is read when it
arrives, so a PDF without a text layer, a damaged DOCX or a file that is not UTF-8 is refused then
(400 naming the file and how to fix it), not found out later inside a vector store.
"""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from aimass import paths
from aimass.data.documents import PARSED, extract_text
from aimass.errors import ConfigError, DataError, NotFoundError, TooLargeError

PURPOSE = "assistants"
PURPOSES = (PURPOSE, "user_data")  # OpenAI's two purposes for documents a model reads
MAX_CHARS = 5_000_000  # the most text one document may hold (about 2,500 pages)
MAX_BYTES = 128 * 2**20  # the largest document file (a PDF with pictures is large for its text)
TEXT_SUFFIXES = (
    *(".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".xml", ".yaml", ".yml"),
    *(".tex", ".py", ".js", ".ts", ".java", ".c", ".cc", ".cpp", ".h", ".go", ".rs", ".rb", ".sh", ".sql"),
)


def suffix_kind(filename: str) -> str:
    """``pdf``, ``docx``, ``html`` or ``text`` by the name's suffix; ConfigError for any other."""
    suffix = Path(filename).suffix.lower()
    if suffix in PARSED:
        return PARSED[suffix]
    if suffix in TEXT_SUFFIXES:
        return "text"
    known = ", ".join([*PARSED, *TEXT_SUFFIXES])
    raise ConfigError(
        f"{filename!r} is not a document this server reads.",
        where="file",
        hint=f"Send one of {known} (convert other formats to PDF or text first).",
    )


def read_text(data: bytes, filename: str) -> str:
    """The text of a document's bytes; DataError naming the file when it has none to read."""
    kind = suffix_kind(filename)
    if kind == "text":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"the file is not UTF-8 text (byte {exc.start} cannot be read)",
                where=filename,
                hint="Save it as UTF-8 (e.g. `iconv -f GB18030 -t UTF-8 in.txt > out.txt`).",
            ) from None
    else:
        text = extract_text(kind, data, filename, MAX_CHARS + 1)
    if len(text) > MAX_CHARS:
        raise DataError(
            f"the document holds more than {MAX_CHARS:,} characters",
            where=filename,
            hint="Split it into smaller files.",
        )
    if not text.strip():
        raise DataError("the document holds no text", where=filename, hint="Send a file with text in it.")
    return text


def store(upload: Path, filename: str, purpose: str = PURPOSE) -> dict:
    """Keep the document at ``upload`` (moved) with its text; its :func:`describe`. TooLargeError
    past :data:`MAX_BYTES`, before it is read."""
    size = upload.stat().st_size
    if size > MAX_BYTES:
        raise TooLargeError(
            f"the document has {size:,} bytes; a document may have at most {MAX_BYTES:,}",
            where=filename,
            hint="Split it into smaller files.",
        )
    text = read_text(upload.read_bytes(), filename)
    file_id = f"file-{secrets.token_hex(12)}"
    home = paths.subdir("files") / file_id
    home.mkdir()
    shutil.move(str(upload), home / "original")
    (home / "text.txt").write_text(text, encoding="utf-8")
    info = {
        "id": file_id,
        "filename": filename,
        "bytes": (home / "original").stat().st_size,
        "created_at": int(datetime.now(UTC).timestamp()),
        "purpose": purpose,
        "characters": len(text),
    }
    (home / "file.json").write_text(json.dumps(info, ensure_ascii=False))
    return describe(info)


def add(path: str | Path, purpose: str = PURPOSE, filename: str | None = None) -> dict:
    """Keep a copy of the local document at ``path`` (the Python API's upload), called ``filename``
    (default: its own name); its :func:`describe`."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise NotFoundError(f"No file {source}.", hint="Give the path of a PDF, DOCX, HTML or text file.")
    copy = paths.subdir("uploads") / f".document-{secrets.token_hex(6)}"
    shutil.copyfile(source, copy)
    try:
        return store(copy, filename or source.name, purpose)
    finally:
        copy.unlink(missing_ok=True)


def is_document(info: dict) -> bool:
    return info.get("purpose") in PURPOSES


def describe(info: dict) -> dict:
    """A document's OpenAI file object, from its ``file.json``."""
    return {
        "id": info["id"],
        "object": "file",
        "bytes": info["bytes"],
        "created_at": info["created_at"],
        "filename": info["filename"],
        "purpose": info["purpose"],
        "status": "processed",
        "status_details": f"{info['characters']:,} characters of text",
    }


def info(file_id: str) -> dict:
    """A document's ``file.json``; 404 for an unknown id or a file that is not a document."""
    try:
        found = json.loads((folder(file_id) / "file.json").read_text())
    except (FileNotFoundError, ValueError):
        found = {}
    if not is_document(found):
        raise NotFoundError(
            f"No document '{file_id}'.",
            hint="Upload one with POST /v1/files (purpose 'assistants'); GET /v1/files lists them.",
        )
    return found


def text(file_id: str) -> str:
    return (folder(file_id) / "text.txt").read_text(encoding="utf-8")


def original(file_id: str) -> bytes:
    return (folder(file_id) / "original").read_bytes()


def folder(file_id: str) -> Path:
    if not file_id.startswith("file-") or not file_id[5:].isalnum() or len(file_id) != 29:
        raise missing_file(file_id)
    return paths.home() / "files" / file_id


def missing_file(file_id: str) -> NotFoundError:
    """The one answer for a file that is not there, or that the caller may not see."""
    return NotFoundError(f"No file '{str(file_id)[:100]}'.", hint="GET /v1/files lists the files.")
