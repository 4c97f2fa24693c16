"""What a job makes belongs to the job's project.

A job submitted into project P (``POST /v1/jobs`` with ``"project": "P"``) that creates a new
model name, a new dataset name or a vector store (pulled) puts it in P, so the team that made it
can read, deploy and delete it without an operator's ``aimass projects assign``. A job only
claims what it created: a name with a version or an import older than the job (a new version of
an existing model, a dataset the job only read) stays with its owner.

And a job writes only into its own project: :func:`confine` is the check the worker installs
(:mod:`aimass.store.claims`), so a job in P adds a version only to a model or dataset of P, or
under a new name. A job in ``default`` writes the unassigned names. Without it, a key that may
submit jobs in one project could train into another project's model name, and that project's
services and trainings would pick the new version up as "the latest".
"""

from __future__ import annotations

from sqlalchemy import select

from aimass.access import directory
from aimass.store.claims import Check
from aimass.store.db import DatasetRecord, JobRecord, ModelVersionRecord, session


def adopt(job_id: str, result: dict) -> list[dict]:
    """Assign the model and dataset names ``result`` names, when the job created them, to the
    job's project; returns what was assigned (nothing for a job in ``default``)."""
    project = directory.project_of("job", job_id)
    if project == directory.DEFAULT_PROJECT or not isinstance(result, dict):
        return []
    with session() as s:
        since = s.get(JobRecord, job_id).created
        made = []
        if isinstance(ref := result.get("model"), str):
            name = ref.split(":")[0]
            created = s.scalars(select(ModelVersionRecord.created).where(ModelVersionRecord.name == name))
            made += [("model", name)] if _all_since(created, since) else []
        if isinstance(dataset_id := result.get("dataset"), str) and (ds := s.get(DatasetRecord, dataset_id)):
            created = s.scalars(select(DatasetRecord.created).where(DatasetRecord.name == ds.name))
            made += [("dataset", ds.name)] if _all_since(created, since) else []
    if isinstance(store_id := result.get("vector_store_id"), str) and result.get("pulled_from"):
        made.append(("vector_store", store_id))  # a pulled store is new: made by this job
    return [directory.assign(kind, name, project) for kind, name in made if _unowned(kind, name)]


def _all_since(created, since: str) -> bool:
    times = list(created)
    return bool(times) and min(times) >= since


def _unowned(kind: str, name: str) -> bool:
    return name not in directory.owners(kind)


def confine(job_id: str) -> Check:
    """The write check of job ``job_id``: a name its project owns, or a name nothing has yet."""

    def check(kind: str, name: str) -> None:
        # the project is read when the job writes, not when it starts: the route assigns the job
        # its project right after queueing it, and a runner may start it in between
        project = directory.project_of("job", job_id)
        directory.may_write(project, kind, name, how="a job")
        if project != directory.DEFAULT_PROJECT and kind in ("model", "dataset") and _unowned(kind, name):
            # a new name is the job's project's from its first write: a job cancelled or failed
            # after its import left the dataset in default, where its retry could not write
            directory.assign(kind, name, project)

    return check
