"""What a job makes belongs to the job's project.

A job submitted into project P (``POST /v1/jobs`` with ``"project": "P"``) that creates a new
model name or a new dataset name puts it in P, so the team that made it can read, deploy and
delete it without an operator's ``aimass projects assign``. A job only claims what it created:
a name with a version or an import older than the job (a new version of an existing model, a
dataset the job only read) stays with its owner, so nobody takes another project's model by
training into its name.
"""

from __future__ import annotations

from sqlalchemy import select

from aimass.access import directory
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
    return [directory.assign(kind, name, project) for kind, name in made if _unowned(kind, name)]


def _all_since(created, since: str) -> bool:
    times = list(created)
    return bool(times) and min(times) >= since


def _unowned(kind: str, name: str) -> bool:
    return name not in directory.owners(kind)
