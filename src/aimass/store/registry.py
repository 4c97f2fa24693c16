"""The model registry: every version with its lineage, artifacts under ``AIMASS_HOME/models``."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy import text as sql_text

from aimass import paths
from aimass.errors import ConfigError, IntegrityError, InUseError, NotFoundError
from aimass.store import artifacts
from aimass.store.claims import claim
from aimass.store.db import (
    AliasRecord,
    DatasetRecord,
    DeletedVersionRecord,
    ModelVersionRecord,
    RunRecord,
    now,
    session,
)
from aimass.version import __version__

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):  # match() + $ would allow "name\n"
        raise ConfigError(
            f"Model name {name!r} is not valid.",
            hint="Use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    return name


ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"reviews"`` -> (reviews, None = latest); ``"reviews:3"`` -> (reviews, 3);
    ``"reviews@production"`` -> the version the alias points at."""
    ref = str(ref)
    if "@" in ref:
        name, _, alias = ref.partition("@")
        return check_name(name), alias_version(name, alias)
    name, _, version = ref.partition(":")
    if version and not (version.isascii() and version.isdigit() and len(version) <= 12):
        raise ConfigError(
            f"Model reference {ref!r} is not valid.",
            hint="Use NAME, NAME:VERSION or NAME@ALIAS, e.g. reviews:3 or reviews@production.",
        )
    return check_name(name), int(version) if version else None


CHECKPOINT = re.compile(r"^(.+):ckpt-step-([0-9]{1,9})$")


def split_checkpoint(ref: str) -> tuple[str, int | None]:
    """``"ft-news:2:ckpt-step-40"`` -> (``ft-news:2``, 40): a language model's checkpoint kept at
    an earlier epoch's end; any other ref -> (ref, None).

    >>> split_checkpoint("ft-news:2:ckpt-step-40"), split_checkpoint("ft-news:2")
    (('ft-news:2', 40), ('ft-news:2', None))
    """
    found = CHECKPOINT.fullmatch(str(ref))
    return (found.group(1), int(found.group(2))) if found else (str(ref), None)


def alias_version(name: str, alias: str) -> int:
    with session() as s:
        record = s.get(AliasRecord, (name, alias))
    if record is None:
        known = ", ".join(f"{name}@{a}" for a in aliases(name)) or "none"
        raise NotFoundError(
            f"Model '{name}' has no alias '{alias}'. Aliases: {known}.",
            hint=f"Point one at a version: `aimass models alias {name}:VERSION {alias}`.",
        )
    return record.version


def aliases(name: str) -> dict[str, int]:
    """Alias -> version for one model."""
    with session() as s:
        rows = s.scalars(select(AliasRecord).where(AliasRecord.name == name)).all()
    return {r.alias: r.version for r in rows}


def set_alias(ref: str, alias: str, *, force: bool = False) -> ModelVersionRecord:
    """Point ``alias`` at the version ``ref`` names. A version the compression gate rejected
    can become ``production`` only with ``force``."""
    if not ALIAS.fullmatch(alias or ""):
        raise ConfigError(
            f"Alias {alias!r} is not valid.",
            hint="Use lower-case letters, digits, '_' or '-', e.g. production.",
        )
    record = get_version(ref)
    gate = (record.metrics or {}).get("gate", {})
    if alias == "production" and gate.get("status") == "rejected" and not force:
        raise ConfigError(
            f"{record.ref} was rejected by the compression gate ({gate.get('reason', 'accuracy drop')}).",
            hint="Promote another version, or pass --force to promote it anyway.",
        )
    with session() as s, s.begin():
        s.merge(AliasRecord(name=record.name, alias=alias, version=record.version, updated=now()))
    return record


def remove_alias(ref: str, alias: str) -> dict:
    """Remove ``alias`` from the model ``ref`` names (``NAME``, or ``NAME:VERSION``: then the alias
    must name that version, so a caller never removes what another just moved). Services keep
    serving what they serve: they hold the version the alias named when they were deployed.

    Returns ``{"alias": "NAME@ALIAS", "ref": the version it named, "removed": True}``.

    Raises:
        NotFoundError: no such model, or it has no such alias.
        InUseError: ``NAME:VERSION`` given and the alias names another version.
    """
    name, _, version = str(ref).partition(":")
    named = alias_version(name, alias)  # NotFoundError, listing the aliases it has
    if version and version != str(named):
        raise InUseError(
            f"{name}@{alias} names {name}:{named}, not {ref}.",
            hint=f"Remove it by name (`aimass models unalias {name} {alias}`) or as {name}:{named}.",
        )
    with session() as s, s.begin():
        s.execute(delete(AliasRecord).where(AliasRecord.name == name, AliasRecord.alias == alias))
    return {"alias": f"{name}@{alias}", "ref": f"{name}:{named}", "removed": True}


def record_dataset(ds) -> None:
    with session() as s, s.begin():
        s.merge(
            DatasetRecord(
                id=ds.id,
                digest=ds.digest,
                name=ds.name,
                path=str(ds.path),
                language=ds.manifest.get("language", ""),
                # the dataset's own summary, not that of an import that found it stored already
                summary=ds.summary(this_import=False) if getattr(ds, "imported", None) else ds.summary(),
            )
        )


def forget_dataset(dataset_id: str) -> None:
    """A deleted dataset leaves the listings: its record goes, and the runs that read it keep
    their params but no longer point at it (nothing can resume on data that is gone)."""
    with session() as s, s.begin():
        s.execute(update(RunRecord).where(RunRecord.dataset_id == dataset_id).values(dataset_id=None))
        s.execute(delete(DatasetRecord).where(DatasetRecord.id == dataset_id))


def start_run(
    task: str, params: dict, dataset_id: str | None = None, *, run_id: str | None = None
) -> RunRecord:
    run = RunRecord(id=run_id or uuid.uuid4().hex[:16], task=task, params=params, dataset_id=dataset_id)
    with session() as s, s.begin():
        s.add(run)
    return run


def get_run(run_id: str) -> RunRecord | None:
    with session() as s:
        return s.get(RunRecord, run_id)


def version_of_run(run_id: str) -> ModelVersionRecord | None:
    """The version a run registered, if it got that far."""
    with session() as s:
        return s.scalars(select(ModelVersionRecord).where(ModelVersionRecord.run_id == run_id)).first()


def finish_run(run_id: str, status: str, timings: dict | None = None, error: str | None = None) -> None:
    with session() as s, s.begin():
        run = s.get(RunRecord, run_id)
        run.status, run.timings, run.error, run.finished = status, timings or {}, error, now()


def find_run(task: str, params: dict, dataset_id: str | None) -> RunRecord | None:
    """The latest unfinished run with the same task, params and data (for ``--resume``)."""
    with session() as s:
        rows = s.scalars(
            select(RunRecord)
            .where(
                RunRecord.task == task, RunRecord.dataset_id == dataset_id, RunRecord.status != "succeeded"
            )
            .order_by(RunRecord.started.desc())
        ).all()
    return next((r for r in rows if r.params == params), None)


def register(
    model,
    name: str,
    *,
    metrics: dict | None = None,
    run_id: str | None = None,
    parent: str | None = None,
    extra_files: dict[str, Path] | None = None,
    staged: Path | None = None,
) -> ModelVersionRecord:
    """Save ``model`` as the next version of ``name`` and record its lineage; ``staged``: a folder
    ``model`` was already saved to (moved into place instead of saving again).

    The files are written and sealed first, outside any lock (a save takes seconds); the version
    number is then taken under SQLite's write lock (``BEGIN IMMEDIATE``), which is held while the
    folder is renamed into place and the record committed: two processes registering the same
    name at once get two numbers, each with its own files."""
    claim("model", check_name(name))
    root = paths.subdir("models") / name
    building = _build(root, model, staged, extra_files or {})
    try:
        with session() as s, s.begin():
            s.execute(sql_text("BEGIN IMMEDIATE"))  # readers go on; other writers wait (busy_timeout)
            version = _next_version(s, name)
            folder = root / f"v{version}"
            _clear_leftover(s, folder)
            record = ModelVersionRecord(
                name=name,
                version=version,
                task=model.task,
                path=str(folder),
                backbone=getattr(model, "backbone_", ""),
                run_id=run_id,
                dataset_digest=getattr(model, "data_digest_", ""),
                params=model.get_params(),
                metrics=metrics or {},
                parent=parent,
                aimass_version=__version__,
            )
            s.add(record)
            s.flush()  # a broken record fails here, before its folder takes the version's place
            os.replace(building, folder)
            artifacts.fsync_dir(root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return record


def _next_version(s, name: str) -> int:
    """One more than the highest version ``name`` has had: a deleted version's number is never
    reused. Read under the write lock, so no other process can take the same number meanwhile."""
    latest = s.scalar(select(func.max(ModelVersionRecord.version)).where(ModelVersionRecord.name == name))
    gone = s.scalar(select(func.max(DeletedVersionRecord.version)).where(DeletedVersionRecord.name == name))
    return max(latest or 0, gone or 0) + 1


def _clear_leftover(s, folder: Path) -> None:
    """Remove ``folder`` when it is left by a crash between its rename and its record's commit;
    a folder that a committed record owns is never removed (an IntegrityError names it)."""
    if not folder.exists():
        return
    owner = s.scalars(select(ModelVersionRecord).where(ModelVersionRecord.path == str(folder))).first()
    if owner is not None:
        raise IntegrityError(
            f"{folder} belongs to {owner.ref}, yet the next free version number points at it.",
            hint="The registry database and the models folder disagree: restore both from the same backup.",
        )
    _remove_folder(folder)


def _build(root: Path, model, staged: Path | None, extra_files: dict[str, Path]) -> Path:
    """Save (or move) the artifacts into a hidden folder under ``root`` and seal them with sha256
    sums; :func:`register` renames it into place, so a crash leaves either no version folder or a
    complete, sealed one (a hidden ``.building-*`` one is removed by whoever started it)."""
    root.mkdir(parents=True, exist_ok=True)
    building = root / f".building-{uuid.uuid4().hex[:12]}"
    try:
        if staged is not None:
            shutil.move(str(staged), building)
        else:
            model.save(building)
        for target, source in extra_files.items():
            shutil.copy(source, building / target)
        artifacts.seal(building)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return building


def open_folder(record: ModelVersionRecord) -> Path:
    """The version's folder, after checking every file against its sha256."""
    artifacts.verify(Path(record.path))
    return Path(record.path)


def rejected(record: ModelVersionRecord) -> bool:
    """Whether the compression gate rejected ``record`` (a child that lost more than its
    ``max_drop``): such a version is never "the latest", only named by number (or an alias)."""
    return ((record.metrics or {}).get("gate") or {}).get("status") == "rejected"


def missing_model(ref: str) -> NotFoundError:
    """A version that is not there, or (REST) one the caller may not read: the same answer."""
    return NotFoundError(
        f"No model '{ref}'.",
        hint="`aimass models list` (or GET /v1/versions) lists the versions you may use; "
        "train one with `aimass train`.",
    )


def get_version(ref: str) -> ModelVersionRecord:
    """A version by ``NAME`` (the latest: the newest one the compression gate did not reject),
    ``NAME:VERSION`` or ``NAME@ALIAS`` (either of which may name a rejected one); a clear error
    lists what exists."""
    name, version = parse_ref(ref)
    with session() as s:
        query = select(ModelVersionRecord).where(ModelVersionRecord.name == name)
        query = query.where(ModelVersionRecord.version == version) if version is not None else query
        records = list(s.scalars(query.order_by(ModelVersionRecord.version.desc())))
    record = next((r for r in records if version is not None or not rejected(r)), None)
    if record is None and records:
        raise NotFoundError(
            f"Every version of '{name}' was rejected by the compression gate; a name alone picks "
            "the newest version the gate did not reject.",
            hint=f"Name the version to use one anyway ({name}:VERSION); `aimass models list` lists them.",
        )
    if record is None and version is not None:
        with session() as s:
            gone = s.get(DeletedVersionRecord, (name, version))
        if gone is not None:
            raise NotFoundError(
                f"Model version {name}:{version} was deleted on {gone.deleted}.",
                hint=f"Its children keep their lineage; `aimass models list` shows what {name} has now.",
            )
    if record is None:  # no listing: this message reaches REST callers and job results of any project
        raise missing_model(ref)
    return record


def list_versions(name: str | None = None) -> list[ModelVersionRecord]:
    with session() as s:
        query = select(ModelVersionRecord).order_by(ModelVersionRecord.name, ModelVersionRecord.version)
        if name:
            query = query.where(ModelVersionRecord.name == name)
        return list(s.scalars(query).all())


def latest_versions() -> list[ModelVersionRecord]:
    """The latest version of every model name, as :func:`get_version` picks it for a name alone (a
    version the compression gate rejected is skipped; a name with only rejected ones is left out)."""
    latest: dict[str, ModelVersionRecord] = {}
    for record in list_versions():
        if not rejected(record):
            latest[record.name] = record
    return list(latest.values())


def versions_trained_on(digest: str) -> list[str]:
    """The refs of the registered versions trained on the dataset with content digest ``digest``."""
    with session() as s:
        rows = s.scalars(select(ModelVersionRecord).where(ModelVersionRecord.dataset_digest == digest))
        return [r.ref for r in rows]


def update_metrics(ref: str, metrics: dict) -> None:
    record = get_version(ref)
    with session() as s, s.begin():
        s.get(ModelVersionRecord, record.id).metrics = metrics


def delete_version(
    ref: str, *, served: Mapping[str, Iterable[str]] | None = None, force: bool = False
) -> dict:
    """Remove version ``ref``: its record, the aliases pointing at it and its folder.

    Args:
        ref: ``NAME:VERSION`` (or ``NAME`` / ``NAME@ALIAS``: the version they name now).
        served: ``NAME:VERSION`` -> the services serving it, as the caller knows them (the
            server's engine, or ``serving.json`` for the command line): a served version is refused.
        force: delete the aliases pointing at it too (without it, an alias refuses the delete).

    Returns ``{"ref", "aliases_removed", "children"}``: the children (versions whose ``parent`` is
    this one) keep their lineage, but their parent no longer resolves (reading it says it was
    deleted, and when). The version's number is never given out again.

    Raises:
        InUseError: a service serves it, or an alias points at it and ``force`` is not set.
        NotFoundError: no such version.
    """
    record = get_version(ref)
    services = sorted(set((served or {}).get(record.ref, ())))
    if services:
        raise InUseError(
            f"{record.ref} is served by {', '.join(services)}; a deployed version cannot be deleted.",
            hint=f"Undeploy it first (DELETE /v1/services/{services[0]}, or Undeploy on the console's "
            "service page), or deploy another version to that service.",
        )
    pointing = sorted(a for a, v in aliases(record.name).items() if v == record.version)
    if pointing and not force:
        named = ", ".join(f"{record.name}@{a}" for a in pointing)
        raise InUseError(
            f"{record.ref} is {named}; deleting it would leave the alias pointing at nothing.",
            hint=f"Move the alias first (`aimass models alias {record.name}:VERSION {pointing[0]}`), "
            "or force the delete to remove the alias with it (--force, ?force=true).",
        )
    with session() as s, s.begin():
        children = list(s.scalars(select(ModelVersionRecord).where(ModelVersionRecord.parent == record.ref)))
        s.execute(
            delete(AliasRecord).where(AliasRecord.name == record.name, AliasRecord.version == record.version)
        )
        s.execute(delete(ModelVersionRecord).where(ModelVersionRecord.id == record.id))
        s.merge(DeletedVersionRecord(name=record.name, version=record.version, deleted=now()))
    _remove_folder(Path(record.path))
    return {"ref": record.ref, "aliases_removed": pointing, "children": [c.ref for c in children]}


def _remove_folder(folder: Path) -> None:
    """Rename the folder out of the way first (one atomic step), then delete it: a crash leaves a
    hidden ``.deleted-*`` folder, never a half-deleted version folder."""
    if not folder.exists():
        return
    gone = folder.parent / f".deleted-{folder.name}-{uuid.uuid4().hex[:8]}"
    os.replace(folder, gone)
    shutil.rmtree(gone, ignore_errors=True)


def deleted_on(ref: str | None) -> str | None:
    """When version ``ref`` (``NAME:VERSION``) was deleted, or None if it was not (or ``ref`` names
    no version number)."""
    name, _, version = str(ref or "").partition(":")
    if not (version.isascii() and version.isdigit()):
        return None
    with session() as s:
        gone = s.get(DeletedVersionRecord, (name, int(version)))
    return gone.deleted if gone is not None else None
