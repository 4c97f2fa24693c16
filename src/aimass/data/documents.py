"""Text out of documents: PDF, Word (.docx) and HTML, for class folders, archives and predictions.

Plain text (.txt) is decoded by :mod:`aimass.data.read`; this module handles the formats
that need a parser: ``pypdf`` for PDF, ``python-docx`` for .docx, the standard library's HTML
parser for HTML. A document that yields no text is an error that says why and what to do (a
scanned PDF has no text layer, a password-protected one cannot be opened), never an empty row.

Bounds, checked before the work: a PDF's page count (``AIMASS_MAX_DOCUMENT_PAGES``, default
2,000; pypdf itself caps each decompressed stream), a .docx's unpacked size and compression ratio
(the archive limits of :mod:`aimass.data.archive`), and the text kept (the caller's character
limit: extraction stops once it is passed).

>>> document_kind("report.PDF", b"")
'pdf'
>>> document_kind(None, b"<!DOCTYPE html><html><body>hi</body></html>")
'html'
>>> html_text(b"<p>Rates <b>rise</b></p><script>x()</script><p>again</p>")
'Rates rise\\nagain'
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from html import unescape
from html.parser import HTMLParser

from aimass.data.archive import MAX_RATIO, RATIO_FLOOR, archive_names
from aimass.data.limits import MIB, limit, mebibytes
from aimass.errors import DataError, TooLargeError

TEXT_SUFFIXES = (".txt",)  # a README.md beside the data is a note, not a row
PARSED = {".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html"}
SUFFIXES = (*TEXT_SUFFIXES, *PARSED)
LISTED = ", ".join(SUFFIXES)
MAX_PAGES = 2000
PAGES_ENV = "AIMASS_MAX_DOCUMENT_PAGES"
MAX_DOCX_UNPACKED = 256 * MIB
OLD_FORMATS = {".doc": ".docx", ".rtf": ".docx", ".odt": ".docx", ".xls": "CSV", ".xlsx": "CSV"}

# pypdf logs each quirk it recovers from (at WARNING and ERROR); the text, or the reject, is what counts
logging.getLogger("pypdf").setLevel(logging.CRITICAL)
# A damaged file can fail anywhere inside a parser (zlib.error, NotImplementedError, RecursionError...):
# every such failure is the file's, and becomes its reject; running out of memory is not.
_NOT_THE_FILE = (MemoryError,)


def document_kind(name: str | None, data: bytes) -> str | None:
    """``pdf``, ``docx``, ``html``, ``text``, or None (not a document): by the name's suffix when
    there is one, else by the first bytes (uploads to ``predict`` arrive without a name)."""
    suffix = "." + name.rsplit(".", 1)[-1].lower() if name and "." in name else ""
    if suffix in PARSED:
        return PARSED[suffix]
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix:
        return None
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04") and b"word/" in data[:65536]:
        return "docx"
    if re.match(rb"(?i)<(!doctype html|html|head|body)[\s>]", head):
        return "html"
    return "text"


def is_document(name: str) -> bool:
    """True for a file name this module (or the plain-text reader) can read."""
    return name.lower().endswith(SUFFIXES)


def holds_documents(path) -> bool:
    """True for an archive that holds documents and no images (a text dataset). The listing stops
    at the first image, so an archive of photos is not read to its end."""
    from aimass.data.images import IMAGE_EXTENSIONS

    found = False
    for name in archive_names(path):
        name = name.lower()
        if name.endswith(IMAGE_EXTENSIONS):
            return False
        found = found or name.endswith(SUFFIXES)
    return found


def extract_text(kind: str, data: bytes, where: str, max_chars: int) -> str:
    """The text of a ``pdf``, ``docx`` or ``html`` document.

    Args:
        kind: What :func:`document_kind` said.
        data: The file's bytes.
        where: The file, for messages.
        max_chars: Stop extracting past this many characters (the caller rejects the document).

    Raises:
        DataError: The document cannot be read or holds no text; the hint says what to do.
        TooLargeError: Over the page limit, or a .docx that unpacks past its limits.
    """
    text = {"pdf": pdf_text, "docx": docx_text, "html": html_text}[kind](data, where, max_chars)
    if not text.strip():
        hint = {
            "pdf": "A scanned PDF has no text layer: run OCR on it first (e.g. `ocrmypdf in.pdf out.pdf`).",
            "docx": "Check that the document has text in its body, not only pictures.",
            "html": "Check that the page has text outside scripts and styles.",
        }[kind]
        raise DataError(f"the {kind.upper()} document holds no text", where=where, hint=hint)
    return text


def pdf_text(data: bytes, where: str = "document", max_chars: int = 10**9) -> str:
    """Every page's text, pages separated by a blank line."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # many PDFs open with an empty password
            raise DataError(
                "the PDF is password-protected",
                where=where,
                hint="Save a copy without a password (print to PDF) and import that.",
            )
        pages = len(reader.pages)
        most = limit(PAGES_ENV, MAX_PAGES, None)
        if pages > most:
            raise TooLargeError(
                f"the PDF has {pages:,} pages; the limit is {most:,}",
                where=where,
                hint=f"Split it into smaller documents, or raise {PAGES_ENV}.",
            )
        texts, size = [], 0
        for page in reader.pages:
            texts.append(page.extract_text() or "")
            size += len(texts[-1])
            if size > max_chars:
                break
    except (DataError, *_NOT_THE_FILE):
        raise
    except Exception as exc:  # noqa: BLE001 - see _NOT_THE_FILE
        raise _unreadable("PDF", exc, where) from exc
    return "\n\n".join(t.strip() for t in texts if t.strip())


def docx_text(data: bytes, where: str = "document", max_chars: int = 10**9) -> str:
    """The body's paragraphs and table cells, one per line."""
    _check_docx_size(data, where)
    from docx import Document

    try:
        document = Document(io.BytesIO(data))
        lines, size = [], 0
        for block in document.iter_inner_content():
            cells = getattr(block, "rows", None)
            texts = [block.text] if cells is None else [c.text for row in block.rows for c in row.cells]
            lines += [t.strip() for t in texts if t.strip()]
            size += sum(len(t) for t in texts)
            if size > max_chars:
                break
    except _NOT_THE_FILE:
        raise
    except Exception as exc:  # noqa: BLE001 - see _NOT_THE_FILE
        raise _unreadable(".docx", exc, where) from exc
    return "\n".join(lines)


def _check_docx_size(data: bytes, where: str) -> None:
    """A .docx is a zip: its unpacked size and ratio are bounded before it is parsed."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
    except _NOT_THE_FILE:
        raise
    except Exception as exc:  # noqa: BLE001 - see _NOT_THE_FILE
        raise _unreadable(".docx", exc, where) from exc
    most = limit("AIMASS_MAX_ARCHIVE_BYTES", MAX_DOCX_UNPACKED, None)
    ratio = limit("AIMASS_MAX_ARCHIVE_RATIO", MAX_RATIO, None)
    if unpacked > most or (unpacked > RATIO_FLOOR and unpacked > ratio * max(len(data), 1)):
        raise TooLargeError(
            f"the .docx unpacks to {mebibytes(unpacked)} from {mebibytes(len(data))}",
            where=where,
            hint="Check the file (a zip bomb?), or raise AIMASS_MAX_ARCHIVE_BYTES or _RATIO.",
        )


def _unreadable(kind: str, exc: Exception, where: str) -> DataError:
    return DataError(
        f"not a readable {kind} file: {type(exc).__name__}: {str(exc)[:200]}",
        where=where,
        hint=f"Open it and save it again as {kind}, or export its text to a .txt file.",
    )


class _HTMLText(HTMLParser):
    """Text of an HTML page: scripts, styles and templates dropped, blocks on their own lines."""

    SKIP = {"script", "style", "template", "noscript", "svg", "title"}
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_text(data: bytes, where: str = "document", max_chars: int = 10**9) -> str:
    """The visible text of an HTML page (UTF-8, else the page's declared charset, else latin-1)."""
    page = _decode_html(data)
    parser = _HTMLText()
    parser.feed(page[: max_chars * 4 + 1])  # markup is dropped: four times the kept text is ample
    parser.close()
    lines = (" ".join(line.split()) for line in unescape("".join(parser.parts)).splitlines())
    return "\n".join(line for line in lines if line)


def _decode_html(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    declared = re.search(rb"""charset=["']?([A-Za-z0-9_\-]+)""", data[:4096])
    for encoding in ([declared.group(1).decode("ascii")] if declared else []) + ["gb18030", "latin-1"]:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def old_format_hint(name: str) -> str | None:
    """For a .doc, .rtf, .odt, .xls(x) file: what to save it as."""
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    target = OLD_FORMATS.get(suffix)
    return f"save {suffix} files as {target}" if target else None
