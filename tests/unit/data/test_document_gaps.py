"""Gaps in reading documents: text after a big inline script, documents in nested folders, UTF-16
HTML, binary files named .txt, merged Word cells, white space under the character limit, and per-format
counts that add up to the rows. Tiny files built in tmp_path; no model."""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path

import docx
import pytest

from aimass.data import import_dataset
from aimass.data.bundled import docx_bytes, pdf_bytes
from aimass.data.documents import docx_text, html_text
from aimass.data.read import read_folder

LIMIT = 1000  # AIMASS_MAX_FIELD_CHARS in the tests that read folders


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    """``{"pos/a.txt": text or bytes}`` under ``root``."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def rejects_of(table) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in table.malformed}


# 1. HTML: the text after a big script is read; a page whose text passes the limit is too large


def test_text_after_a_script_longer_than_four_times_the_limit_is_kept():
    page = f"<p>INTRO</p><script>{'var x = 1;' * LIMIT}</script><p>CONCLUSION</p>".encode()
    assert html_text(page, "page.html", LIMIT) == "INTRO\nCONCLUSION"
    body_after = f"<style>{'a{color:red}' * LIMIT}</style><p>BODY</p>".encode()
    assert html_text(body_after, "page.html", LIMIT) == "BODY"  # was "holds no text"


def test_a_page_cut_at_the_limit_is_rejected_as_too_large_not_kept_as_its_start(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_MAX_FIELD_CHARS", str(LIMIT))
    page = f"<p>short start</p><script>{'x' * 5000}</script><p>{'long text ' * 300}</p>"
    root = write(tmp_path / "news", {"pos/page.html": page, "pos/a.txt": "fine", "neg/b.txt": "fine too"})
    table = read_folder(root)
    assert [r.source for r in table.records] == ["neg/b.txt", "pos/a.txt"]
    reject = rejects_of(table)["page.html"]
    assert reject["kind"] == "field too large" and "the limit is 1,000" in reject["reason"]
    assert len(html_text(page.encode(), "page.html", LIMIT)) > LIMIT  # the caller can tell it was cut


# 2. Documents in folders nested under a class folder are read under that class


NESTED = {
    **{f"{c}/{c}{i}.txt": f"{c} flat text {i}" for c in ("pos", "neg") for i in range(4)},
    **{f"{c}/2024/{c}_deep{i}.txt": f"{c} deep nested text {i}" for c in ("pos", "neg") for i in range(3)},
    "neg/2024/q1/report.docx": docx_bytes("neg report two levels down"),
    "neg/2024/notes.md": "a note, not a document",
}


def test_documents_in_nested_folders_take_the_top_class_folder_as_label(tmp_path):
    root = write(tmp_path / "news", NESTED)
    table = read_folder(root)
    by_source = {r.source: r.fields["label"] for r in table.records}
    assert by_source["pos/2024/pos_deep0.txt"] == "pos"
    assert by_source["neg/2024/q1/report.docx"] == "neg"
    assert len(table.records) == 15 and table.info["ignored_files"] == ["neg/2024/notes.md"]


@pytest.mark.parametrize("packed", [False, True])
def test_every_file_of_a_nested_folder_is_a_row_a_reject_or_named(tmp_path, home, packed):
    files = {**NESTED, "pos/2024/broken.pdf": b"%PDF-1.4 cut", "pos/2024/.hidden.txt": "hidden"}
    root = write(tmp_path / "news", files)
    source = root
    if packed:
        source = tmp_path / "news.zip"
        with zipfile.ZipFile(source, "w") as zf:
            for name, content in files.items():
                zf.writestr(f"news/{name}", content)
    summary = import_dataset(source, min_rows=4).summary()
    named = " ".join(summary["warnings"])
    assert "neg/2024/notes.md" in named and "pos/2024/.hidden.txt" in named
    assert summary["rows"] == 15 and summary["rejects"] == 1
    assert summary["rows"] + summary["rejects"] + 2 == len(files)  # the note and the hidden file


def test_a_link_loop_inside_a_class_folder_is_walked_once(tmp_path):
    root = write(tmp_path / "news", {"pos/a.txt": "a text", "neg/b.txt": "b text"})
    (root / "pos" / "again").symlink_to(root / "pos", target_is_directory=True)
    (root / "neg" / "outside").symlink_to(tmp_path, target_is_directory=True)
    table = read_folder(root)
    assert [r.source for r in table.records] == ["neg/b.txt", "pos/a.txt"]
    assert rejects_of(table)["outside"]["kind"] == "link outside"


def test_links_round_a_loop_or_into_another_class_folder_are_rejects_not_crashes_or_relabels(tmp_path):
    """``pos/loop1 -> loop2 -> loop1`` crashed the import (RuntimeError from resolve); a link from
    ``pos`` into ``neg`` read neg's document again labelled pos, and the conflict then threw the real
    row away. Both are rejects; every real document is read once, under its own folder."""
    root = write(tmp_path / "news", {"pos/a.txt": "a text", "neg/b.txt": "b text"})
    (root / "pos" / "loop1").symlink_to(root / "pos" / "loop2")
    (root / "pos" / "loop2").symlink_to(root / "pos" / "loop1")
    (root / "pos" / "neglink").symlink_to(root / "neg", target_is_directory=True)
    (root / "pos" / "b_copy.txt").symlink_to(root / "neg" / "b.txt")
    table = read_folder(root)
    assert [(r.source, r.fields["label"]) for r in table.records] == [
        ("neg/b.txt", "neg"),
        ("pos/a.txt", "pos"),
    ]
    assert {name: r["kind"] for name, r in rejects_of(table).items()} == {
        name: "link outside" for name in ("loop1", "loop2", "neglink", "b_copy.txt")
    }


def test_an_image_class_folder_linking_into_another_reads_each_image_once(tmp_path):
    """``cat/more -> ../dog``: the dog images were read as cats too and dropped as conflicts (a
    held-out folder of 3 images scored 1)."""
    from PIL import Image

    from aimass.data.image_import import read_held_out

    for i, label in enumerate(("cat", "dog", "dog")):
        (tmp_path / "pets" / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "pets" / label / f"{i}.png")
    (tmp_path / "pets" / "cat" / "more").symlink_to(tmp_path / "pets" / "dog", target_is_directory=True)
    images, labels = read_held_out(tmp_path / "pets")
    assert sorted(zip((Path(p).name for p in images), labels)) == [
        ("0.png", "cat"),
        ("1.png", "dog"),
        ("2.png", "dog"),
    ]


# 3. A UTF-16 or UTF-32 HTML page is read by its byte order mark


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-16-le"])
def test_a_utf16_html_page_is_decoded_by_its_byte_order_mark(encoding):
    page = "<html><body><p>utf16 page body 你好</p></body></html>".encode(encoding)
    assert html_text(page) == "utf16 page body 你好"


# 4. A PDF, a Word file or binary bytes named .txt is refused, UTF-16 and Chinese text are not


def test_binary_files_named_txt_are_rejected_with_what_they_are(tmp_path):
    noise = random.Random(0).randbytes(3000)
    root = write(
        tmp_path / "news",
        {
            "pos/renamed_pdf.txt": pdf_bytes("a pdf renamed to txt"),
            "pos/renamed_docx.txt": docx_bytes("a word file renamed to txt"),
            "pos/noise.txt": b"B2V\x00" + noise,
            "pos/utf16.txt": "UTF-16 text from Notepad 你好".encode("utf-16"),
            "pos/utf16le.txt": "UTF-16 text without a mark".encode("utf-16-le"),
            "neg/gb.txt": "质量很好，物流也快。第二行：不会再买了".encode("gb18030"),
            "neg/cp1252.txt": "\u201cSmart quotes\u201d \u2013 caf\u00e9 and na\u00efve".encode("cp1252"),
            "neg/colours.txt": "\x1b[31mred\x1b[0m log line with a colour code",
        },
    )
    table = read_folder(root)
    kept = {r.source for r in table.records}
    assert kept == {"pos/utf16.txt", "pos/utf16le.txt", "neg/gb.txt", "neg/cp1252.txt", "neg/colours.txt"}
    rejects = rejects_of(table)
    assert "holds a PDF document" in rejects["renamed_pdf.txt"]["reason"]
    assert "Rename it .pdf" in rejects["renamed_pdf.txt"]["reason"]
    assert "Word document (.docx)" in rejects["renamed_docx.txt"]["reason"]
    assert "binary data" in rejects["noise.txt"]["reason"]
    assert {r["kind"] for r in rejects.values()} == {"unreadable document"}


# 5. A merged Word cell is read once


def test_a_merged_word_cell_is_read_once():
    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).merge(table.cell(0, 2)).text = "MERGED ACROSS"
    table.cell(1, 0).text = "left"
    table.cell(1, 1).merge(table.cell(1, 2)).text = "right"
    document.add_paragraph("after the table")
    out = io.BytesIO()
    document.save(out)
    assert docx_text(out.getvalue()) == "MERGED ACROSS\nleft\nright\nafter the table"


# 6. The character limit counts text, not white space; a cut document is too large


def _docx(paragraphs: list[str]) -> bytes:
    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_white_space_does_not_count_against_the_limit_and_a_cut_document_is_too_large(tmp_path, monkeypatch):
    spaces_first = _docx([" " * 1500, "KEEP ME: the real content of the document"])
    assert docx_text(spaces_first, "spaces.docx", LIMIT) == "KEEP ME: the real content of the document"
    monkeypatch.setenv("AIMASS_MAX_FIELD_CHARS", str(LIMIT))
    padded = _docx([f"word{i:03d}" + " " * 100 for i in range(300)])  # 2,400 characters of text
    root = write(tmp_path / "news", {"pos/padded.docx": padded, "pos/a.txt": "a", "neg/b.txt": "b"})
    reject = rejects_of(read_folder(root))["padded.docx"]
    assert reject["kind"] == "field too large"  # was its first nine paragraphs, kept as the whole


# 7. Per-format counts add up to the rows; a folder's encodings are counted in files


def test_the_document_counts_add_up_to_the_rows_and_the_encoding_warning_names_files(tmp_path, home):
    files = {f"{c}/{c}{i}.txt": f"{c} text number {i}" for c in ("pos", "neg") for i in range(4)}
    files.update({f"{c}/{c}.docx": docx_bytes(f"{c} word document") for c in ("pos", "neg")})
    files["pos/copy.docx"] = docx_bytes("pos word document")  # a duplicate of pos/pos.docx
    files["neg/blank.txt"] = "   \n"  # empty text
    files["neg/zh.txt"] = "中文的负面评论".encode("gb18030")
    ds = import_dataset(write(tmp_path / "news", files), min_rows=4)
    summary = ds.summary()
    assert summary["documents"] == {"docx": 2, "text": 9}
    assert sum(summary["documents"].values()) == summary["rows"] == 11
    rejects = [json.loads(line)["kind"] for line in ds.rejects_path.read_text().splitlines()]
    assert sorted(rejects) == ["duplicate", "empty text"]
    [warning] = [w for w in summary["warnings"] if "encodings" in w]
    assert warning.startswith("the files use different encodings (")
    assert "each file was decoded by its own" in warning


def test_a_file_mixing_encodings_counts_once_per_encoding_in_a_folder(tmp_path):
    mixed = "utf-8 line é\nanother é\n".encode() + "中文一行\n中文两行\n中文三行\n".encode("gb18030")
    root = write(tmp_path / "news", {"pos/mixed.txt": mixed, "neg/plain.txt": "ascii only"})
    assert read_folder(root).info["encodings"] == {"utf-8": 2, "gb18030": 1}  # files, not 3 and 3 lines
