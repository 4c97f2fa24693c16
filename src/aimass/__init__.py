"""aimass: from labelled data to a fine-tuned model behind a REST endpoint, offline.

>>> import aimass
>>> aimass.__version__
'0.1.0'
"""

__version__ = "0.1.0"

from aimass.api import (  # noqa: E402
    available_tasks,
    evaluate,
    finetune,
    import_dataset,
    list_datasets,
    list_models,
    load,
    load_dataset,
    predict,
    register,
    show_model,
    train_model,
)

__all__ = [
    "available_tasks",
    "evaluate",
    "finetune",
    "import_dataset",
    "list_datasets",
    "list_models",
    "load",
    "load_dataset",
    "predict",
    "register",
    "show_model",
    "train_model",
]
