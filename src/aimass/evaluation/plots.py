"""Pictures of an evaluation: the confusion matrix and the top losses as PNGs, and a language
model's loss curve.

Class names are drawn as they are written: matplotlib reads ``$...$`` in a text as TeX math by
default, which draws ``$10-$20`` as math and fails on ``tax $^$ x``, so every figure here turns that
off (:func:`_literal`). A figure's size is capped (:data:`MAX_INCHES`), however many classes there are.
"""

from __future__ import annotations

import functools
import os
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from aimass.data.images import open_image

# fonts that draw Chinese, Japanese and Korean, the first installed one that has every character of
# the labels is used for them (matplotlib's default, DejaVu Sans, has none: labels come out as boxes)
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "AR PL UKai CN",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Arial Unicode MS",
)
CAPTION_INCHES = 0.7  # under a confusion matrix whose class names no font here draws
LEGEND_LINE_INCHES = 0.17  # a line of the legend under an image grid whose class names no font draws
LEGEND = "class-legend"  # the gid of the text under an image grid that explains "#i"
FONT_ADVICE = (
    "No font here draws these names: install one, e.g. Noto Sans CJK (Debian/Ubuntu: fonts-noto-cjk)."
)
DPI = 100
MAX_INCHES = 20.0  # the longest side of a confusion matrix (2000 pixels at DPI): 0.5 inch a cell at 36
MAX_CLASSES = 40  # a confusion matrix of more classes shows the most confused of them (and says so)
MAX_BARS = 60  # a per-label chart of more labels shows the most frequent of them (and says so)


@contextmanager
def _no_glyph_warnings():
    """Drop matplotlib's "Glyph ... missing from font(s)" warnings: the plots choose their fonts;
    and draw every text made meanwhile literally (no ``$...$`` math, see :func:`_literal`)."""
    with warnings.catch_warnings(), plt.rc_context({"text.parse_math": False}):
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _literal(fig):
    """``fig`` with every text drawn as written: class names are data, and matplotlib would read
    ``$...$`` in them as TeX math (``$10-$20``) or fail to parse it (``tax $^$ x``)."""
    for text in fig.findobj(Text):
        text.set_parse_math(False)
    return fig


@functools.cache
def _font_file(path: str) -> FT2Font:
    return FT2Font(path)


def _draws(path: str, texts: list[str]) -> bool:
    font = _font_file(path)
    return all(font.get_char_index(ord(ch)) for text in texts for ch in str(text) if not ch.isspace())


def label_font(texts: list[str]) -> font_manager.FontProperties | None | bool:
    """How to draw ``texts``: None when the default font has all their characters, else the
    properties of the first installed font of :data:`CJK_FONTS` that has them, else False (no
    font here draws them).

    >>> label_font(["positive", "negative"]) is None
    True
    """
    if _draws(font_manager.findfont(font_manager.FontProperties()), texts):
        return None
    installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in installed and _draws(installed[name], texts):
            return font_manager.FontProperties(fname=installed[name])
    return False


def confusion_figure(report: dict, title: str = "Confusion matrix"):
    """The figure of ``report["confusion_matrix"]`` with counts in each cell. Class names no
    installed font can draw (Chinese without a CJK font) are replaced on the axes by their index
    (their position in ``confusion_matrix.labels``), explained in a caption under the matrix.

    Its side grows with the classes up to :data:`MAX_INCHES`; of more than :data:`MAX_CLASSES`
    classes it shows the most confused (:func:`most_confused`), as its title says: a matrix of
    hundreds of classes has no readable cell, and drawing one took seconds and gigabytes a PNG."""
    labels = [str(c) for c in report["confusion_matrix"]["labels"]]
    matrix = np.array(report["confusion_matrix"]["matrix"])
    keep = most_confused(matrix) if len(labels) > MAX_CLASSES else list(range(len(labels)))
    matrix = matrix[np.ix_(keep, keep)] if matrix.size else matrix
    names = [labels[k] for k in keep]
    font = label_font(names)
    ticks = [str(k) for k in keep] if font is False else names
    shown = {"fontproperties": font} if font else {}
    size = min(MAX_INCHES, max(4.0, 0.6 * len(keep) + 2))
    fig, ax = plt.subplots(figsize=(size, size + (CAPTION_INCHES if font is False else 0)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(keep)), ticks, rotation=45, ha="right", **shown)
    ax.set_yticks(range(len(keep)), ticks, **shown)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    part = f": the {len(keep)} most confused of {len(labels)} classes" if len(keep) < len(labels) else ""
    ax.set_title(f"{title} (accuracy {report['accuracy']:.3f}){part}")
    limit = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > limit else "black")
    if font is False:
        fig.text(0.5, 0.01, _index_caption(labels, keep), ha="center", va="bottom", fontsize=8)
    return _literal(fig)


def most_confused(matrix, k: int = MAX_CLASSES) -> list[int]:
    """The indices (in order) of the ``k`` classes of the confusion ``matrix`` with the most
    errors (rows wrongly predicted as another class plus rows of another class predicted as it),
    ties broken by support, then by position.

    >>> most_confused(np.array([[5, 0, 0], [0, 3, 2], [1, 0, 9]]), k=2)
    [1, 2]
    """
    matrix = np.asarray(matrix)
    wrong = matrix.sum(0) + matrix.sum(1) - 2 * np.diag(matrix)
    order = sorted(range(len(matrix)), key=lambda i: (-wrong[i], -matrix[i].sum(), i))
    return sorted(order[:k])


def _index_caption(labels: list[str], shown: list[int] | None = None) -> str:
    """What the axes' class indices stand for: the names the default font draws (of the ``shown``
    indices, default all), and where to read the others."""
    default = font_manager.findfont(font_manager.FontProperties())
    shown = range(len(labels)) if shown is None else shown
    named = [f"{i} = {labels[i]}" for i in shown if _draws(default, [labels[i]])]
    return (
        "Class i is confusion_matrix.labels[i] in evaluation.json"
        + ("; " + ", ".join(named) if named else "")
        + ".\nNo font here draws the other names: install one,\n"
        + "e.g. Noto Sans CJK (Debian/Ubuntu: fonts-noto-cjk)."
    )


@_no_glyph_warnings()
def confusion_png(report: dict, path: Path, title: str = "Confusion matrix") -> Path:
    """Draw ``report["confusion_matrix"]`` with counts in each cell (see :func:`confusion_figure`)."""
    fig = confusion_figure(report, title)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, CAPTION_INCHES / height, 1, 1) if fig.texts else None)
    return _save(fig, path)


@_no_glyph_warnings()
def per_label_png(report: dict, path: Path) -> Path:
    """A multi-label (or entity) report's precision, recall and F1 per label, as grouped horizontal
    bars; of more than :data:`MAX_BARS` labels, the most frequent (by support), as its title says."""
    every = list(report["per_class"])
    labels = every
    if len(every) > MAX_BARS:
        support = {c: report["per_class"][c]["support"] for c in every}
        top = set(sorted(every, key=lambda c: (-support[c], every.index(c)))[:MAX_BARS])
        labels = [c for c in every if c in top]
    scores = {k: [report["per_class"][c][k] for c in labels] for k in ("precision", "recall", "f1")}
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.45 * len(labels) + 1.5)))
    y = np.arange(len(labels))
    for i, (name, values) in enumerate(scores.items()):
        ax.barh(y + (i - 1) * 0.27, values, height=0.27, label=name)
    font = label_font(labels)
    ax.set_yticks(
        y,
        [f"{c} ({report['per_class'][c]['support']})" for c in labels],
        **({"fontproperties": font} if font else {}),
    )
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score on the test split (support in brackets)")
    title = f"Per label: micro-F1 {report['micro_f1']:.3f}"
    if "threshold" in report:  # labels per item (multi-label); else entities, scored by exact span
        title += f", exact match {report['accuracy']:.3f} (threshold {report['threshold']:.2f})"
    if len(labels) < len(every):
        title += f"\nthe {len(labels)} most frequent of {len(every)} labels"
    ax.set_title(title)
    ax.legend(loc="lower right")
    _literal(fig).tight_layout()
    return _save(fig, path)


def _image_grid(rows: list[dict], image_key: str, caption, columns: int, classes: list[str], where: str):
    """A figure of ``rows``' images (``row[image_key]``), each titled ``caption(row, name)``; an
    image that moved or cannot be read keeps its caption. ``name(label)`` is how a class is written:
    as it is, or, when no installed font draws some of ``classes`` (Chinese without a CJK font), those
    as ``#i``, their index in ``classes``, explained by a legend under the grid that says ``where``
    the names are (as :func:`confusion_figure` does). Returns (figure, axes, line count)."""
    n = max(1, len(rows))
    cols = min(columns, n)
    lines = -(-n // cols)
    font = label_font(classes)
    name, legend = _class_names(classes, where, 15 * 3 * cols) if font is False else (str, "")
    legend_inches = LEGEND_LINE_INCHES * (legend.count("\n") + 2) if legend else 0
    fig, axes = plt.subplots(lines, cols, figsize=(3 * cols, 3.3 * lines + legend_inches), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    shown = {"fontproperties": font} if font else {}
    for ax, row in zip(axes.flat, rows):
        try:
            ax.imshow(open_image(row[image_key]))
        except Exception:  # the image moved or is unreadable: keep the caption
            ax.text(0.5, 0.5, "(image unavailable)", ha="center", va="center")
        ax.set_title(caption(row, name), fontsize=9, **shown)
    if legend:
        fig.text(0.5, 0.01, legend, ha="center", va="bottom", fontsize=8, gid=LEGEND)
    return _literal(fig), axes, lines


def grid_legend(fig) -> str:
    """The legend under an image grid (what ``#i`` stands for), or "" when it has none."""
    return next((t.get_text() for t in fig.texts if t.get_gid() == LEGEND), "")


def _class_names(classes: list[str], where: str, width: int) -> tuple:
    """``(name, legend)`` for classes no installed font draws: ``name(label)`` is the label when
    the default font draws it, else ``#i`` (its index in ``classes``); the legend says so, wrapped
    at ``width`` characters."""
    default = font_manager.findfont(font_manager.FontProperties())
    number = {c: i for i, c in enumerate(classes)}

    def name(label) -> str:
        label = str(label)
        return label if _draws(default, [label]) else f"#{number.get(label, '?')}"

    text = f"#i is class i: {where}. {FONT_ADVICE}"
    return name, "\n".join(textwrap.wrap(text, width))


def _grid_layout(fig, top_inches: float = 0.0) -> None:
    """Tight layout, leaving the legend (if any) its room at the bottom and ``top_inches`` at the top."""
    height, legend = fig.get_figheight(), grid_legend(fig)
    bottom = LEGEND_LINE_INCHES * (legend.count("\n") + 2) / height if legend else 0
    _literal(fig).tight_layout(rect=(0, bottom, 1, 1 - top_inches / height))


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG to a temporary name, then rename it over ``path``: a drawing that
    fails leaves the old picture (or none), never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _literal(fig).savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def top_losses_figure(rows: list[dict], columns: int = 4, classes: list[str] | None = None):
    """A grid of the most confidently wrong images (fastai's ``plot_top_losses``): each titled
    predicted / actual / probability of the prediction / loss. ``classes`` is the report's
    ``confusion_matrix.labels``: class names no installed font draws are shown as their index in it."""
    seen = sorted({str(r[k]) for r in rows for k in ("predicted", "actual")})
    known = [str(c) for c in classes] if classes else []
    fig, _, _ = _image_grid(
        rows,
        "image",
        lambda r, name: (
            f"{name(r['predicted'])} / {name(r['actual'])}\np={r['probability']:.2f} loss={r['loss']:.2f}"
        ),
        columns,
        known + [c for c in seen if c not in known],
        "confusion_matrix.labels[i] in evaluation.json"
        if classes
        else "the i-th of these names in sorted order",
    )
    fig.suptitle("Top losses: predicted / actual")
    _grid_layout(fig)
    return fig


@_no_glyph_warnings()
def top_losses_png(rows: list[dict], path: Path, columns: int = 4, classes: list[str] | None = None) -> Path:
    """Draw :func:`top_losses_figure`."""
    return _save(top_losses_figure(rows, columns, classes), path)


def issues_figure(rows: list[dict], columns: int = 5, title: str = "Label issues"):
    """A grid of flagged images, each titled with its row number, the given label and the suggested
    one (``rows``: ``input`` the image's absolute path, ``row``, ``label``, ``suggested``). Class
    names no installed font draws are shown as ``#i``, explained under the grid."""
    fig, axes, _ = _image_grid(
        rows,
        "input",
        lambda r, name: f"row {r['row']}\ngiven {name(r['label'])} -> {name(r['suggested'])}",
        columns,
        sorted({str(r[k]) for r in rows for k in ("label", "suggested")}),
        "the i-th of these images' class names in sorted order; issues.csv gives each row's labels",
    )
    if not rows:
        axes.flat[0].text(0.5, 0.5, "nothing flagged", ha="center", va="center")
    fig.suptitle(f"{title}: given -> suggested")
    _grid_layout(fig, top_inches=0.35)  # leave the suptitle its own line
    return fig


@_no_glyph_warnings()
def issues_png(rows: list[dict], path: Path, columns: int = 5, title: str = "Label issues") -> Path:
    """Draw :func:`issues_figure`."""
    return _save(issues_figure(rows, columns, title), path)


@_no_glyph_warnings()
def loss_curve_png(report: dict, path: Path) -> Path:
    """A language model's fit: its training loss at each step (and a running mean), its validation
    loss at the end of each pass, against the held-out loss of the fine-tune and of the base model
    (``report["training_loss"]``, ``validation``, ``loss``, ``loss_base``), in loss per answer token."""
    history = np.asarray(report["training_loss"], dtype=float)
    steps = np.arange(1, len(history) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(
        steps,
        history,
        color="#8fa8bf",
        lw=1,
        marker="." if len(history) < 40 else None,
        label="training, per step",
    )
    window = max(2, len(history) // 10)
    if len(history) > window:
        mean = np.convolve(history, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], mean, color="#1f4e79", lw=2, label=f"training, mean of {window} steps")
    valid = report.get("validation") or []
    if valid:
        ax.plot(
            [v["step"] for v in valid],
            [v["valid_loss"] for v in valid],
            color="#ef6c00",
            lw=1.5,
            marker="o",
            label="validation, end of each pass",
        )
    ax.axhline(report["loss"], color="#2e7d32", ls="--", label=f"held-out, fine-tuned ({report['loss']:.2f})")
    if report.get("loss_base") is not None:
        ax.axhline(
            report["loss_base"],
            color="#c62828",
            ls=":",
            label=f"held-out, base model ({report['loss_base']:.2f})",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss per answer token")
    base = f" (base model {report['perplexity_base']:.1f})" if report.get("perplexity_base") else ""
    ax.set_title(f"LoRA fine-tune: held-out perplexity {report['perplexity']:.1f}{base}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
