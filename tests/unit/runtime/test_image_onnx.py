"""ONNX export of an image model: same answers as torch, int8 smaller and statically calibrated, a
runtime without torch, and the serving path (handler + model worker process) on it."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

from aimass.errors import DataError, TooLargeError
from aimass.runtime.image import ImageRuntime
from aimass.runtime.image_export import check_images
from aimass.tasks import get_task


@pytest.fixture(scope="module")
def digits():
    spec = get_task("image-classification")
    images, labels = spec.sample_data(per_class=8)
    model = spec.estimator(**spec.fast_params).fit((images, labels), progress=False)
    return model, images


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    model, images = digits
    folder = tmp_path_factory.mktemp("image-onnx")
    return folder, model.export_onnx(folder, images=images[::6])


def _photo(width: int, height: int) -> bytes:
    """A JPEG larger than the model's size, not square, with colour in it."""
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x % 256, y % 256, (x * y) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def test_export_matches_torch_and_int8_is_smaller(exported, digits):
    folder, report = exported
    model, images = digits
    assert report["max_abs_diff_pixels"] == 0.0
    assert report["max_abs_diff_logits"] < 1e-4 and report["max_abs_diff_proba"] < 1e-4
    assert report["int8_same_label"] >= 0.8 and report["int8_max_abs_diff_proba"] < 0.2
    assert {"model.onnx", "model.int8.onnx", "runtime.json"} <= set(report["files"])
    assert report["files"]["model.int8.onnx"] < 0.4 * report["files"]["model.onnx"]
    assert (
        json.loads((folder / "export.json").read_text())["max_abs_diff_proba"] == report["max_abs_diff_proba"]
    )
    runtime = ImageRuntime(folder)
    assert runtime.classes_ == model.classes_
    items = images[::3] + [
        _photo(300, 180),
        Image.open(io.BytesIO(images[1])),
        np.asarray(Image.open(io.BytesIO(images[2]))),
    ]
    want = model.predict_proba(items)
    assert np.abs(runtime.predict_proba(items, batch_size=4) - want).max() < 1e-4
    assert runtime.predict(items) == model.predict(items)


def test_int8_is_static_and_gives_torchs_labels_on_images_it_was_not_calibrated_on(digits, tmp_path):
    """Every convolution runs in int8 (activations calibrated on half the digits, as the onnx-int8
    compressor calibrates on training images); on the other half and the check images the int8
    graph picks torch's label for all but at most one image, with probabilities within 0.1."""
    model, images = digits
    calibrate, held_out = images[::2], images[1::2] + check_images()
    model.export_onnx(tmp_path, images=calibrate)
    meta = json.loads((tmp_path / "runtime.json").read_text())["int8"]
    assert meta["method"] == "static" and meta["calibration_images"] == len(calibrate) + len(check_images())
    ops = {node.op_type for node in onnx.load(tmp_path / "model.int8.onnx").graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops and "ConvInteger" not in ops
    want = model.predict_proba(held_out)
    got = ImageRuntime(tmp_path, int8=True).predict_proba(held_out)
    assert np.sum(got.argmax(1) != want.argmax(1)) <= 1
    assert np.abs(got - want).max() < 0.1


def test_paths_and_errors_as_in_torch(exported, digits, tmp_path, monkeypatch):
    folder, _ = exported
    model, images = digits
    path = tmp_path / "seven.png"
    path.write_bytes(images[-1])
    runtime = ImageRuntime(folder)
    assert np.abs(runtime.predict_proba([str(path)]) - model.predict_proba([str(path)])).max() < 1e-4
    with pytest.raises(DataError, match="corrupt|not a"):
        runtime.predict_proba([images[0][:40]])
    monkeypatch.setenv("AIMASS_MAX_PIXELS", "1000")
    with pytest.raises(TooLargeError, match="limit"):  # checked from the header, before decoding
        runtime.predict_proba([_photo(40, 40)])


def test_tta_is_inside_the_graph(digits, tmp_path):
    model, images = digits
    model.tta = True
    try:
        report = model.export_onnx(tmp_path, int8=False)
        runtime = ImageRuntime(tmp_path)
        assert report["max_abs_diff_proba"] < 1e-4
        assert np.abs(runtime.predict_proba(images[::4]) - model.predict_proba(images[::4])).max() < 1e-4
    finally:
        model.tta = False
    assert json.loads((tmp_path / "runtime.json").read_text())["tta"] == "in the graph"


def test_runtime_imports_no_torch(exported, digits):
    folder, _ = exported
    code = (
        "import sys; from aimass.runtime.image import ImageRuntime; "
        f"r = ImageRuntime({str(folder)!r}); r.predict_proba([{digits[1][0]!r}]); "
        "print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_handler_and_model_worker_serve_the_export(exported, digits, tmp_path):
    from aimass.serve.worker import Worker

    folder, _ = exported
    model, images = digits
    spec = get_task("image-classification")
    model.save(tmp_path)
    (tmp_path / "onnx").symlink_to(folder)
    handler = spec.handler(tmp_path)
    handler.setup("cpu", "onnx")
    request = spec.request(inputs=[base64.b64encode(b).decode() for b in images[::5]] + [_photo(90, 120)])
    items = handler.decode_request(request)
    assert all(isinstance(item, bytes) for item in items)
    want = model.predict_proba(images[::5] + [_photo(90, 120)])
    assert np.abs(handler.predict(items) - want).max() < 1e-4
    worker = Worker(spec.runtime, tmp_path / "onnx", {"int8": False})
    try:
        worker.start()
        assert np.abs(worker.run(items) - want).max() < 1e-4
    finally:
        worker.close()
    torch_handler = spec.handler(tmp_path)
    torch_handler.setup("cpu", "torch")
    assert np.abs(torch_handler.predict(torch_handler.decode_request(request)) - want).max() < 1e-6
