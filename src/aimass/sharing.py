"""Share model versions between machines through S3-compatible storage: push, pull, list.

Train on one machine, ``push_model("news:3", "s3://models/team-a")``; on another (a serving
node, a Ray worker) ``pull_model("s3://models/team-a/news/v3")`` registers it as the next local
version of ``news``, its lineage, parameters and metrics kept and ``pulled_from`` naming the store.
The transfer and its checks are :mod:`aimass.store.remote`; this module reads and writes the
registry. A pulled version is loaded once before it is registered (safetensors only, as any load),
so a folder its task cannot read never becomes a version.

A pull downloads into ``models/.pulling-<pid>-<random>``, removed when it ends; one left by a
process that was killed (kill -9, a cancelled job) is swept by the next pull: its owner ``<pid>``
is gone (``os.kill(pid, 0)``), or, for a folder whose name carries no pid, it is over an hour old.

Named stores: the operator lists them in ``AIMASS_STORES`` (``team-a=s3://models/team-a,
backup=s3://backup``), and every call takes a name where it takes a URL. Over REST (``push`` and
``pull`` jobs) only those names are accepted: a key picks among the stores the operator set up, it
cannot send a model to a bucket of its choosing.

>>> push_model("news:3", "s3://models/team-a")                  # doctest: +SKIP
{'url': 's3://models/team-a/news/v3', 'files': 7, 'bytes': 91034211, 'unchanged': False, ...}
>>> pull_model("s3://models/team-a/news")["model"]              # doctest: +SKIP
'news:1'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from aimass import paths
from aimass.errors import ConfigError, NotFoundError, PermissionDenied
from aimass.store import artifacts, registry, remote
from aimass.tasks import get_task

STORES_ENV = "AIMASS_STORES"
_STORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STAGING = ".pulling-"
STALE_SECONDS = 3600  # a staging folder with no owner pid in its name, older than this, is left over
SHARED = ("task", "backbone", "dataset_digest", "params", "metrics", "parent", "aimass_version", "created")


def stores() -> dict[str, str]:
    """The named stores of ``AIMASS_STORES`` (``NAME=s3://BUCKET[/PREFIX]``, comma-separated)."""
    named = {}
    for entry in filter(None, (e.strip() for e in os.environ.get(STORES_ENV, "").split(","))):
        name, sep, url = (part.strip() for part in entry.partition("="))
        if not sep or not _STORE_NAME.fullmatch(name):
            raise ConfigError(
                f"{STORES_ENV} entry {entry[:100]!r} is not NAME=s3://BUCKET[/PREFIX].",
                hint=f"e.g. {STORES_ENV}='team-a=s3://models/team-a,backup=s3://backup'",
            )
        remote.parse_url(url)  # a ConfigError naming a bad URL
        named[name] = url.rstrip("/")
    return named


def store_url(store: str, *, named_only: bool = False) -> str:
    """The URL of ``store``: a name from ``AIMASS_STORES``, or (unless ``named_only``) an s3:// URL."""
    named = stores()
    if store in named:
        return named[store]
    if not named_only and str(store).startswith("s3://"):
        remote.parse_url(store)
        return str(store).rstrip("/")
    raise NotFoundError(
        f"No store named {str(store)[:100]!r}; the stores set up here: {sorted(named) or 'none'}.",
        hint=f"Name one of them; the operator lists stores in {STORES_ENV} (NAME=s3://BUCKET/PREFIX).",
    )


def push_model(ref: str, url: str) -> dict:
    """Upload version ``ref`` (its folder checked against its sha256 sums first) to ``url``
    (``s3://BUCKET[/PREFIX]``, or a store's name), under ``<name>/v<version>/``."""
    url = store_url(url)
    record = registry.get_version(ref)
    folder = registry.open_folder(record)
    if not (folder / artifacts.SUMS).exists():  # a version from before folders were sealed
        artifacts.seal(folder)
    meta = {key: value for key, value in record.to_dict().items() if key in SHARED}
    meta.update(name=record.name, version=record.version)
    return {"model": record.ref, **remote.push_folder(folder, url, record.name, record.version, meta)}


def pull_model(url: str, name: str | None = None) -> dict:
    """Download a pushed version (``s3://.../NAME/vN``, or ``s3://.../NAME`` for its newest; a
    store's name may stand for ``s3://BUCKET/PREFIX``) and register it as the next version of
    ``name`` (default: its own name) here."""
    store, slash, rest = str(url).partition("/")
    if not str(url).startswith("s3://") and store in stores():
        url = stores()[store] + (f"/{rest}" if slash and rest else "")
    models = paths.subdir("models")
    sweep_staging(models)
    staging = models / f"{STAGING}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        meta = remote.pull_folder(url, staging)  # checks that version.json names the URL's NAME/vN
        _only_known_bases(staging / "model.json")
        model = get_task(meta["task"]).estimator.load(staging)
        metrics = {**meta.get("metrics", {}), "pulled_from": meta["url"]}
        pulled = meta["url"].rstrip("/").split("/")[-2]  # the URL's NAME (of NAME/vN)
        target, parent = registry.check_name(name or pulled), meta.get("parent")
        try:
            record = registry.register(model, target, metrics=metrics, parent=parent, staged=staging)
        finally:
            getattr(model, "release", lambda: None)()  # a LoRA adapter leaves the shared base again
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"model": record.ref, "from": meta["url"], "task": record.task, "bytes": meta["bytes"]}


def sweep_staging(models: Path) -> list[str]:
    """Remove the ``.pulling-*`` folders under ``models`` whose pull is over: the process named in
    the folder's name is gone, or (no pid in the name) the folder is over an hour old. Returns the
    names removed.

    >>> import pathlib, tempfile
    >>> models = pathlib.Path(tempfile.mkdtemp())
    >>> (models / f".pulling-{os.getpid()}-abc").mkdir()
    >>> sweep_staging(models)
    []
    """
    removed = []
    for folder in models.glob(f"{STAGING}*"):
        owner, sep, _ = folder.name[len(STAGING) :].partition("-")
        pid = int(owner) if sep and owner.isdigit() and len(owner) < 10 else 0
        try:
            gone = not _alive(pid) if pid > 0 else _age(folder) > STALE_SECONDS
        except FileNotFoundError:  # removed meanwhile by its owner
            continue
        if gone:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _age(folder: Path) -> float:
    return time.time() - folder.stat().st_mtime


def _only_known_bases(meta_file) -> None:
    """Refuse a pulled version whose ``model.json`` names a folder of this machine as its base or
    backbone (a fine-tune's base is loaded from there, not shipped with it): a store's writer
    would serve, export or read the weights of a model the puller was never given. Registered
    names and ``hf:`` models are fine; a folder inside the data roots too (as a REST job's paths).

    >>> import json, pathlib, tempfile
    >>> meta = pathlib.Path(tempfile.mkdtemp()) / "model.json"
    >>> _ = meta.write_text(json.dumps({"params": {"backbone": "/etc"}}))
    >>> _only_known_bases(meta)
    Traceback (most recent call last):
    ...
    aimass.errors.PermissionDenied: The pulled version names params.backbone '/etc', a folder of ...
    """
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not readable: its task's load says why
    roots = paths.data_roots()
    for where, value in _bases(meta, ""):
        if paths.outside_roots(value, roots) is not None:
            raise PermissionDenied(
                f"The pulled version names {where} {value[:200]!r}, a folder of this machine, as its base.",
                hint="Push versions whose base is a registered backbone (aimass backbones) or hf:ORG/NAME; "
                "a local base folder must be under AIMASS_DATA_ROOTS.",
            )


def _bases(value, where: str):
    """(location, text) of every string under a key naming a backbone or base model."""
    if isinstance(value, dict):
        for key, item in value.items():
            at = f"{where}.{key}" if where else str(key)
            if isinstance(item, str) and str(key).rstrip("_").endswith(("backbone", "base_model")):
                yield at, item
            else:
                yield from _bases(item, at)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _bases(item, f"{where}[{i}]")


def remote_models(url: str, name: str | None = None) -> list[dict]:
    """The complete versions pushed under ``url`` (or a store's name), of ``name`` or of every name."""
    return remote.remote_versions(store_url(url), name)
