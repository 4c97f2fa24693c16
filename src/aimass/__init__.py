"""aimass: from labelled data to a fine-tuned model behind a REST endpoint, offline.

>>> import aimass
>>> aimass.__version__
'0.1.0'

The API functions load on first use, so light parts (the ONNX serving runtime) import
without pulling in the training stack.
"""

from aimass.version import __version__ as __version__

__all__ = [
    "auto",
    "available_tasks",
    "compare_models",
    "compress",
    "compression_methods",
    "continue_model",
    "dataset_issues",
    "delete_model",
    "evaluate",
    "export",
    "finetune",
    "fix_dataset",
    "import_dataset",
    "list_datasets",
    "list_models",
    "load",
    "load_dataset",
    "predict",
    "predict_file",
    "pull_model",
    "push_model",
    "register",
    "remote_models",
    "show_model",
    "train_model",
]


def __getattr__(name: str):
    if name in __all__:
        from aimass import api

        return getattr(api, name)
    raise AttributeError(f"module 'aimass' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
