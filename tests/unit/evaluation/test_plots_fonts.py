"""Class names in the confusion matrix: drawn in a font that has them, or as indices explained in a
caption; never matplotlib's "Glyph ... missing from font" warnings."""

from __future__ import annotations

import warnings

import matplotlib
import pytest

from aimass.evaluation import plots

ZH = {
    "accuracy": 0.5,
    "confusion_matrix": {"labels": ["好评", "差评", "neutral"], "matrix": [[1, 2, 0], [3, 4, 0], [0, 0, 1]]},
}


def test_chinese_labels_without_a_cjk_font_become_indices_and_no_glyph_warning(tmp_path):
    if plots.label_font(ZH["confusion_matrix"]["labels"]) is not False:
        pytest.skip("a CJK font is installed here: the names are drawn as they are")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = plots.confusion_png(ZH, tmp_path / "confusion_matrix.png")
    assert path.stat().st_size > 0
    assert not [w for w in caught if "Glyph" in str(w.message)]
    fig = plots.confusion_figure(ZH)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    caption = fig.texts[0].get_text()
    assert "2 = neutral" in caption and "confusion_matrix.labels" in caption and "好" not in caption
    matplotlib.pyplot.close(fig)


def test_an_installed_font_with_the_characters_is_used(monkeypatch):
    georgian = ["ანა", "ბაბუა"]  # DejaVu Sans has Georgian, Liberation Sans has not
    monkeypatch.setattr(plots, "CJK_FONTS", ("DejaVu Sans",))
    with matplotlib.rc_context({"font.family": ["Liberation Sans"]}):
        if "Liberation" not in matplotlib.font_manager.findfont(matplotlib.font_manager.FontProperties()):
            pytest.skip("Liberation Sans is not installed here")
        font = plots.label_font(georgian)
        assert font and "DejaVuSans" in font.get_file()
        report = {"accuracy": 1.0, "confusion_matrix": {"labels": georgian, "matrix": [[1, 0], [0, 1]]}}
        fig = plots.confusion_figure(report)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == georgian and not fig.texts
    assert "DejaVuSans" in ax.get_yticklabels()[0].get_fontproperties().get_file()
    matplotlib.pyplot.close(fig)


def test_latin_labels_are_drawn_as_they_are():
    report = {"accuracy": 1.0, "confusion_matrix": {"labels": ["neg", "pos"], "matrix": [[1, 0], [0, 1]]}}
    assert plots.label_font(["neg", "pos"]) is None
    fig = plots.confusion_figure(report)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["neg", "pos"] and not fig.texts
    matplotlib.pyplot.close(fig)


def _red_png(tmp_path, name: str) -> str:
    from PIL import Image

    path = tmp_path / name
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    return str(path)


def test_image_grids_show_chinese_labels_as_indices_with_a_legend_without_a_cjk_font(tmp_path):
    """issues.png and top_losses.png: a class name no font here draws is ``#i`` in the captions, and
    a legend under the grid says what ``i`` is; names the default font draws stay as they are."""
    if plots.label_font(["蓝色.狗"]) is not False:
        pytest.skip("a CJK font is installed here: the names are drawn as they are")
    image = _red_png(tmp_path, "red.png")
    issues = [
        {"input": image, "row": 3, "label": "蓝色.狗", "suggested": "red cat"},
        {"input": image, "row": 7, "label": "red cat", "suggested": "蓝色.狗"},
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plots.issues_png(issues, tmp_path / "issues.png").stat().st_size > 0
        fig = plots.issues_figure(issues)
    assert not [w for w in caught if "Glyph" in str(w.message)]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["row 3\ngiven #1 -> red cat", "row 7\ngiven red cat -> #1"]
    legend = plots.grid_legend(fig).replace("\n", " ")
    assert "#i is class i" in legend and "issues.csv" in legend
    assert "蓝" not in legend and "fonts-noto-cjk" in legend
    matplotlib.pyplot.close(fig)

    losses = [{"image": image, "predicted": "red cat", "actual": "蓝色.狗", "probability": 0.9, "loss": 2.3}]
    fig = plots.top_losses_figure(losses, classes=["red cat", "蓝色.狗", "v1.0"])
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["red cat / #1\np=0.90 loss=2.30"]
    assert "confusion_matrix.labels[i] in evaluation.json" in plots.grid_legend(fig).replace("\n", " ")
    matplotlib.pyplot.close(fig)


def test_image_grids_with_latin_labels_have_no_legend(tmp_path):
    image = _red_png(tmp_path, "red.png")
    fig = plots.issues_figure([{"input": image, "row": 1, "label": "cat", "suggested": "dog"}])
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["row 1\ngiven cat -> dog"]
    assert plots.grid_legend(fig) == ""
    matplotlib.pyplot.close(fig)
