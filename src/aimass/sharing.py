"""Share model versions between machines through S3-compatible storage: push, pull, list.

Train on one machine, ``push_model("news:3", "s3://models/team-a")``; on another (a serving
node, a Ray worker) ``pull_model("s3://models/team-a/news/v3")`` registers it as the next local
version of ``news``, its lineage, parameters and metrics kept and ``pulled_from`` naming the store.
The transfer and its checks are :mod:`aimass.store.remote`; this module reads and writes the
registry. A pulled version is loaded once before it is registered (safetensors only, as any load),
so a folder its task cannot read never becomes a version.

>>> push_model("news:3", "s3://models/team-a")                  # doctest: +SKIP
{'url': 's3://models/team-a/news/v3', 'files': 7, 'bytes': 91034211, 'unchanged': False, ...}
>>> pull_model("s3://models/team-a/news")["model"]              # doctest: +SKIP
'news:1'
"""

from __future__ import annotations

import shutil
import uuid

from aimass import paths
from aimass.store import artifacts, registry, remote
from aimass.tasks import get_task

SHARED = ("task", "backbone", "dataset_digest", "params", "metrics", "parent", "aimass_version", "created")


def push_model(ref: str, url: str) -> dict:
    """Upload version ``ref`` (its folder checked against its sha256 sums first) to ``url``
    (``s3://BUCKET[/PREFIX]``), under ``<name>/v<version>/``."""
    record = registry.get_version(ref)
    folder = registry.open_folder(record)
    if not (folder / artifacts.SUMS).exists():  # a version from before folders were sealed
        artifacts.seal(folder)
    meta = {key: value for key, value in record.to_dict().items() if key in SHARED}
    meta.update(name=record.name, version=record.version)
    return {"model": record.ref, **remote.push_folder(folder, url, record.name, record.version, meta)}


def pull_model(url: str, name: str | None = None) -> dict:
    """Download a pushed version (``s3://.../NAME/vN``, or ``s3://.../NAME`` for its newest) and
    register it as the next version of ``name`` (default: its own name) here."""
    staging = paths.subdir("models") / f".pulling-{uuid.uuid4().hex[:12]}"
    try:
        meta = remote.pull_folder(url, staging)
        model = get_task(meta["task"]).estimator.load(staging)
        metrics = {**meta.get("metrics", {}), "pulled_from": meta["url"]}
        target, parent = registry.check_name(name or meta["name"]), meta.get("parent")
        try:
            record = registry.register(model, target, metrics=metrics, parent=parent, staged=staging)
        finally:
            getattr(model, "release", lambda: None)()  # a LoRA adapter leaves the shared base again
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"model": record.ref, "from": meta["url"], "task": record.task, "bytes": meta["bytes"]}


def remote_models(url: str, name: str | None = None) -> list[dict]:
    """The complete versions pushed under ``url`` (of ``name``, or of every name)."""
    return remote.remote_versions(url, name)
