"""Text out of documents: PDF, Word (.docx) and HTML, for class folders, archives and predictions.

Plain text (.txt) is decoded by :mod:`aimass.data.read`; this module handles the formats
that need a parser: ``pypdf`` for PDF, ``python-docx`` for .docx, the standard library's HTML
parser for HTML. A document that yields no text is an error that says why and what to do (a
scanned PDF has no text layer, a password-protected one cannot be opened), never an empty row.

Bounds, checked before the work: a PDF's page count (``AIMASS_MAX_DOCUMENT_PAGES``, default
2,000; pypdf itself caps each decompressed stream), a .docx's unpacked size and compression ratio
(the archive limits of :mod:`aimass.data.archive`), and the text kept (the caller's character
limit). Extraction stops once the text passes that limit (white space at the ends of a page,
paragraph or cell not counted; in HTML, no white space): the text returned is then longer than the
limit, never a prefix that fits, so the importer rejects the document as too large (and ``predict``
keeps its start). An HTML page is parsed in growing pieces for the same
reason: a megabyte of inline script before the body costs time, never the body's text.

A ``.txt`` file is the plain-text reader's, but one that holds a PDF, a zip (a .docx) or other
binary bytes under that name is refused here (:func:`check_plain_text`), not read as text.

>>> document_kind("report.PDF", b"")
'pdf'
>>> document_kind(None, b"<!DOCTYPE html><html><body>hi</body></html>")
'html'
>>> html_text(b"<p>Rates <b>rise</b></p><script>x()</script><p>again</p>")
'Rates rise\\nagain'
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import zipfile
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
HTML_PIECE = 64 * 1024  # characters fed to the HTML parser first; each piece then doubles
CONTROL_SHARE = 0.1  # a "text" file whose start is this much control characters is binary
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # not tab, line ends, form feed

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
        max_chars: Stop extracting once the text passes this many characters; the text returned is
            then longer than ``max_chars`` (the importer rejects the document, ``predict`` keeps its start).

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
            texts.append((page.extract_text() or "").strip())
            size += len(texts[-1])
            if size > max_chars:  # the text joined is longer still: the caller sees it was cut
                break
    except (DataError, *_NOT_THE_FILE):
        raise
    except Exception as exc:  # noqa: BLE001 - see _NOT_THE_FILE
        raise _unreadable("PDF", exc, where) from exc
    return "\n\n".join(t for t in texts if t)


def docx_text(data: bytes, where: str = "document", max_chars: int = 10**9) -> str:
    """The body's paragraphs and table cells, one per line; a merged cell once (python-docx gives it
    once per grid column and row it spans)."""
    _check_docx_size(data, where)
    from docx import Document

    try:
        document = Document(io.BytesIO(data))
        lines, size = [], 0
        for block in document.iter_inner_content():
            texts = [block.text] if getattr(block, "rows", None) is None else _cell_texts(block)
            lines += [t.strip() for t in texts if t.strip()]
            size += sum(len(t.strip()) for t in texts)
            if size > max_chars:  # the text joined is longer still: the caller sees it was cut
                break
    except _NOT_THE_FILE:
        raise
    except Exception as exc:  # noqa: BLE001 - see _NOT_THE_FILE
        raise _unreadable(".docx", exc, where) from exc
    return "\n".join(lines)


def _cell_texts(table) -> list[str]:
    """Each cell's text once: a merged cell is one ``<w:tc>`` element that python-docx hands out for
    every grid cell it covers (the elements are kept in ``seen``, so identity is theirs)."""
    seen, texts = set(), []
    for row in table.rows:
        for cell in row.cells:
            if cell._tc not in seen:
                seen.add(cell._tc)
                texts.append(cell.text)
    return texts


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
        self.size = 0  # characters kept, white space left out

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
            self.size += len("".join(data.split()))


def html_text(data: bytes, where: str = "document", max_chars: int = 10**9) -> str:
    """The visible text of an HTML page (UTF-16/32 by its byte order mark, else UTF-8, else the page's
    declared charset, else GB18030, else latin-1).

    The page is fed to the parser in pieces, each twice the one before (the parser searches what it
    holds again at each piece: doubling keeps a long script linear), until the visible text passes
    ``max_chars``; it is then longer than ``max_chars`` (see the module's note on limits). Character
    references are resolved once, by the parser.
    """
    page = _decode_html(data, where)
    parser, start, piece = _HTMLText(), 0, HTML_PIECE
    while start < len(page) and parser.size <= max_chars:
        parser.feed(page[start : start + piece])
        start, piece = start + piece, piece * 2
    if start >= len(page):
        parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _decode_html(data: bytes, where: str = "document") -> str:
    wide = wide_encoding(data)
    if wide is not None:  # Windows' "Save as Unicode" writes UTF-16 with a byte order mark
        try:
            return data.decode(wide).lstrip("\ufeff")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"the page is {wide.upper()} but breaks at byte {exc.start}",
                where=where,
                hint="Open it and save it again as UTF-8.",
            ) from None
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


def wide_encoding(data: bytes) -> str | None:
    """``utf-32``/``utf-16`` (a byte order mark), ``utf-16-le``/``utf-16-be`` (no mark, but NULs at
    every other byte of the start and none between, as UTF-16 text has), else None. The plain-text
    reader (:func:`aimass.data.read.decode_lines`) and HTML pages both ask it.

    >>> wide_encoding("text,label".encode("utf-16-le")), wide_encoding(b"text,label")
    ('utf-16-le', None)
    """
    for bom, name in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return name
    sample = data[:4096]
    even, odd = sample[0::2], sample[1::2]
    if len(sample) < 8:
        return None
    # ASCII characters (separators, digits, line ends) leave a NUL at every other byte; Chinese text
    # has fewer of them, but never NULs on both sides
    if odd.count(0) > 0.1 * len(odd) and even.count(0) < 0.01 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.1 * len(even) and odd.count(0) < 0.01 * len(odd):
        return "utf-16-be"
    return None


def check_plain_text(data: bytes, text: str, where: str) -> None:
    """Refuse a file named as plain text that is not: a PDF or a zip (a .docx?) renamed ``.txt``, or
    bytes whose decoded start (``text``) is mostly control characters (an image, a program, random
    bytes). Decoded text is judged, so UTF-16 text (a NUL at every other byte) and Chinese text pass;
    a stray NUL or terminal colour code in real text is far below :data:`CONTROL_SHARE`.

    A PDF renamed ``.txt`` is refused rather than read as a PDF: the name says text, so the file is
    likely not what its owner meant to import, and renaming it is one step.

    >>> check_plain_text(b"%PDF-1.7 ...", "", "a.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aimass.errors.DataError: a.txt: the file holds a PDF document, not plain text...
    """
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF-"):
        found, hint = "a PDF document", "Rename it .pdf, and its text layer is read."
    elif head.startswith(b"PK\x03\x04"):
        docx = b"word/" in data[:65536]
        found = "a Word document (.docx)" if docx else "a zip archive"
        hint = "Rename it .docx." if docx else "Extract it, and import the files inside."
    else:
        sample = text[:8192]
        if not sample or len(_CONTROL.findall(sample)) <= CONTROL_SHARE * len(sample):
            return
        found = "binary data (control characters)"
        hint = "Import only text files as .txt (UTF-8); convert other files to text first."
    raise DataError(f"the file holds {found}, not plain text", where=where, hint=hint)


def old_format_hint(name: str) -> str | None:
    """For a .doc, .rtf, .odt, .xls(x) file: what to save it as."""
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    target = OLD_FORMATS.get(suffix)
    return f"save {suffix} files as {target}" if target else None
