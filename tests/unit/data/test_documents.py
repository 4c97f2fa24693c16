"""Documents (PDF, Word, HTML, text) in class folders and archives become text rows; a document
that cannot be read is a reject that says why and what to do, never a silent loss."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from pypdf import PdfWriter

from aimass.data import bbc_news_documents, bbc_news_path, bbc_news_text, import_dataset, looks_like_images
from aimass.data.bundled import docx_bytes, html_bytes, pdf_bytes
from aimass.data.documents import docx_text, extract_text, html_text, pdf_text
from aimass.errors import DataError, TooLargeError

ARTICLE = sorted((bbc_news_path() / "business").glob("*.txt"))[0]


def words(text: str) -> list[str]:
    return text.split()


@pytest.fixture(scope="module")
def article() -> str:
    return bbc_news_text(ARTICLE)


FORMATS = [(pdf_bytes, pdf_text), (docx_bytes, docx_text), (html_bytes, html_text)]


@pytest.mark.parametrize(("write", "read"), FORMATS)
def test_each_format_gives_back_the_article(article, write, read):
    got = read(write(article))
    assert words(got) == words(article)  # the same words in the same order; only line breaks differ


def test_chinese_text_survives_word_and_html():
    review = "质量很好，物流也快。\n第二行：不会再买了"
    assert docx_text(docx_bytes(review)) == review
    assert html_text(html_bytes("标题\n" + review)) == "标题\n" + review
    assert html_text("<p>质量很好</p>".encode("gb18030")) == "质量很好"  # not UTF-8: GB18030 next


def test_html_drops_scripts_styles_and_the_title_and_unescapes():
    page = b"<html><head><title>T</title><style>p{}</style></head><body><h1>Rates &amp; jobs</h1>"
    page += b"<script>alert(1)</script><p>Up&nbsp;3%</p><p>\xe4\xb8\xad\xe6\x96\x87</p></body></html>"
    assert html_text(page) == "Rates & jobs\nUp 3%\n中文"  # white space (a no-break space too) as one


def test_a_scanned_or_protected_pdf_is_an_error_with_a_way_out():
    blank = PdfWriter()
    blank.add_blank_page(612, 792)  # a page with no text layer, as a scan looks to a text reader
    out = io.BytesIO()
    blank.write(out)
    with pytest.raises(DataError, match="holds no text") as raised:
        extract_text("pdf", out.getvalue(), "scan.pdf", 10**6)
    assert "OCR" in raised.value.hint and raised.value.where == "scan.pdf"

    locked = PdfWriter(clone_from=io.BytesIO(pdf_bytes("secret plans")))
    locked.encrypt("hunter2")
    out = io.BytesIO()
    locked.write(out)
    with pytest.raises(DataError, match="password-protected") as raised:
        pdf_text(out.getvalue(), "locked.pdf")
    assert "without a password" in raised.value.hint


def test_page_and_zip_bomb_limits_hold_before_the_work(monkeypatch):
    monkeypatch.setenv("AIMASS_MAX_DOCUMENT_PAGES", "1")
    with pytest.raises(TooLargeError, match="2 pages; the limit is 1"):
        pdf_text(pdf_bytes("line\n" * 60), "long.pdf")  # 50 lines a page: two pages
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", "<w:document>" + " " * (64 * 2**20) + "</w:document>")
    with pytest.raises(TooLargeError, match="unpacks to 64.0 MiB") as raised:
        docx_text(bomb.getvalue(), "bomb.docx")
    assert "zip bomb" in raised.value.hint
    with pytest.raises(DataError, match="not a readable .docx"):
        docx_text(b"PK\x03\x04 not really a zip", "broken.docx")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """BBC News as 12 documents a topic (PDF, Word, HTML and text in turn) plus five bad files."""
    root = bbc_news_documents(tmp_path_factory.mktemp("docs") / "news", per_class=12)
    (root / "tech" / "truncated.pdf").write_bytes(pdf_bytes("cut short")[:300])
    scan = PdfWriter()
    scan.add_blank_page(612, 792)
    scan.write(root / "sports" / "scan.pdf")
    (root / "politics" / "empty.html").write_bytes(b"<html><body><script>x()</script></body></html>")
    (root / "business" / "minutes.doc").write_bytes(b"\xd0\xcf\x11\xe0 an old Word file")
    (root / "README.pdf").write_bytes(pdf_bytes("not in a class folder"))
    return root


def test_a_folder_of_documents_imports_every_readable_one_and_names_the_rest(folder, home):
    ds = import_dataset(folder)
    summary = ds.summary()
    assert summary["rows"] == 60 and summary["documents"] == {"pdf": 15, "docx": 15, "html": 15, "text": 15}
    texts = dict(zip(ds.texts(), ds.labels()))
    article = " ".join(bbc_news_text(ARTICLE).split())
    assert [label for text, label in texts.items() if " ".join(text.split()) == article] == ["business"]
    rejects = [json.loads(line) for line in ds.rejects_path.read_text().splitlines()]
    by_file = {Path(r["file"]).name: r for r in rejects}
    assert set(by_file) == {"truncated.pdf", "scan.pdf", "empty.html"}
    assert all(r["kind"] == "unreadable document" for r in rejects)
    assert "not a readable PDF" in by_file["truncated.pdf"]["reason"]
    assert "OCR" in by_file["scan.pdf"]["reason"] and "no text" in by_file["empty.html"]["reason"]
    assert "documents: 15 pdf, 15 docx, 15 html, 15 text" in ds.describe()
    warnings = " ".join(summary["warnings"])
    assert "business/minutes.doc" in warnings and "README.pdf" in warnings
    assert "save .doc files as .docx" in warnings


@pytest.mark.parametrize("kind", ["zip", "gztar"])
def test_an_archive_of_the_folder_is_the_same_dataset(folder, tmp_path, kind, home):
    archive = Path(shutil.make_archive(str(tmp_path / "news"), kind, folder.parent, folder.name))
    assert not looks_like_images(archive)
    from_archive = import_dataset(archive, name="news-archive")
    from_folder = import_dataset(folder)
    assert from_archive.id == from_folder.id  # same rows, same splits: one stored dataset
    assert sorted(from_archive.texts()) == sorted(from_folder.texts())


def test_rejects_in_an_archive_name_the_member(tmp_path, home):
    root = bbc_news_documents(tmp_path / "news", per_class=4, formats=("docx", "txt"))
    (root / "tech" / "bad.docx").write_bytes(b"PK\x03\x04 broken")
    with tarfile.open(tmp_path / "news.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="news")
    ds = import_dataset(tmp_path / "news.tar.gz")
    [reject] = [json.loads(line) for line in ds.rejects_path.read_text().splitlines()]
    assert reject["file"] == f"{tmp_path / 'news.tar.gz'}/news/tech/bad.docx"
    assert ds.summary()["rows"] == 20


def test_an_archive_with_images_still_imports_as_images(tmp_path):
    with zipfile.ZipFile(tmp_path / "mixed.zip", "w") as zf:
        zf.writestr("cat/1.png", b"\x89PNG")
        zf.writestr("cat/notes.txt", b"a cat")
    assert looks_like_images(tmp_path / "mixed.zip")


def test_the_command_line_reads_a_document_path_as_its_text(tmp_path):
    from aimass.tasks.text_classification import TextClassification

    (tmp_path / "memo.docx").write_bytes(docx_bytes("Budget talks\nThe chancellor spoke."))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    texts = TextClassification.cli_inputs([str(tmp_path / "memo.docx"), "plain words", "missing.pdf"])
    assert texts == ["Budget talks\nThe chancellor spoke.", "plain words", "missing.pdf"]
    with pytest.raises(DataError, match="not a readable PDF") as raised:
        TextClassification.cli_inputs([str(tmp_path / "broken.pdf")])
    assert raised.value.where == str(tmp_path / "broken.pdf") and raised.value.hint


@pytest.mark.parametrize(("write", "read"), FORMATS)
def test_a_damaged_document_is_text_or_a_data_error_never_a_crash(write, read):
    """Bytes flipped and files cut short, 150 ways a format (seeded): the parser's own failures
    (zlib.error, NotImplementedError ...) are the file's, so each is a DataError naming it."""
    import random

    rng, good = random.Random(0), write("Hello world (a test) \\ of\nline two\n" * 40)
    for _ in range(150):
        data = bytearray(good)
        for _ in range(rng.randint(1, 30)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randrange(len(data))] if rng.random() < 0.3 else data
        try:
            assert isinstance(read(bytes(data), "damaged"), str)
        except DataError as exc:
            assert exc.where == "damaged" and exc.hint
