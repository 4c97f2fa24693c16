"""Export a registered model to a folder that runs without aimass (``aimass export``).

Two formats for classifiers, three for language models (:mod:`aimass.exporters.generation`:
``safetensors``, ``gguf`` and ``gguf-f16``, the LoRA adapter merged into the base). A classifier's:

* ``onnx``: the network as ONNX (fp32 and int8), its tokenizer or image preprocessing, the labels
  and a ``predict.py`` that needs only onnxruntime, numpy and tokenizers (text) or pillow (images):
  no torch, no aimass. A text model's TF-IDF branch is applied in ``predict.py`` from JSON and
  ``.npy`` files (numpy reads them without pickle).
* ``safetensors``: every fine-tuned weight (backbone, head, TF-IDF branch) for PyTorch users, with
  the encoder's config, the tokenizer or preprocessing, the labels and a ``predict.py`` that
  rebuilds the network with torch (and transformers for text).

Each folder also holds a README.md (what is in it, what to install, how to run it, what it prints),
requirements.txt and export.json (the source version and how close ``predict.py`` came to aimass's
own predictions on a few check inputs, measured when the folder was written).

What differs per task and format is a :class:`Recipe` (defined with the task contract, in
:mod:`aimass.tasks.recipe`), the way backbones are table entries: the writer of the model files, the
``predict.py`` (a file of :mod:`aimass.standalone`) and the packages it needs. The table is
:mod:`aimass.exporters.table`: :mod:`aimass.exporters.classification` registers the recipes of the
classification tasks there (``TEXT_ONNX``, ``IMAGE_SAFETENSORS`` ...), and a task may declare its
own (``Task.export_recipes()``). :mod:`aimass.exporters.folder` writes the folder and
:mod:`aimass.exporters.readme` its README.md.

Example:
    >>> from aimass.exporters import export
    >>> export("reviews:3", "onnx", "reviews-onnx")["files"]["model.onnx"]   # doctest: +SKIP
    90873412
"""

from aimass.exporters.classification import IMAGE_ONNX, IMAGE_SAFETENSORS, TEXT_ONNX, TEXT_SAFETENSORS
from aimass.exporters.entities import ENTITIES_ONNX
from aimass.exporters.folder import export, write_folder
from aimass.exporters.generation import GGUF, GGUF_F16, TRANSFORMERS
from aimass.exporters.table import FORMATS, recipes, register_export
from aimass.tasks.recipe import Recipe

__all__ = [
    "ENTITIES_ONNX",
    "FORMATS",
    "GGUF",
    "GGUF_F16",
    "IMAGE_ONNX",
    "IMAGE_SAFETENSORS",
    "TEXT_ONNX",
    "TEXT_SAFETENSORS",
    "TRANSFORMERS",
    "Recipe",
    "export",
    "recipes",
    "register_export",
    "write_folder",
]
