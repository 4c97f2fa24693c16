"""Model worker processes: the wire format, answers equal to in-process, restart after SIGKILL."""

from __future__ import annotations

import io
import os
import signal

import numpy as np
import pytest

from aimass.errors import Unavailable
from aimass.runtime.text import TextRuntime
from aimass.serve.worker import Worker, decode_items, encode_items, read_frame, write_frame

RUNTIME = "aimass.runtime.text:TextRuntime"
TEXTS = ["The striker scored twice as United won the cup final.", "Shares fell after the profit warning."]


def test_frames_carry_text_and_bytes():
    stream = io.BytesIO()
    header, blobs = encode_items(["héllo", b"\x00\x01binary", "中文"])
    write_frame(stream, header, blobs)
    write_frame(stream, {"ok": True})
    stream.seek(0)
    first = read_frame(stream)
    assert decode_items(*first) == ["héllo", b"\x00\x01binary", "中文"]
    assert read_frame(stream)[0] == {"ok": True}
    assert read_frame(stream) is None  # end of stream


@pytest.fixture(scope="module")
def folder(small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("worker-onnx")
    small_model.export_onnx(out)
    return out


def test_worker_answers_like_the_runtime_and_restarts_after_sigkill(folder):
    events = []
    worker = Worker(RUNTIME, folder, on_event=lambda kind, message: events.append((kind, message)))
    worker.start()
    try:
        want = TextRuntime(folder).predict_proba(TEXTS)
        assert np.abs(worker.run(TEXTS) - want).max() < 1e-6
        os.kill(worker.proc.pid, signal.SIGKILL)
        with pytest.raises(Unavailable, match="died"):
            worker.run(TEXTS)
        assert events[-1][0] == "failed"
        assert np.abs(worker.run(TEXTS) - want).max() < 1e-6  # a fresh process answered
        assert worker.restarts == 1 and events[-1][0] == "ready"
    finally:
        worker.close()


def test_a_worker_that_cannot_load_says_why(tmp_path):
    worker = Worker(RUNTIME, tmp_path / "missing")
    with pytest.raises(RuntimeError, match="did not start: FileNotFoundError"):
        worker.start()
