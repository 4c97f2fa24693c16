"""One table maps every REST route to (action, resource, context); the access policies decide.

:data:`RULES` is that table. A route it does not list keeps the key-scope check it declares (so a
route added elsewhere fails closed to its scope). For a listed route the caller's key is resolved
to a principal (its scopes as managed policies, or the user it belongs to), the resource to its ARN
in its project, and :class:`~aimass.access.authorizer.Authorizer` decides (cached per key, action
and resource for decisions that consulted no condition; dropped on any policy change).

404 or 403: a denied request on one resource the caller may not even *read* (``model:Read``,
``service:Read``, ``job:Read``) is answered 404, exactly like a resource that does not exist, so a
key cannot probe another project's names; the audit log still records the real decision, which
``aimass policy explain REQUEST_ID`` shows. A caller who may read it gets 403 naming the action,
the resource and the denying statements (or the near-misses).

Every decision on a management route, and every denial, is written to the audit log.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote

from aimass import jobs, paths
from aimass.access import audit, directory
from aimass.access.authorizer import Authorizer
from aimass.access.evaluate import EXPLICIT_DENY, explain
from aimass.backbones.embeddings import canonical
from aimass.data import load_dataset, uploads
from aimass.data.storage import deleted_dataset, missing_dataset
from aimass.errors import AimassError, NotFoundError, PermissionDenied
from aimass.retrieval.files import missing_file
from aimass.retrieval.stores import DEFAULT_MODEL
from aimass.serve.batch_files import output_job
from aimass.serve.engine import missing_service, not_served
from aimass.serve.openai_errors import model_not_found, model_not_served
from aimass.serve.openai_finetune import fine_tuned_name, result_job
from aimass.store import browse, registry

Target = Callable[[dict, dict], tuple[str, str]]  # (path params, JSON body) -> (kind, name)
VECTOR_STORE = "/v1/vector_stores/{vector_store_id}"


def path(kind: str, param: str = "name") -> Target:
    return lambda params, body: (kind, params[param])


def aliased(params: dict, data) -> tuple[str, str]:
    """``DELETE /v1/versions/{ref}/aliases/{alias}``: decided on the version the alias names now."""
    return "model", f"{params['ref'].partition(':')[0]}@{params['alias']}"


def body(kind: str, field: str) -> Target:
    return lambda params, data: (kind, str(data.get(field) or "")) if isinstance(data, dict) else (kind, "")


def encoder(field: str = "model", default: str = "") -> Target:
    """An embedding model named in the body, decided as the encoder the route opens: ``minilm`` and
    ``all-minilm-l6-v2`` are ``minilm-l6`` (a Deny on ``minilm-l6`` was passed by its alias)."""

    def target(params: dict, data) -> tuple[str, str]:
        name = data.get(field) if isinstance(data, dict) else None
        return "model", canonical(str(name or default))

    return target


ANSWERING = "answering"  # a target kind: the versions a served name answers with (AccessGuard.served)


def answering(read: Target) -> Target:
    """The versions that answer the name ``read`` gives (a service's traffic split): each is decided
    too, so a ``Deny`` on ``reviews:1`` is not passed by calling it as the service ``reviews``, nor
    by a service of another name that serves it. :class:`AccessGuard` asks the engine (``served``)."""
    return lambda params, data: (ANSWERING, read(params, data)[1])


def fixed(arn: str) -> Target:
    return lambda params, data: ("", arn)


def named(top: str, param: str = "name") -> Target:
    return lambda params, data: ("", f"aimass:{top}/{params[param]}")


def new(top: str, field: str = "name") -> Target:
    return lambda params, data: ("", f"aimass:{top}/{data.get(field, '') if isinstance(data, dict) else ''}")


def _job_of_file(file_id: str) -> str | None:
    """The job whose file ``file_id`` is (a fine-tuning job's results, a batch's output or
    errors), or None for an uploaded file."""
    return result_job(file_id) or output_job(file_id)


def _file(params: dict, data) -> tuple[str, str]:
    """An OpenAI file: an uploaded one (conversations or a batch's requests) is data, a job's
    result or output file the job's."""
    job_id = _job_of_file(params["file_id"])
    return ("dataset", params["file_id"]) if job_id is None else ("job", job_id)


def _file_action(params: dict, data) -> str:
    return "dataset:Read" if _job_of_file(params["file_id"]) is None else "job:Read"


def in_project(params: dict, data) -> tuple[str, str]:
    """A new job, in the body's ``project`` (``default`` when none): ``aimass:project/P/job/*``,
    so a policy on the project's resources (``aimass:project/P/*``) covers submitting there."""
    project = data.get("project") if isinstance(data, dict) else None
    return "", f"aimass:project/{project or directory.DEFAULT_PROJECT}/job/*"


def importing_into(params: dict, data) -> tuple[str, str]:
    """A new dataset version, in the body's ``project`` (an upload's ``?project=``; ``default``
    when none): ``aimass:project/P/dataset/*``, which a policy on P's resources covers."""
    project = data.get("project") if isinstance(data, dict) else None
    return "", f"aimass:project/{project or directory.DEFAULT_PROJECT}/dataset/*"


def _upload(params: dict, data) -> tuple[str, str]:
    """An upload, in its project; a missing one is the route's 404 for anyone."""
    project = uploads.upload_project(params["upload_id"])
    if project is None:
        raise uploads.missing_upload(params["upload_id"])
    return "", f"aimass:project/{project}/dataset/*"


def upload_arn(upload_id: str) -> str:
    """What using an upload (naming a path in its folder as data) is decided on: its project's
    datasets, ``aimass:project/P/dataset/*``, as uploading there and listing P's uploads are
    (``dataset:Import``). One with no record (cut short, or kept before uploads had projects) is
    no project's: ``aimass:upload/ID``, which only a grant on every resource covers."""
    project = uploads.upload_project(upload_id)
    return f"aimass:project/{project}/dataset/*" if project else f"aimass:upload/{upload_id}"


def upload_in(field: str) -> Callable[[dict, dict], tuple[str, str] | None]:
    """The upload the body's path ``field`` lies in (``uploads/<id>/...``), decided as
    :func:`upload_arn` says; None (nothing to ask) for a path in no upload, or a name."""

    def target(params: dict, data) -> tuple[str, str] | None:
        value = data.get(field) if isinstance(data, dict) else None
        upload = paths.upload_of(value) if isinstance(value, str) else None
        return ("upload", upload) if upload else None

    return target


IMPORTS_FROM = tuple(("dataset:Import", upload_in(field)) for field in ("path", "valid_path", "test_path"))


def creating_store(params: dict, data) -> tuple[str, str]:
    """A new vector store, in the body's ``project`` (``default`` when none)."""
    project = data.get("project") if isinstance(data, dict) else None
    return "", f"aimass:project/{project or directory.DEFAULT_PROJECT}/vector_store/*"


def job_submit(params: dict, data) -> str:
    """Submitting custom code is ``job:SubmitCode``; any other kind ``job:Submit``."""
    return "job:SubmitCode" if isinstance(data, dict) and data.get("kind") == "custom" else "job:Submit"


def job_retry(params: dict, data) -> str:
    """Retrying runs the job again: ``job:SubmitCode`` for a custom job."""
    try:
        code = jobs.kind_of(params["job_id"]).name == "custom"
    except AimassError:  # no such job: the route answers 404
        code = False
    return "job:SubmitCode" if code else "job:Submit"


TRAINS = ("train", "auto")  # the job kinds that register a model version under a name


def _job_body(params: dict, data) -> dict:
    """What a job was (or is being) submitted with: the body of ``POST /v1/jobs`` (``kind``,
    ``params``, ``project``), ``/v1/auto``'s as an ``auto`` job's, or a retried job's own."""
    if "job_id" in params:  # a retry runs the job's stored params again
        try:
            job = jobs.state.get(params["job_id"])
        except AimassError:  # no such job: the route answers 404
            return {}
        project = directory.project_of("job", params["job_id"])
        return {"kind": job.kind, "params": dict(job.params or {}), "project": project}
    if not isinstance(data, dict):
        return {}
    if "kind" in data:
        return data
    return {"kind": "auto", "params": data, "project": data.get("project")}


def _job_model(body: dict) -> str | None:
    """The model name a job registers a version of: a train or auto job's ``name``, else its
    data's name (what :func:`aimass.workflow.train_model` and ``auto`` fall back to); a compress
    job's parent's (the child is a version of the parent's model); a pull's ``name``, else the
    pushed model's."""
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    if body.get("kind") == "compress" and isinstance(params.get("model"), str):
        return params["model"].split(":")[0].split("@")[0] or None
    if body.get("kind") == "pull":
        name = params.get("name") or str(params.get("remote") or "").split(":")[0]
        return str(name) if name else None
    if body.get("kind") not in TRAINS:
        return None
    name, data = params.get("name"), str(params.get("data") or params.get("path") or "")
    if not name and params.get("from"):  # a continued version registers under its parent's name
        name = str(params["from"]).split(":")[0].split("@")[0]
    if not name and data:  # a stored dataset's name, or the name a file is imported under
        name = dataset_name(data) if "/" not in data else None
        name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data).stem).strip("-.") or None
    return str(name) if name else None


def _model_target(name: str, body: dict) -> tuple[str, str]:
    """What a job's model is decided as: the model, when the name is taken (so one the caller may
    not read answers 404 as a missing one, naming no project); a name no model has yet, in the
    project the job registers it in."""
    if directory.exists("model", name) or directory.project_of("model", name) != directory.DEFAULT_PROJECT:
        return "model", name
    return "", directory.arn("model", name, body.get("project") or directory.DEFAULT_PROJECT)


def job_trains(params: dict, data) -> tuple[str, str] | None:
    """A train, auto, compress or pull job registers a version of a model: ``model:Train`` on it;
    None for others."""
    body = _job_body(params, data)
    name = _job_model(body)
    return _model_target(name, body) if name else None


def job_deploys(params: dict, data) -> tuple[str, str] | None:
    """An auto job with ``deploy`` points ``production`` at what it trains and serves it: a deploy
    at the ``production`` stage (as ``PUT .../aliases/production`` and ``POST /v1/services``)."""
    body = _job_body(params, data)
    deploying = isinstance(body.get("params"), dict) and body["params"].get("deploy")
    name = _job_model(body) if body.get("kind") == "auto" and deploying else None
    return _model_target(name, body) if name else None


def job_saves(params: dict, data) -> tuple[str, str] | None:
    """An evaluate job with ``save`` rewrites a version's stored evaluation and headline metrics,
    a write to the version as registering it is: ``model:Train`` on the version its ``model`` opens
    now (a bare name its latest, an alias the version it points at, a checkpoint its version); None
    for any other job, or a ref that opens nothing (the route answers 404 without naming what
    exists)."""
    body = _job_body(params, data)
    settings = body.get("params") if isinstance(body.get("params"), dict) else {}
    if (
        body.get("kind") != "evaluate"
        or not settings.get("save")
        or not isinstance(settings.get("model"), str)
    ):
        return None
    try:
        return "model", registry.get_version(registry.split_checkpoint(settings["model"])[0]).ref
    except AimassError:
        return None


TRAINING = (
    ("model:Train", job_trains),
    ("model:Train", job_saves),
    ("model:Deploy", job_deploys, "production"),
)


def fine_tunes(params: dict, data) -> tuple[str, str] | None:
    """``POST /v1/fine_tuning/jobs`` trains (and registers) ``ft-SUFFIX``: ``model:Train`` on it, as
    a train job's (a Deny on training it was passed through the OpenAI route)."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        return None  # the route answers 400
    suffix = data.get("suffix") if isinstance(data.get("suffix"), str) else None
    return _model_target(fine_tuned_name(suffix, data["model"]), data)


def deployed_into(params: dict, data) -> tuple[str, str]:
    """The service a deploy changes: the body's ``service``, default the model's name. One that a
    project owns is named in that project. An unassigned one named after the model is the model's
    project's (the deploy puts a new one there, :func:`adopt_service`); any other unassigned one is
    ``default``'s, so a key cannot deploy its model into a service it was not given."""
    model = str(data.get("model") or "") if isinstance(data, dict) else ""
    base = model.split(":")[0].split("@")[0]
    name = str(data.get("service") or base) if isinstance(data, dict) else ""
    if name and name == base and name not in directory.owners("service"):
        return "", directory.arn("service", name, directory.project_of("model", base))
    return "service", name


def leaving(params: dict, data) -> tuple[str, str]:
    """The project a resource leaves when it is assigned (``default`` for an unassigned one)."""
    kind = str(data.get("kind") or "") if isinstance(data, dict) else ""
    name = str(data.get("name") or "") if isinstance(data, dict) else ""
    known = kind in directory.RESOURCE_KINDS and name
    if not known:
        return "", f"aimass:project/{directory.DEFAULT_PROJECT}"
    owner = directory.service_project(name) if kind == "service" else directory.project_of(kind, name)
    return "", f"aimass:project/{owner}"


def adopt_service(name: str, ref: str) -> None:
    """A service nobody owns yet, named after the project model it now serves, joins that project
    (so its team can read, scale and undeploy it)."""
    base = ref.split(":")[0].split("@")[0]
    if name != base or name in directory.owners("service"):
        return
    if (project := directory.project_of("model", base)) != directory.DEFAULT_PROJECT:
        directory.assign("service", name, project)


def fixing_into(params: dict, data) -> tuple[str, str]:
    """Where a fix writes its new version: the dataset itself, or the body's ``name`` in the
    dataset's project (so a Deny on that name holds: a fix may not add a version to it)."""
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        return "dataset", params["dataset_id"]
    project = directory.project_of("dataset", dataset_name(params["dataset_id"]))
    return "", directory.arn("dataset", name, project)


def dataset_name(id_or_name: str) -> str:
    """The name a project owns for the dataset the routes open with ``id_or_name``: resolved as
    :func:`aimass.data.load_dataset` resolves it (an id, a digest, a name, or an id prefix), so an
    id prefix or digest is decided as the dataset it opens; ``id_or_name`` itself when nothing
    matches (the route answers 404)."""
    record = browse.dataset_record(id_or_name) if id_or_name else None
    if record is not None or not id_or_name:
        return record.name if record is not None else id_or_name
    try:
        found = load_dataset(id_or_name)
    except AimassError:  # a deleted one is decided by the name it had: its project's, not default's
        gone = deleted_dataset(id_or_name)
        names = gone.get("names") if gone else None
        if not names or id_or_name in names:
            return id_or_name
        return names[0]
    if id_or_name in found.names:  # a name: the project owning that name decides
        return id_or_name
    record = browse.dataset_record(found.id)
    return record.name if record is not None else found.name


@dataclass(frozen=True)
class Rule:
    method: str
    template: str
    action: str | Callable[[dict, dict], str]  # or (path params, JSON body) -> action
    target: Target
    management: bool = True  # audit every decision (not only denials)
    # more (action, resource[, stage]) the request needs, each decided; an action may be read from the
    # request; a target that answers None asks nothing (a job that deploys nothing); ``stage``: the
    # ``aimass:ModelStage`` the decision is made at (an auto job's deploy moves ``production``)
    also: tuple[tuple, ...] = ()
    query: tuple[str, ...] = ()  # query parameters the target reads as body fields (a multipart upload's)

    @property
    def regex(self) -> re.Pattern:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template) + "$")


def attaching(params: dict, data) -> str:
    """Attaching a policy to a user, group, key or project updates it: ``user:Update``...; to one
    resource's ARN, its project (``project:Update``)."""
    kind = str(data.get("type") or "") if isinstance(data, dict) else ""
    return f"{kind}:Update" if kind in ("user", "group", "key", "project") else "project:Update"


def attached_to(params: dict, data) -> tuple[str, str]:
    """What an attachment changes: ``aimass:user/NAME`` (group, key, project alike), or the project
    of a resource ARN (``aimass:project/P/...``)."""
    kind = str(data.get("type") or "") if isinstance(data, dict) else ""
    target = str(data.get("target") or "") if isinstance(data, dict) else ""
    if kind in ("user", "group", "key", "project"):
        return "", f"aimass:{kind}/{target}"
    project = re.match(r"aimass:project/([^/]+)", target)
    return "", f"aimass:project/{project.group(1) if project else directory.DEFAULT_PROJECT}"


ATTACHING = ((attaching, attached_to),)


def _project(kind: str, name: str) -> str:
    """The project a resource is decided in (:meth:`AccessGuard.arn`): a service nobody assigned
    is its model's project's, a name only a service has is the service's."""
    if kind == "service":
        return directory.service_project(name)
    if kind == "model":
        return directory.model_project(name)
    return directory.project_of(kind, name)


RULES: tuple[Rule, ...] = (
    *(
        Rule(
            method,
            route,
            "model:Predict",
            target,
            management=False,
            also=(("model:Predict", answering(target)),),
        )
        for method, route, target in (
            ("POST", "/v1/models/{name}/predict", path("model")),
            ("POST", "/v1/chat/completions", body("model", "model")),
            ("POST", "/v1/completions", body("model", "model")),
            ("POST", "/v1/responses", body("model", "model")),
        )
    ),
    Rule("POST", "/v1/embeddings", "model:Predict", encoder(), management=False),
    Rule("POST", "/tokenize", "model:Predict", body("model", "model"), management=False),
    Rule("POST", "/detokenize", "model:Predict", body("model", "model"), management=False),
    *(
        Rule("POST", route, "model:Predict", encoder(), management=False)
        for route in ("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/score")
    ),
    Rule("GET", "/v1/models", "model:List", fixed("aimass:project/*"), management=False),
    Rule("GET", "/v1/models/{model_id}", "model:Read", path("model", "model_id"), management=False),
    # a deploy changes the service it deploys into: another project's service is not the caller's
    Rule(
        "POST",
        "/v1/services",
        "model:Deploy",
        body("model", "model"),
        also=(("service:Update", deployed_into),),
    ),
    Rule("GET", "/v1/services", "service:List", fixed("aimass:project/*")),
    Rule("GET", "/v1/services/{name}", "service:Read", path("service")),
    Rule("GET", "/v1/services/{name}/events", "service:Read", path("service")),
    Rule("GET", "/v1/services/{name}/metrics", "service:Read", path("service")),
    Rule("PUT", "/v1/services/{name}/traffic", "service:Update", path("service")),
    Rule("DELETE", "/v1/services/{name}", "service:Delete", path("service")),
    Rule("POST", "/v1/keys", "key:Create", fixed("aimass:key/*")),
    Rule("GET", "/v1/keys", "key:Read", fixed("aimass:key/*")),
    Rule("PATCH", "/v1/keys/{key_id}", "key:Update", named("key", "key_id")),
    Rule("GET", "/v1/webhook_event_types", "webhook:Read", fixed("aimass:webhook/*")),
    Rule("POST", "/v1/webhook_endpoints", "webhook:Create", fixed("aimass:webhook/*")),
    Rule("GET", "/v1/webhook_endpoints", "webhook:Read", fixed("aimass:webhook/*")),
    Rule("GET", "/v1/webhook_endpoints/{webhook_id}", "webhook:Read", named("webhook", "webhook_id")),
    Rule("POST", "/v1/webhook_endpoints/{webhook_id}", "webhook:Update", named("webhook", "webhook_id")),
    Rule("DELETE", "/v1/webhook_endpoints/{webhook_id}", "webhook:Delete", named("webhook", "webhook_id")),
    Rule(
        "POST",
        "/v1/webhook_endpoints/{webhook_id}/rotate_secret",
        "webhook:Update",
        named("webhook", "webhook_id"),
    ),
    Rule("POST", "/v1/webhook_endpoints/{webhook_id}/test", "webhook:Update", named("webhook", "webhook_id")),
    Rule(
        "GET", "/v1/webhook_endpoints/{webhook_id}/deliveries", "webhook:Read", named("webhook", "webhook_id")
    ),
    Rule("DELETE", "/v1/keys/{key_id}", "key:Revoke", named("key", "key_id")),
    Rule("GET", "/v1/usage", "usage:Read", fixed("aimass:usage")),
    Rule("GET", "/metrics", "usage:Read", fixed("aimass:usage")),
    Rule("GET", "/v1/usage/series", "usage:Read", fixed("aimass:usage")),
    Rule("GET", "/v1/jobs", "job:List", fixed("aimass:project/*")),
    Rule("POST", "/v1/jobs", job_submit, in_project, also=TRAINING),
    Rule("POST", "/v1/jobs/code", "job:SubmitCode", fixed("aimass:project/default")),
    Rule("POST", "/v1/auto", "job:Submit", in_project, also=TRAINING),
    Rule("GET", "/v1/jobs/{job_id}", "job:Read", path("job", "job_id")),
    Rule("GET", "/v1/jobs/{job_id}/logs", "job:Read", path("job", "job_id")),
    Rule("GET", "/v1/jobs/{job_id}/predictions", "job:Read", path("job", "job_id")),
    Rule("POST", "/v1/jobs/{job_id}/cancel", "job:Cancel", path("job", "job_id")),
    Rule("POST", "/v1/jobs/{job_id}/pause", "job:Pause", path("job", "job_id")),
    Rule("POST", "/v1/jobs/{job_id}/resume", "job:Resume", path("job", "job_id")),
    Rule("POST", "/v1/jobs/{job_id}/retry", job_retry, path("job", "job_id"), also=TRAINING),
    Rule("POST", "/v1/uploads", "dataset:Import", importing_into, query=("project",)),
    Rule("GET", "/v1/uploads", "dataset:Import", importing_into, query=("project",)),
    Rule("DELETE", "/v1/uploads/{upload_id}", "dataset:Delete", _upload),
    Rule("POST", "/v1/files", "dataset:Import", importing_into, query=("project",)),
    Rule("GET", "/v1/files", "dataset:List", fixed("aimass:project/*")),
    Rule("GET", "/v1/files/{file_id}", _file_action, _file),
    Rule("GET", "/v1/files/{file_id}/content", _file_action, _file),
    Rule("DELETE", "/v1/files/{file_id}", "dataset:Delete", path("dataset", "file_id")),
    Rule(  # the store embeds its files and every search with the encoder its creator picks
        "POST",
        "/v1/vector_stores",
        "vector_store:Create",
        creating_store,
        also=(("model:Predict", encoder("embedding_model", DEFAULT_MODEL)),),
    ),
    Rule("GET", "/v1/vector_stores", "vector_store:List", fixed("aimass:project/*")),
    *(
        Rule(method, VECTOR_STORE + tail, action, path("vector_store", "vector_store_id"))
        for method, tail, action in (
            ("GET", "", "vector_store:Read"),
            ("POST", "", "vector_store:Update"),
            ("DELETE", "", "vector_store:Delete"),
            ("GET", "/files", "vector_store:Read"),
            ("GET", "/files/{file_id}", "vector_store:Read"),
            ("GET", "/files/{file_id}/content", "vector_store:Read"),
            ("POST", "/files/{file_id}", "vector_store:Update"),
            ("DELETE", "/files/{file_id}", "vector_store:Update"),
            ("POST", "/file_batches", "vector_store:Update"),
            ("GET", "/file_batches/{batch_id}", "vector_store:Read"),
            ("GET", "/file_batches/{batch_id}/files", "vector_store:Read"),
            ("POST", "/file_batches/{batch_id}/cancel", "vector_store:Update"),
        )
    ),
    Rule(
        "POST",
        VECTOR_STORE + "/files",
        "vector_store:Update",
        path("vector_store", "vector_store_id"),
        also=(("dataset:Read", body("dataset", "file_id")),),
    ),
    Rule(
        "POST",
        VECTOR_STORE + "/search",
        "vector_store:Search",
        path("vector_store", "vector_store_id"),
        management=False,
    ),
    Rule("POST", "/v1/fine_tuning/jobs", "job:Submit", in_project, also=(("model:Train", fine_tunes),)),
    Rule("GET", "/v1/fine_tuning/jobs", "job:List", fixed("aimass:project/*")),
    Rule("GET", "/v1/fine_tuning/jobs/{job_id}", "job:Read", path("job", "job_id")),
    Rule("GET", "/v1/fine_tuning/jobs/{job_id}/events", "job:Read", path("job", "job_id")),
    Rule("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints", "job:Read", path("job", "job_id")),
    Rule("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", "job:Cancel", path("job", "job_id")),
    Rule("POST", "/v1/fine_tuning/jobs/{job_id}/pause", "job:Pause", path("job", "job_id")),
    Rule("POST", "/v1/fine_tuning/jobs/{job_id}/resume", "job:Resume", path("job", "job_id")),
    Rule("POST", "/v1/batches", "job:Submit", in_project),
    Rule("GET", "/v1/batches", "job:List", fixed("aimass:project/*")),
    Rule("GET", "/v1/batches/{batch_id}", "job:Read", path("job", "batch_id")),
    Rule("POST", "/v1/batches/{batch_id}/cancel", "job:Cancel", path("job", "batch_id")),
    # importing from an upload reads it: its project's to decide, as using it in a job is
    Rule("POST", "/v1/datasets", "dataset:Import", importing_into, also=IMPORTS_FROM),
    Rule("GET", "/v1/datasets", "dataset:List", fixed("aimass:project/*")),
    Rule("GET", "/v1/datasets/{dataset_id}", "dataset:Read", path("dataset", "dataset_id")),
    Rule("DELETE", "/v1/datasets/{dataset_id}", "dataset:Delete", path("dataset", "dataset_id")),
    Rule("GET", "/v1/datasets/{dataset_id}/rejects", "dataset:Read", path("dataset", "dataset_id")),
    Rule("GET", "/v1/datasets/{dataset_id}/issues", "dataset:Read", path("dataset", "dataset_id")),
    Rule(
        "GET", "/v1/datasets/{dataset_id}/issues/files/{file}", "dataset:Read", path("dataset", "dataset_id")
    ),
    Rule(  # a new version of the dataset (or of the body's name), from the dataset's rows: read
        # first, so one the caller cannot see is a 404, not a 403 naming the project holding it
        "POST",
        "/v1/datasets/{dataset_id}/fix",
        "dataset:Read",
        path("dataset", "dataset_id"),
        also=(("dataset:Import", fixing_into),),
    ),
    Rule("GET", "/v1/versions", "model:List", fixed("aimass:project/*")),
    # both versions must be readable too: the route answers 404 for one that is not (as a list keeps
    # only what the caller may read); listed before {ref}, which would match "compare"
    Rule("GET", "/v1/versions/compare", "model:List", fixed("aimass:project/*")),
    Rule("GET", "/v1/versions/{ref}", "model:Read", path("model", "ref")),
    Rule("DELETE", "/v1/versions/{ref}", "model:Delete", path("model", "ref")),
    # the weights leave the server: not model:Read, which a predict-only key has
    Rule("GET", "/v1/versions/{ref}/export", "model:Export", path("model", "ref")),
    Rule("GET", "/v1/versions/{ref}/files/{file}", "model:Read", path("model", "ref")),
    # an alias moves what a stage serves (``production``): a deploy into that stage
    Rule("PUT", "/v1/versions/{ref}/aliases/{alias}", "model:Deploy", path("model", "ref")),
    Rule("DELETE", "/v1/versions/{ref}/aliases/{alias}", "model:Deploy", aliased),
    Rule("POST", "/v1/policies/simulate", "policy:Simulate", fixed("aimass:policy/*")),
    Rule("GET", "/v1/policies", "policy:Read", fixed("aimass:policy/*")),
    Rule("GET", "/v1/policies/{name}", "policy:Read", named("policy")),
    Rule("PUT", "/v1/policies/{name}", "policy:Write", named("policy")),
    Rule("DELETE", "/v1/policies/{name}", "policy:Write", named("policy")),
    # attaching changes what its target may do: the target must be the caller's to update too
    Rule("POST", "/v1/policies/{name}/attachments", "policy:Write", named("policy"), also=ATTACHING),
    Rule(
        "DELETE",
        "/v1/policies/{name}/attachments",
        "policy:Write",
        named("policy"),
        also=ATTACHING,
        query=("type", "target"),
    ),
    Rule("GET", "/v1/users", "user:Read", fixed("aimass:user/*")),
    Rule("POST", "/v1/users", "user:Create", new("user")),
    Rule("GET", "/v1/users/{name}", "user:Read", named("user")),
    Rule("GET", "/v1/groups", "group:Read", fixed("aimass:group/*")),
    Rule("POST", "/v1/groups", "group:Create", new("group")),
    Rule("POST", "/v1/groups/{name}/members", "group:Update", named("group")),
    Rule("GET", "/v1/projects", "project:Read", fixed("aimass:project/*")),
    Rule("POST", "/v1/projects", "project:Create", new("project")),
    Rule("GET", "/v1/projects/{name}", "project:Read", named("project")),
    # moving a resource changes two projects: the one it leaves must be the caller's to update too
    Rule(
        "POST",
        "/v1/projects/{name}/resources",
        "project:Update",
        named("project"),
        also=(("project:Update", leaving),),
    ),
    Rule("GET", "/v1/audit", "audit:Read", fixed("aimass:audit")),
    Rule("GET", "/v1/audit/{request_id}", "audit:Read", fixed("aimass:audit")),
)
READ = {"model": "model:Read", "service": "service:Read", "job": "job:Read", "dataset": "dataset:Read"}
READ["vector_store"] = "vector_store:Read"
READ["upload"] = "dataset:Import"  # an upload is seen (listed, used) by who may import into its project
BODY_KEY = "access_body"


OPENAI_GENERATION = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/tokenize", "/detokenize")


def _missing(kind: str, name: str, rule: Rule) -> NotFoundError:
    """What the route answers for a ``kind`` named ``name`` that does not exist: a resource the caller
    may not read is answered the same, word for word, so no 404 tells another project's names."""
    if kind == "service":
        return missing_service(name)
    if kind == "model" and rule.template.endswith(("/predict", "/explain")):
        return not_served(name)
    if kind == "model" and rule.template == "/v1/models/{model_id}":
        return model_not_found(name)
    if kind == "model" and rule.template in OPENAI_GENERATION:
        return model_not_served(name)
    if kind == "model":
        return registry.missing_model(name)
    return NotFoundError(f"No {kind.replace('_', ' ')} '{name}'.", hint="Ask for the names your key may see.")


def twin_scope(method: str, path: str, client, scheme, request_id: str, body: dict | None = None) -> dict:
    """The ASGI scope the route ``method path`` would have, as the rules read it: what the console
    and a job's extra decisions (a push is an export) are decided as."""
    return {
        "type": "http",
        "method": method,
        "path": unquote(path),  # as a request's scope holds it: decoded (a dataset named "q 1")
        "client": client,
        "scheme": scheme,
        "state": {"request_id": request_id, BODY_KEY: body or {}},
    }


DATASET_ID = re.compile(r"[0-9a-f]{6,64}")
SCOPE_HINT = (
    "`aimass keys create --scope manage` (or --scope jobs:code to run code: manage does not include it)"
    " makes a key that may do more, or bind the key to a user (`aimass keys bind`)."
)  # where a route's dependency leaves the parsed JSON body for the rule


class AccessGuard:
    """Decides a request by its route's rule; see the module docstring."""

    def __init__(
        self, authorizer: Authorizer | None = None, stage_s: float = 5.0, served: Callable | None = None
    ):
        self.authorizer = authorizer or Authorizer()
        self.served = served  # name -> the versions (NAME:V) that answer it now; None: no engine here
        self._rules = [(r.method, r.regex, r) for r in RULES]
        self._stages: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._stage_s = stage_s

    def rule(self, scope) -> tuple[Rule, dict] | None:
        method, path_ = scope.get("method"), scope.get("path", "")
        for m, regex, rule in self._rules:
            if m == method and (found := regex.match(path_)):
                return rule, found.groupdict()
        return None

    def authorize(self, caller, scope, found: tuple[Rule, dict], source: str = "rest") -> None:
        """Raise 403/404 unless the policies allow the rule's action and each of its ``also``;
        audit as the module says (``source``: ``rest`` or ``console``, which the audit row keeps)."""
        rule, params = found
        data, action, kind, name, resource, principal = self._request(caller, scope, found)
        self._authorize_one(caller, scope, found, source, (data, action, kind, name, resource, principal))
        for action, kind, name, resource, stage in self._also(found, data):
            request = (data, action, kind, name, resource, principal)
            self._authorize_one(caller, scope, found, source, request, stage)

    def _also(self, found: tuple[Rule, dict], data) -> list[tuple]:
        """The rule's further asks: (action, kind, name, resource ARN, stage or None) each."""
        rule, params = found
        out = []
        for also, target, *stage in rule.also:
            aimed = target(params, data)
            if aimed is None:
                continue
            kind, name = aimed
            action = also if isinstance(also, str) else also(params, data)
            if kind == ANSWERING:  # each version the name answers with, unless it is the name itself
                asked = self.arn("model", name)
                for ref in self.served(name) if self.served is not None and name else ():
                    if self.arn("model", ref) != asked:
                        out.append(
                            (action, "model", ref, self.arn("model", ref), stage[0] if stage else None)
                        )
                continue
            out.append(
                (action, kind, name, self.arn(kind, name) if kind else name, stage[0] if stage else None)
            )
        return out

    def _authorize_one(
        self, caller, scope, found: tuple[Rule, dict], source: str, request: tuple, stage: str | None = None
    ) -> None:
        rule, params = found
        data, action, kind, name, resource, principal = request
        context = self.context(scope, kind, name, data, stage=False)
        if "alias" in params:  # PUT/DELETE .../aliases/{alias}: the stage moved (or emptied)
            context["aimass:ModelStage"] = params["alias"]
        if stage is not None:  # the stage this ask moves (an auto job's deploy: production)
            context["aimass:ModelStage"] = stage
        decision, context = self._decide(principal, action, resource, context, kind, name)
        request_id = scope.get("state", {}).get("request_id", "")
        if rule.management or not decision.allowed:
            audit.record(principal.name, decision, request_id, source)
        if decision.allowed:
            return
        if kind in READ and not self.authorizer.decide(principal, READ[kind], resource, context).allowed:
            if kind == "upload":  # as for one that does not exist, naming no project
                raise uploads.missing_upload(name)
            if kind == "dataset":  # as the route answers a missing one, for what the caller typed
                if "file_id" in params:  # a file is data of its project
                    raise missing_file(params["file_id"])
                raise missing_dataset(params.get("dataset_id", name))
            raise _missing(kind, name, rule)
        message, hint = explain(decision, principal.name)
        if principal.user is None and caller.key_id not in ("admin", "anonymous"):
            hint = f"This key acts by its scopes {list(caller.scopes)}: {SCOPE_HINT} " + hint
        raise PermissionDenied(message, hint=f"{hint} Request id {request_id} is in the audit log.")

    def allows(self, caller, scope, found: tuple[Rule, dict]) -> bool:
        """Whether the policies would allow the request (no audit row, nothing raised): what a
        console page offers. The request itself is still decided by :meth:`authorize`."""
        data, action, kind, name, resource, principal = self._request(caller, scope, found)
        asks = [(action, kind, name, resource, found[1].get("alias")), *self._also(found, data)]
        for action, kind, name, resource, stage in asks:
            context = self.context(scope, kind, name, data, stage=False)
            if stage is not None:
                context["aimass:ModelStage"] = stage
            if not self._decide(principal, action, resource, context, kind, name)[0].allowed:
                return False
        return True

    def _decide(self, principal, action: str, resource: str, context: dict, kind: str, name: str):
        """The decision and the context it was made in. The version's stage is a registry lookup:
        only a decision that consulted a condition needs it (one that did not is the same in any
        context), so the predict path stays off the database. A version several aliases point at
        is decided at each of its stages: a Deny at any one wins (a second alias must not hide
        ``production``), else an Allow at any one allows."""
        decision = self.authorizer.decide(principal, action, resource, context)
        if not decision.conditional or kind != "model" or "aimass:ModelStage" in context:
            return decision, context
        tried = [{**context, "aimass:ModelStage": stage} for stage in self.stages(name)] or [context]
        found = [(self.authorizer.decide(principal, action, resource, c), c) for c in tried]
        denied = [hit for hit in found if hit[0].decision == EXPLICIT_DENY]
        allowed = [hit for hit in found if hit[0].allowed]
        return (denied or allowed or found)[0]

    def _request(self, caller, scope, found: tuple[Rule, dict]) -> tuple:
        """What a rule makes of a request: (body, action, kind, name, resource ARN, principal)."""
        rule, params = found
        data = scope.get("state", {}).get(BODY_KEY) or {}
        query = scope.get("query_string", b"").decode("latin-1")
        # blank values kept: the route reads ?project=&project=nlp as "" (default), so must the rule
        if rule.query and (asked := parse_qs(query, keep_blank_values=True)):
            data = {**data, **{k: v[-1] for k, v in asked.items() if k in rule.query}}
        action = rule.action(params, data) if callable(rule.action) else rule.action
        kind, name = rule.target(params, data)
        resource = self.arn(kind, name) if kind else name
        principal = self.authorizer.principal(caller.key_id, tuple(caller.scopes))
        return data, action, kind, name, resource, principal

    def arn(self, kind: str, name: str) -> str:
        """The resource's ARN in its project; a model named by alias is named by its version (a
        checkpoint of a version as the version), a dataset named by its id by its name (projects own
        datasets by name), an upload as its project's datasets (:func:`upload_arn`)."""
        if kind == "upload":  # not remembered: read from the upload's own record
            return upload_arn(name)
        if kind == "dataset":  # not remembered: what a prefix or name opens changes with imports
            name = dataset_name(name)
        if kind == "model":  # a checkpoint of a version is that version's
            name = registry.split_checkpoint(name)[0]
            base, _, version = name.partition(":")
            if version.isascii() and version.isdigit():  # reviews:01 opens reviews:1: decided as it
                name = f"{base}:{int(version)}"
        if kind == "model" and "@" in name:
            try:
                base, version = registry.parse_ref(name)
                name = f"{base}:{version}"
            except AimassError:  # no such alias: the route answers 404 itself
                pass
        project = self.authorizer.memo((kind, name), lambda: _project(kind, name))
        return directory.arn(kind, name, project)

    def visible(self, caller, kind: str, names) -> set[str]:
        """Which of ``names`` (models, services, datasets, jobs, vector stores, uploads by id) the
        caller may read: what list routes, the console's lists and a job's params
        (:func:`~aimass.serve.jobs_routes.job_guard`) show. Decided in the caller's request context
        (time, source address, transport), so a Deny conditioned on it hides a name here as it does
        from the name's own route."""
        principal = self.authorizer.principal(caller.key_id, tuple(caller.scopes))
        arns = self._arns(kind, names)
        context = self.context(getattr(caller, "where", None) or {}, kind, "", None, stage=False)
        allowed = self.authorizer.allowed_many(principal, READ[kind], set(arns.values()), context)
        if kind != "model":
            return {n for n, arn in arns.items() if arn in allowed}
        return {n for n, arn in arns.items() if self._staged(principal, n, arn, arn in allowed, context)}

    def _arns(self, kind: str, names) -> dict[str, str]:
        """Each of ``names`` (of ``kind``) with its ARN in its project: :meth:`visible`'s rows."""
        if kind == "upload":  # each upload's project is in its own record
            return {n: upload_arn(n) for n in names}
        if kind == "model":  # a name only a service has is the service's project's (model_project)
            owners = self.authorizer.memo(("owners", "model", "served"), directory.model_owners)
        else:
            owners = self.authorizer.memo(("owners", kind), lambda: directory.owners(kind))
        if kind == "service":  # an unassigned service is its model's project's (service_project)
            models = self.authorizer.memo(("owners", "model"), lambda: directory.owners("model"))
            owners = {**models, **owners}
        return {
            n: self.arn(kind, n)  # an alias or a dataset id: resolved one by one (rare in a list)
            if "@" in n or kind == "dataset" and DATASET_ID.fullmatch(n)
            else directory.arn(kind, n, owners.get(n.split(":")[0]))
            for n in names
        }

    def _staged(self, principal, name: str, arn: str, allowed: bool, context: dict) -> bool:
        """A model row's read, decided with the stage of the version it names when the decision
        consulted a condition (as the version's own route decides it): a Deny on
        ``aimass:ModelStage`` hides that stage's rows, row by row. A decision that consulted none is
        the same at every stage, so most rows stay off the registry."""
        if not self.authorizer.decide(principal, READ["model"], arn, context).conditional:
            return allowed
        return self._decide(principal, READ["model"], arn, context, "model", name)[0].allowed

    def context(self, scope, kind: str, name: str, data, stage: bool = True) -> dict:
        now = time.time()
        client = scope.get("client")
        out = {
            "aimass:CurrentTime": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "aimass:EpochTime": int(now),
            "aimass:SecureTransport": scope.get("scheme") == "https",
        }
        if client:
            out["aimass:SourceIp"] = client[0]
        if stage and kind == "model" and (found := self.stages(name)):
            out["aimass:ModelStage"] = found[0]
        if kind == "job" or isinstance(data, dict) and "kind" in data:
            out["aimass:JobKind"] = str(data.get("kind", "")) if isinstance(data, dict) else ""
            params = data.get("params") if isinstance(data, dict) else None
            if isinstance(params, dict) and "store" in params:  # a push or pull: which named store
                out["aimass:Store"] = str(params["store"])
        return out

    def stages(self, ref: str) -> tuple[str, ...]:
        """Every alias (``production``, ``staging``, ...) that points at the version ``ref`` names,
        sorted; the alias itself for ``NAME@ALIAS``."""
        hit = self._stages.get(ref)
        if hit and time.monotonic() - hit[0] < self._stage_s:
            return hit[1]
        stages: tuple[str, ...] = ()
        try:
            if "@" in ref:
                stages = (ref.partition("@")[2],)
            else:
                name, version = registry.parse_ref(registry.split_checkpoint(ref)[0])
                version = version or registry.get_version(name).version
                stages = tuple(sorted(a for a, v in registry.aliases(name).items() if v == version))
        except AimassError:  # an unknown model: no stage (the route answers 404 itself)
            stages = ()
        self._stages[ref] = (time.monotonic(), stages)
        return stages
