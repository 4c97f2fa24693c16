"""Image classification through the CLI: import an archive -> train -> evaluate a folder -> predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import shared_backbones


def aimass(env, *args):
    result = subprocess.run(
        [sys.executable, "-m", "aimass", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout) if "--json" in args else result.stdout


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """scikit-learn's scanned digits 0, 1 and 7 as 32x32 PNGs in class folders, plus a zip of them."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    data = load_digits()
    for digit in (0, 1, 7):
        folder = root / "photos" / f"digit-{digit}"
        folder.mkdir(parents=True)
        for i, array in enumerate(data.images[data.target == digit][:60]):
            image = Image.fromarray((array * 255 / 16).astype(np.uint8)).resize(
                (32, 32), Image.Resampling.NEAREST
            )
            image.save(folder / f"{i:03d}.png")
    with zipfile.ZipFile(root / "photos.zip", "w") as archive:
        for path in sorted((root / "photos").rglob("*.png")):
            archive.write(path, path.relative_to(root))
    return root


def test_archive_to_trained_model_and_predictions(tmp_path, digits):
    env = {**os.environ, "AIMASS_HOME": str(shared_backbones(tmp_path / "home")), "COLUMNS": "200"}
    imported = aimass(env, "data", "import", str(digits / "photos.zip"), "--name", "digits", "--json")
    assert imported["kind"] == "image" and imported["rows"] == 180
    trained = aimass(
        env,
        "train",
        "--task",
        "image-classification",
        "--data",
        "digits",
        "--time-budget",
        "2m",
        "--unfreeze",
        "1",
        "--epochs-top",
        "1",
        "--json",
    )
    assert trained["metrics"]["accuracy"] >= 0.85, trained  # 36 test images of 8x8 scans
    assert set(trained["timings"]) >= {"embed", "train_head", "train_top"}
    folder = Path(aimass(env, "models", "show", "digits", "--json")["path"])
    assert (folder / "confusion_matrix.png").stat().st_size > 1000
    assert (folder / "top_losses.png").stat().st_size > 1000
    on_folder = aimass(env, "evaluate", "digits", "--data", str(digits / "photos"), "--json")
    assert on_folder["n"] == 180 and on_folder["accuracy"] >= 0.9
    sevens = sorted((digits / "photos" / "digit-7").glob("*.png"))[:2]
    ones = sorted((digits / "photos" / "digit-1").glob("*.png"))[:1]
    predicted = aimass(env, "predict", "digits", *map(str, sevens + ones), "--json")
    assert [p["label"] for p in predicted["predictions"]] == ["digit-7", "digit-7", "digit-1"]
