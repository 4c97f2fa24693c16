"""The task contract: every hook a task type may have, with its default, in one class.

A task is one file in :mod:`aimass.tasks` holding a subclass of :class:`Task` decorated with
``@register_task("NAME")``. Everything outside ``tasks/`` (training, the CLI, the REST server, the
compressors, auto-learning, exports) looks the task up and asks it; none of it branches on the
task's name or on the kind of data. :func:`aimass.testing.check_task` checks a task against this
contract, so a new task gets every check by calling it from one test.

Required: ``estimator``, ``request``, ``response``, ``handler``, ``sample_request`` and
``sample_data``. Everything else has a default that means "this task does not have it".

>>> from aimass.tasks import get_task, DEFAULT_TASK
>>> spec = get_task(DEFAULT_TASK)
>>> issubclass(spec, Task) and spec.name == DEFAULT_TASK
True
>>> sorted(spec.options())[:3]
['average', 'backbone', 'baselines']
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from aimass.tasks.recipe import Recipe

MAX_BODY_BYTES = 2 * 1024 * 1024  # the default largest request body (JSON texts)


def load_ref(ref: str) -> Any:
    """``"package.module:Name"`` -> the object (how a spec names code it must not import early)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


class Task:
    """Base class of every task spec. Subclass it, set the required attributes, override the hooks
    the task has; ``@register_task("NAME")`` sets :attr:`name` and adds it to the registry.

    Class attributes (data):
        name: the registry name (set by ``register_task``).
        estimator: the sklearn-style estimator class (``fit``/``predict``/``evaluate``/``save``/
            ``load``; ``__init__`` only stores its keyword arguments: :class:`aimass.estimator.Estimator`).
        config: the Pydantic model of the estimator's hyper-parameters (what ``--set`` accepts),
            or None to take the options from the estimator's ``__init__`` signature.
        data_kind: what a stored Dataset of this task holds (its ``kind``: ``text``, ``image``);
            one stored row's input is ``Dataset.inputs()``.
        item_noun: what one input is called in messages (``texts``, ``images``).
        request / response: Pydantic models of the REST body and answer.
        handler: the serving handler class, LitServe-style: ``handler(model_dir, model=None)``,
            ``setup(device, backend)``, ``decode_request``, ``predict``, ``encode_response``.
        sample_request: a valid request body (documentation, 422 hints and the contract check).
        runtime: ``"module:Class"`` of a torch-free ONNX runtime a model worker process loads,
            or None (the model then serves in process only).
        tuner: ``"module:Class"`` of the auto-learning search plan (search space, cost model),
            or None: ``aimass auto`` then refuses the task.
        compression: method name -> ``"module:function"``: what a training compressor
            (``distill``, ``prune``) does to models of this task, ``function(model, data, settings)``
            -> a new fitted model. A method that needs a per-task strategy refuses tasks not named here.
        compress_instead: set for a task ``aimass compress`` does not take at all: what to do instead
            (the hint of its refusal).
        heavy_decode: decoding a request is real work (images): the server runs it off the event loop.
        max_body_bytes: the largest request body a model of this task accepts.
        max_upload_bytes: the largest multipart body (uploaded files); None: ``max_body_bytes``.
        baselines: candidate name -> ``"module:Class"`` of a cheap model (a
            :class:`aimass.tasks.portfolio.Baseline`) every fit also trains (unless the estimator is
            given ``baselines=False``); the fit keeps whichever of the network and these scores best on
            the validation split (:mod:`aimass.tasks.portfolio`). Empty: the network alone.
        fast_params: estimator parameters for a quick but complete fit (checks, demos).
        sniff_order: the order :func:`aimass.tasks.detect_task` asks tasks to :meth:`sniff` a path
            (lower first: the more specific layouts).
    """

    name: ClassVar[str] = ""
    estimator: ClassVar[type]
    config: ClassVar[type[BaseModel] | None] = None
    data_kind: ClassVar[str] = "text"
    item_noun: ClassVar[str] = "inputs"
    request: ClassVar[type[BaseModel]]
    response: ClassVar[type[BaseModel]]
    handler: ClassVar[type]
    sample_request: ClassVar[dict] = {}
    runtime: ClassVar[str | None] = None
    tuner: ClassVar[str | None] = None
    compression: ClassVar[dict[str, str]] = {}
    compress_instead: ClassVar[str | None] = None
    heavy_decode: ClassVar[bool] = False
    max_body_bytes: ClassVar[int] = MAX_BODY_BYTES
    max_upload_bytes: ClassVar[int | None] = None
    baselines: ClassVar[dict[str, str]] = {}
    fast_params: ClassVar[dict] = {}
    sniff_order: ClassVar[int] = 100

    # ------------------------------------------------------------ data
    @classmethod
    def sniff(cls, path: Path) -> str | None:
        """Whether this task reads the data at ``path`` (an existing file or folder): a short
        description of the layout found (``"a CSV table (text and label columns)"``), else None."""
        return None

    @classmethod
    def sample_data(cls, per_class: int = 12) -> tuple[list, list]:
        """A small real dataset ``(inputs, targets)`` for checks and demos (no network)."""
        raise NotImplementedError(f"task '{cls.name}' has no sample data")

    @classmethod
    def eval_data(cls, path: Path, import_dataset: Callable) -> tuple[list, list] | None:
        """``(inputs, targets)`` read from a file or folder given to ``evaluate``/``compress``
        as held-out data, or None when this task cannot read ``path`` (it is then looked up as
        a stored dataset's id or name). ``import_dataset(path) -> Dataset`` imports and records
        it, for data that must be imported to be read (images)."""
        return None

    @classmethod
    def features(cls, data, *, lexical: bool = True, progress: bool = False):
        """Frozen-backbone features of every row of the stored Dataset ``data``, in stored order, for
        data curation (:mod:`aimass.curation`: label issues, near-duplicates): ``(embeddings, extra)``
        with ``embeddings`` an L2-normalised ``[n, d]`` float array and ``extra`` an optional sparse
        ``[n, m]`` matrix (a text task's TF-IDF when ``lexical``) or None. Default: None, the task
        has no such features."""
        return None

    @classmethod
    def issues(cls, data, **options) -> dict | None:
        """The issues of the stored Dataset ``data``, for a task whose rows :meth:`features` cannot
        judge (a text's entities are many decisions, not one label): a dict with ``label_issues``
        (each with ``row``, ``split``, ``label``, ``suggested``, ``margin`` and ``item``, least
        likely first), ``hard_examples``, ``near_duplicates`` and the ``method``, which
        :mod:`aimass.curation` heads, writes and fixes from. ``options``: ``model``, ``folds``,
        ``seed``, ``hard``, ``threshold``, ``snippet``, ``network`` and ``progress``, as
        :func:`aimass.curation.dataset_issues` takes them. Default: None (curation's confident
        learning on :meth:`features`)."""
        return None

    # --------------------------------------------------------- options
    @classmethod
    def options(cls) -> dict[str, Any]:
        """Every hyper-parameter the estimator takes, with its default: the ``--set KEY=VALUE``
        options of ``aimass train`` and the keys of ``get_params()``."""
        if cls.config is not None:
            return {k: f.default for k, f in cls.config.model_fields.items()}
        sig = inspect.signature(cls.estimator.__init__)
        return {k: p.default for k, p in sig.parameters.items() if k != "self"}

    @classmethod
    def option_help(cls) -> dict[str, str]:
        """One line per option for ``--help`` (from the config's field descriptions, if any)."""
        if cls.config is None:
            return {}
        return {k: f.description or "" for k, f in cls.config.model_fields.items()}

    # --------------------------------------------------------- serving
    @classmethod
    def supports_onnx(cls) -> bool:
        """Whether models of this task export to ONNX (``estimator.export_onnx``) and so can serve
        on the ``onnx`` / ``onnx-int8`` backends."""
        return callable(getattr(cls.estimator, "export_onnx", None))

    @classmethod
    def load_runtime(cls, folder: Path, int8: bool = False):
        """The torch-free :attr:`runtime` over an exported ONNX ``folder`` (``int8``: its int8 graph)."""
        return load_ref(cls.runtime)(folder, int8=int8)

    @classmethod
    def request_item(cls, item: Any) -> Any:
        """One stored input (``Dataset.inputs()``) as it travels in a JSON request."""
        return item

    @classmethod
    def curl_item(cls, item: Any) -> str:
        """One input as a JSON value inside a single-quoted shell string, for a curl example."""
        return json.dumps(item, ensure_ascii=False).replace("'", "")

    @classmethod
    def cli_inputs(cls, values: list[str]) -> list:
        """Inputs from the command line (``aimass predict MODEL VALUE...``) as the estimator takes them."""
        return list(values)

    @classmethod
    def latency_inputs(cls, items: list) -> list:
        """The inputs latency is quoted on (e.g. texts cut to ~32 tokens); default: as they are."""
        return list(items)

    # ------------------------------------------------------ reporting
    @classmethod
    def plots(cls, report: dict, folder: Path) -> list[Path]:
        """PNG files drawn from an evaluation report into ``folder`` (default: none)."""
        return []

    @classmethod
    def issue_plots(cls, issues: list[dict], folder: Path) -> list[Path]:
        """PNG files picturing the label issues of a curation report (each with ``input``, ``row``,
        ``label``, ``suggested``) drawn into ``folder`` (default: none)."""
        return []

    # ---------------------------------------------------- compression
    @classmethod
    def compressor(cls, method: str) -> Callable | None:
        """This task's strategy for ``method`` (see :attr:`compression`), or None."""
        ref = cls.compression.get(method)
        return load_ref(ref) if ref else None

    @classmethod
    def calibration(cls, data) -> dict:
        """Keyword arguments for ``estimator.export_onnx`` drawn from the training Dataset
        ``data`` (an image task's int8 calibration images); default: none."""
        return {}

    # ---------------------------------------------------------- export
    @classmethod
    def export_recipes(cls) -> dict[str, Recipe]:
        """Format name -> :class:`Recipe`: how ``aimass export`` writes a folder that runs without
        aimass. Default: none (the task cannot be exported, unless the export layer registers
        recipes for it: :func:`aimass.exporters.register_export`, as it does for the
        classification tasks)."""
        return {}

    # ------------------------------------------------------ auto-learn
    @classmethod
    def make_tuner(cls):
        """The auto-learning search plan (search space and cost model) for this task, or None."""
        if cls.tuner is None:
            return None
        tuner = load_ref(cls.tuner)()
        tuner.task = cls.name
        return tuner
