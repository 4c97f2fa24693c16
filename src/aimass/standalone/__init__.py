"""The ``predict.py`` scripts that :func:`aimass.exporters.export` copies into an exported folder.

Each file here runs on its own, next to the files of one export, with only the few packages its
README lists (no aimass): it is copied, never imported by aimass. One file per task and format:
``text_onnx.py``, ``image_onnx.py``, ``text_torch.py``, ``image_torch.py``.
"""
