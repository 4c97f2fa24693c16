"""Serving without the training stack: ONNX export (:mod:`.onnx_export`) and the torch-free
runtimes that answer requests from an exported folder (:mod:`.text`, :mod:`.image`)."""
