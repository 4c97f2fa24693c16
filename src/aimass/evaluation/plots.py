"""Pictures of an evaluation: the confusion matrix and the top losses as PNGs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aimass.data.images import open_image


def confusion_png(report: dict, path: Path, title: str = "Confusion matrix") -> Path:
    """Draw ``report["confusion_matrix"]`` with counts in each cell."""
    labels = report["confusion_matrix"]["labels"]
    matrix = np.array(report["confusion_matrix"]["matrix"])
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title(f"{title} (accuracy {report['accuracy']:.3f})")
    limit = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > limit else "black")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _image_grid(rows: list[dict], image_key: str, caption, columns: int):
    """A figure of ``rows``' images (``row[image_key]``), each titled ``caption(row)``; an image
    that moved or cannot be read keeps its caption. Returns (figure, axes, line count)."""
    n = max(1, len(rows))
    cols = min(columns, n)
    lines = -(-n // cols)
    fig, axes = plt.subplots(lines, cols, figsize=(3 * cols, 3.3 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        try:
            ax.imshow(open_image(row[image_key]))
        except Exception:  # the image moved or is unreadable: keep the caption
            ax.text(0.5, 0.5, "(image unavailable)", ha="center", va="center")
        ax.set_title(caption(row), fontsize=9)
    return fig, axes, lines


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def top_losses_png(rows: list[dict], path: Path, columns: int = 4) -> Path:
    """A grid of the most confidently wrong images (fastai's ``plot_top_losses``): each titled
    predicted / actual / probability of the prediction / loss."""
    fig, _, _ = _image_grid(
        rows,
        "image",
        lambda r: f"{r['predicted']} / {r['actual']}\np={r['probability']:.2f} loss={r['loss']:.2f}",
        columns,
    )
    fig.suptitle("Top losses: predicted / actual")
    fig.tight_layout()
    return _save(fig, path)


def issues_png(rows: list[dict], path: Path, columns: int = 5, title: str = "Label issues") -> Path:
    """A grid of flagged images, each titled with its row number, the given label and the suggested
    one (``rows``: ``input`` the image's absolute path, ``row``, ``label``, ``suggested``)."""
    fig, axes, lines = _image_grid(
        rows, "input", lambda r: f"row {r['row']}\ngiven {r['label']} -> {r['suggested']}", columns
    )
    if not rows:
        axes.flat[0].text(0.5, 0.5, "nothing flagged", ha="center", va="center")
    fig.suptitle(f"{title}: given -> suggested")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.3 * lines)))  # leave the suptitle its own line
    return _save(fig, path)
