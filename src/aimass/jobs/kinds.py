"""What a job can do: a table of kinds, each a ``check`` (at submit time) and a ``run``.

A kind's ``run(params, ctx)`` calls a workflow (:mod:`aimass.workflow`, what the Python API
re-exports) and returns a JSON-able result. ``ctx`` gives
it a stable run folder (checkpoints survive a killed worker), ``ctx.resume`` (True from the
second attempt on) and ``ctx.progress(fraction, message)``. A kind's ``scope`` is what an API key
needs to submit it over REST: ``manage`` for kinds that call aimass, ``jobs:code`` for ``custom``,
which runs the caller's own code on the server. A kind whose ``checkpoints`` is True stops at its
next checkpoint when its job is paused (its fits call :func:`aimass.train.progress.pause_point`);
the others are stopped at once and start over when resumed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aimass import paths, scoring, sharing, workflow
from aimass.autolearn import auto
from aimass.compressors import get_compressor
from aimass.data import load_dataset
from aimass.errors import ConfigError, NotFoundError
from aimass.jobs import custom
from aimass.store import registry
from aimass.store.claims import claim
from aimass.tasks import DEFAULT_TASK
from aimass.tasks.base import load_ref

STORE_ID = re.compile(r"vs_[0-9a-f]{1,64}")  # a vector store's id, as pushed


@dataclass(frozen=True)
class Kind:
    name: str
    run: Callable[[dict, object], dict]
    check: Callable[[dict], dict]
    summary: str
    scope: str = "manage"
    checkpoints: bool = False  # a pause waits for its next checkpoint (else it stops it at once)


KINDS: dict[str, Kind] = {}
PREDICTIONS = "predictions.csv"  # what a predict job writes in its run folder


def register_kind(
    name: str,
    summary: str,
    check: Callable[[dict], dict] | None = None,
    *,
    scope: str = "manage",
    checkpoints: bool = False,
):
    def wrap(run):
        KINDS[name] = Kind(name, run, check or (lambda params: params), summary, scope, checkpoints)
        return run

    return wrap


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise ConfigError(
            f"Unknown job kind {name!r}; available: {', '.join(sorted(KINDS))}.",
            hint="Submit one of the listed kinds.",
        )
    return KINDS[name]


def _require(params: dict, *keys: str) -> dict:
    missing = [k for k in keys if params.get(k) in (None, "")]
    if missing:
        raise ConfigError(
            f"The job needs {', '.join(repr(k) for k in missing)}.",
            hint=f"Pass {', '.join(missing)} in the job's params.",
        )
    return params


def reads(kind: str, params: dict) -> list[tuple[str, str]]:
    """(``model``, ``dataset``, ``vector_store`` or ``upload``, name) of everything a job's params
    name: ``model`` and ``from`` (and a distillation's ``teachers``) are versions, ``data`` (and a
    fine-tune's ``valid_data``) a stored dataset unless it names none (then it is a path, which
    the server checks against its data folders), and any path in an upload's folder that upload
    (by its id: it is data of the project it was sent to). What a REST caller must be able to read
    to submit the job. None for ``custom``: its code runs as the server's user, so a key that may
    submit it reads everything already."""
    if kind == "custom":
        return []
    uploads = [("upload", upload) for upload in uploads_named(params)]
    if kind == "store-push":  # the store's files leave the server
        return [("vector_store", str(params.get("vector_store"))), *uploads]
    found = [("model", ref) for ref in versions_named(kind, params)]
    for data in (params.get("data"), params.get("valid_data")):
        if not (isinstance(data, str) and data.strip()):
            continue
        try:
            stored = load_dataset(data)
        except NotFoundError:  # a path to import, or a name nothing has
            stored = None
        if stored is not None:  # by the name given, or by its id (named by the latest import)
            found.append(("dataset", data.strip() if data.strip() in stored.names else stored.id))
    return found + uploads


def versions_named(kind: str, params: dict) -> list[str]:
    """The versions a job's params name (``model``, ``from``, a distillation's ``teachers``), as
    given: what :func:`reads` lists as models, and what a REST submit checks its caller may read
    before the kind's own check looks them up (its not-found messages name a model's aliases)."""
    if kind in ("custom", "store-push"):
        return []
    found = [params[k] for k in ("model", "from") if isinstance(params.get(k), str) and params[k]]
    teachers = params.get("teachers")
    if isinstance(teachers, str):  # "a:1,b:2", as the distillation's settings read it
        teachers = [t.strip() for t in teachers.split(",") if t.strip()]
    return found + ([t for t in teachers if isinstance(t, str)] if isinstance(teachers, list) else [])


def uploads_named(value) -> list[str]:
    """The ids of the uploads any string in a JSON value names a path in
    (:func:`aimass.paths.upload_of`), each once, in order."""
    if isinstance(value, str):
        upload = paths.upload_of(value)
        return [upload] if upload else []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return list(dict.fromkeys(u for item in items for u in uploads_named(item)))


def exports(kind: str, params: dict) -> list[str]:
    """The versions a job takes off the server (a ``push``): what needs ``model:Export``."""
    return [str(params["model"])] if kind == "push" and params.get("model") else []


# ------------------------------------------------------------------ kinds
@register_kind("import", "import and validate a data file or folder", lambda p: _require(p, "path"))
def run_import(params: dict, ctx) -> dict:
    options = {k: v for k, v in params.items() if k != "path"}
    ctx.progress(0.05, f"importing {params['path']}")
    ds = workflow.import_dataset(params["path"], **options)
    summary = ds.summary()
    return {"dataset": ds.id, "name": ds.name, "rows": summary.get("rows"), "rejects": summary.get("rejects")}


def _check_train(params: dict) -> dict:
    """The data, and with ``from`` (continue that version) a version that exists (404 otherwise)
    before anything queues."""
    params = _require(params, "data")
    if params.get("from") is not None:
        if not isinstance(params["from"], str):
            raise ConfigError("'from' names a version as NAME:VERSION.", hint='e.g. {"from": "reviews:3"}')
        registry.get_version(params["from"])
    return params


@register_kind(
    "train",
    "fine-tune (or continue a version), evaluate and register a model",
    _check_train,
    checkpoints=True,
)
def run_train(params: dict, ctx) -> dict:
    settings = dict(params)
    task = settings.pop("task", None if settings.get("from") else DEFAULT_TASK)
    data, name = settings.pop("data"), settings.pop("name", None)
    parent = settings.pop("from", None)
    ctx.progress(0.02, "loading the data and the backbone")
    # a continued fit is head-only and quick: a second attempt runs it again (run_id: never twice)
    result = workflow.train_model(
        task,
        data,
        name=name,
        resume=ctx.resume and parent is None,
        progress=False,
        run_id=ctx.run_id,
        continue_from=parent,
        **settings,
    )
    return {**result, "accuracy": result["metrics"].get("accuracy")}


@register_kind("evaluate", "score a registered version on held-out data", lambda p: _require(p, "model"))
def run_evaluate(params: dict, ctx) -> dict:
    ctx.progress(0.1, f"evaluating {params['model']}")
    report = workflow.evaluate(params["model"], params.get("data"), save=bool(params.get("save", False)))
    keys = ("n", "accuracy", "macro_f1")
    return {"model": params["model"], **{k: report[k] for k in keys if k in report}}


def _check_compress(params: dict) -> dict:
    """The model, a known method (a 404 listing the methods otherwise) and a ``max_drop`` of 0-100
    points before anything queues (a word failed only after the whole export)."""
    params = _require(params, "model", "method")
    get_compressor(str(params["method"]))
    if "max_drop" in params:
        params = {**params, "max_drop": workflow.check_max_drop(params["max_drop"])}
    return params


@register_kind("compress", "compress a version into a gated child", _check_compress)
def run_compress(params: dict, ctx) -> dict:
    settings = dict(params)
    ref, method = settings.pop("model"), settings.pop("method")
    ctx.progress(0.05, f"compressing {ref} with {method}")
    result = workflow.compress(ref, method, run_id=ctx.run_id, **settings)
    return {"model": result["model"], "parent": result["parent"], "gate": result["gate"]}


def _check_issues(params: dict) -> dict:
    if "out" in params:
        raise ConfigError(
            "an issues job writes its report beside the others; 'out' cannot be set",
            hint="Leave out 'out'; read the report at GET /v1/datasets/{id}/issues.",
        )
    from aimass import curation  # scikit-learn: imported by the jobs that need it, not every worker

    curation.check_options({k: v for k, v in params.items() if k != "data"})
    return _require(params, "data")


@register_kind("issues", "label issues, near-duplicates and hard examples of a dataset", _check_issues)
def run_issues(params: dict, ctx) -> dict:
    settings = dict(params)
    data = settings.pop("data")
    ctx.progress(0.05, f"finding the issues of dataset {data}")
    from aimass import curation  # scikit-learn: imported by the jobs that need it, not every worker

    report = curation.dataset_issues(data, **settings)
    return {"dataset": report["dataset"]["id"], **report["counts"], "files": report["files"]}


def _check_auto(params: dict) -> dict:
    """The data's ``path`` or a stored dataset (``data``: id or name), exactly one of the two."""
    if (params.get("path") in (None, "")) == (params.get("data") in (None, "")):
        raise ConfigError(
            "An auto job needs 'path' (a file or folder on the server) or 'data' (a stored dataset's "
            "id or name), one of the two.",
            hint="Pass path, or data=ID of an imported dataset.",
        )
    return params


@register_kind(
    "auto",
    "data (a path or a stored dataset) to an evaluated, registered model",
    _check_auto,
    checkpoints=True,
)
def run_auto(params: dict, ctx) -> dict:
    return auto(progress=False, on_progress=ctx.progress, run_dir=ctx.run_dir, resume=ctx.resume, **params)


def _check_push(params: dict) -> dict:
    """The version and the store exist before anything queues (404s otherwise)."""
    params = _require(params, "model", "store")
    registry.get_version(str(params["model"]))
    sharing.store_url(str(params["store"]))
    return params


@register_kind("push", "upload a version to S3-compatible storage (a store in AIMASS_STORES)", _check_push)
def run_push(params: dict, ctx) -> dict:
    ctx.progress(0.05, f"pushing {params['model']} to {params['store']}")
    return sharing.push_model(str(params["model"]), str(params["store"]))


def _remote(params: dict, pattern=registry.NAME, what: str = "model as NAME", example: str = "news") -> tuple:
    """``remote`` (``NAME`` or ``NAME:VERSION``, as pushed; ``pattern`` the name's) as (name,
    version or None)."""
    name, _, version = str(params["remote"]).partition(":")
    if not pattern.fullmatch(name) or version and not version.isdigit():
        raise ConfigError(
            f"'remote' names a pushed {what} or {what.split()[-1]}:VERSION; got {params['remote']!r}.",
            hint=f'e.g. {{"store": "team-a", "remote": "{example}:3"}} (or "{example}" for its newest)',
        )
    return name, int(version) if version else None


def _check_pull(params: dict) -> dict:
    params = _require(params, "store", "remote")
    sharing.store_url(str(params["store"]))
    _remote(params)
    if params.get("name") is not None:
        registry.check_name(str(params["name"]))
    return params


@register_kind("pull", "download a pushed version and register it here", _check_pull)
def run_pull(params: dict, ctx) -> dict:
    name, version = _remote(params)
    claim("model", str(params.get("name") or name))  # before gigabytes come down
    url = f"{sharing.store_url(str(params['store']))}/{name}" + (f"/v{version}" if version else "")
    ctx.progress(0.05, f"pulling {url}")
    return sharing.pull_model(url, name=params.get("name"))


def _check_store_push(params: dict) -> dict:
    """A named store and a vector store that exists (404 otherwise) before anything queues."""
    params = _require(params, "vector_store", "store")
    sharing.store_url(str(params["store"]))
    from aimass.retrieval import stores  # transformers: only for the jobs that need it

    stores.get(str(params["vector_store"]))
    return params


@register_kind(
    "store-push",
    "upload a vector store to S3-compatible storage (a store in AIMASS_STORES)",
    _check_store_push,
)
def run_store_push(params: dict, ctx) -> dict:
    ctx.progress(0.05, f"pushing vector store {params['vector_store']} to {params['store']}")
    from aimass.retrieval import portable

    return portable.push_store(str(params["vector_store"]), sharing.store_url(str(params["store"])))


def _store_remote(params: dict) -> tuple[str, int | None]:
    """``remote`` (``vs_ID`` or ``vs_ID:VERSION``, as pushed) as (id, version or None)."""
    return _remote(params, STORE_ID, "vector store as vs_ID", "vs_0123abcd")


def _check_store_pull(params: dict) -> dict:
    params = _require(params, "store", "remote")
    sharing.store_url(str(params["store"]))
    _store_remote(params)
    name = params.get("name")
    if name is not None and not (isinstance(name, str) and 0 < len(name.strip()) <= 256):
        raise ConfigError(
            "'name' of the pulled vector store is a string of 1 to 256 characters.",
            hint="Leave it out to keep the pushed name.",
        )
    return params


@register_kind("store-pull", "download a pushed vector store and import it here", _check_store_pull)
def run_store_pull(params: dict, ctx) -> dict:
    sid, version = _store_remote(params)
    from aimass.retrieval import portable

    url = f"{sharing.store_url(str(params['store']))}/{portable.REMOTE_PREFIX}/{sid}"
    url += f"/v{version}" if version else ""
    ctx.progress(0.05, f"pulling {url}")
    made = portable.pull_store(url, name=params.get("name"))
    return {"vector_store_id": made["id"], "name": made["name"], "pulled_from": made["pulled_from"]}


def _check_predict(params: dict) -> dict:
    """The version exists (404 otherwise) before anything queues."""
    params = _require(params, "model", "path")
    registry.get_version(str(params["model"]))
    return params


@register_kind("predict", "score every row of a table (or image of a folder) into a CSV", _check_predict)
def run_predict(params: dict, ctx) -> dict:
    """A resumed attempt keeps the chunks already written (:func:`aimass.scoring.predict_file`).
    Submitted over REST (``caller``, set by the server), its rows are metered to the key as they
    are scored, as the route's would be: a job killed near its end is billed for what it did."""
    out = Path(ctx.run_dir) / PREDICTIONS
    settings = {k: params[k] for k in ("text_col",) if params.get(k)}
    meter = _RowMeter(params.get("caller"), registry.get_version(str(params["model"])).ref)

    def heard(done: int, total: int) -> None:
        ctx.progress(done / total, f"{done}/{total} rows scored")
        meter.reached(done)

    found = scoring.predict_file(
        params["model"], params["path"], out, resume=ctx.resume, progress=heard, **settings
    )
    meter.finish(found["rows"] - found["resumed_at"])
    return found


class _RowMeter:
    """A predict job's rows metered to its submitter's key as they are scored: every
    :data:`EVERY_ROWS` rows or :data:`EVERY_SECONDS` seconds, and the rest (with the one request)
    at the end. The first chunk an attempt scores is counted at the end (where the attempt began
    is known then), so an attempt killed early leaves at most a chunk and a window unbilled."""

    EVERY_ROWS, EVERY_SECONDS = 1000, 10.0

    def __init__(self, key_id: str | None, model: str):
        self.key_id, self.model = key_id, model
        self.last: int | None = None  # the rows done at the last progress report
        self.pending = self.metered = 0
        self.since = time.monotonic()

    def reached(self, done: int) -> None:
        if self.last is not None:
            self.pending += done - self.last
        self.last = done
        if self.pending >= self.EVERY_ROWS or time.monotonic() - self.since >= self.EVERY_SECONDS:
            self._record(self.pending, 0)

    def finish(self, scored: int) -> None:
        """``scored``: the rows this attempt scored (what a resumed one had written is not)."""
        self._record(scored - self.metered, 1)

    def _record(self, rows: int, requests: int) -> None:
        now = time.monotonic()
        if self.key_id and (rows > 0 or requests):
            record = load_ref("aimass.serve.metering:record")
            record(self.key_id, self.model, rows, (now - self.since) * 1000, requests)
        self.metered += max(rows, 0)
        self.pending, self.since = 0, now


@register_kind(
    "batch",
    "answer a file of OpenAI requests offline (the Batch API)",
    lambda p: _require(p, "input", "endpoint", "requests"),
)
def run_batch(params: dict, ctx) -> dict:
    """The serving layer answers them with the routes' own code (:mod:`aimass.serve.batches`);
    each answer is kept as it comes, so a resumed attempt answers only the rest."""
    return load_ref("aimass.serve.batches:run")(params, ctx)


@register_kind(
    "custom", "your own training script (uploaded) on a stored dataset", custom.check, scope="jobs:code"
)
def run_custom(params: dict, ctx) -> dict:
    return custom.run(params, ctx)
