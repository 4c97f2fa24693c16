"""Serving the chosen version on 127.0.0.1, and the run's report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from aimass import paths
from aimass.autolearn.generation import chat_curl, sample_chat
from aimass.autolearn.run import _Run
from aimass.errors import AimassError, Unavailable
from aimass.store import registry
from aimass.store.claims import claim
from aimass.tasks import get_task

# what a run's report shows of the test evaluation: a classifier's (a multi-label one's too), then a
# language model's
METRICS = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "precision",  # entities
    "recall",
    "threshold",
    "n",
    "loss",
    "perplexity",
    "perplexity_base",
    "rouge_l",
    "rouge_l_base",
    "exact_match",
)


# ==================================================================== deploy
def _deploy(run: _Run, name: str, ref: str, tuner, ds) -> dict:
    """Point ``production`` at ``ref``, serve it on 127.0.0.1 (reusing a running server) and ask it once.

    The server serves ``name@production``, so the alias moves first; when serving fails it goes back
    to the version it named before (or is removed, if it named none), so the registry never names a
    version no server answered with."""
    from aimass import client  # heavy: httpx pulls in its CLI (rich, click); aimass.api imports this

    url, info = client.server_url(), {"alias": f"{name}@production", "ref": ref}
    with run.phase("deploy", 0.95, "deploying on 127.0.0.1"):
        before = registry.aliases(name).get("production")
        registry.set_alias(ref, "production")
        try:
            claim("service", name)  # a job deploys into its project's service or a new one
            started = None
            if _live(url):  # a running server, ready or still loading its models: never a second one
                _wait_ready(url)
                client.call("POST", "/v1/services", json={"model": f"{name}@production"}, server=url)
            else:
                started = _start_server(url)
            answer = _ask(client, url, name, tuner, ds)
        except BaseException as exc:
            kept = _restore(name, before)
            if not isinstance(exc, AimassError):
                raise
            # the model is registered: report, do not lose the run
            why = f"failed: {exc.message} ({exc.hint or 'see logs/server.log'}); {kept}"
            run.choose("deployment", None, why)
            return {**info, "server": url, "error": exc.to_dict()}
    run.choose("deployment", f"{url} ({info['alias']})", "production points at the served version")
    return {**info, "server": url, "started_pid": started, "prediction": answer}


def _restore(name: str, before: int | None) -> str:
    """Point ``production`` back at version ``before`` after a failed deployment; what it names now."""
    if before is None:
        registry.remove_alias(name, "production")
        return f"{name}@production was removed (it named no version before)"
    registry.set_alias(f"{name}:{before}", "production", force=True)  # it was production already
    return f"{name}@production still names {name}:{before}"


def _ready(url: str) -> bool:
    import httpx  # heavy: see _deploy

    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _live(url: str) -> bool:
    """Whether an aimass server answers at ``url`` at all (``/livez``: also while it loads its models)."""
    import httpx  # heavy: see _deploy

    try:
        return httpx.get(f"{url}/livez", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_ready(url: str, wait_s: float = 180.0) -> None:
    """Wait for a live server still loading the versions it restores (``/readyz`` 503 ``loading``)."""
    deadline = time.monotonic() + wait_s
    while not _ready(url):
        if time.monotonic() > deadline:
            raise Unavailable(
                f"The server at {url} answers but did not become ready within {wait_s:.0f}s.",
                hint=f"See {url}/readyz and logs/server.log.",
            )
        time.sleep(0.5)


def _start_server(url: str, wait_s: float = 180.0) -> int:
    """``aimass serve`` in the background on 127.0.0.1 (never another interface); its pid."""
    where = urlparse(url)
    if where.hostname not in ("127.0.0.1", "localhost"):
        raise Unavailable(
            f"No aimass server answers at {url}.", hint="Start it there, or unset AIMASS_SERVER."
        )
    port = str(where.port or 8000)
    with open(paths.subdir("logs") / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aimass", "serve", "--host", "127.0.0.1", "--port", port],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(
                f"The server exited early (code {proc.returncode}).",
                hint=f"See {paths.home() / 'logs' / 'server.log'}.",
            )
        if _ready(url):
            _note_pid(proc.pid)
            return proc.pid
        time.sleep(0.5)
    proc.terminate()  # never ready: not left running unrecorded
    raise Unavailable(f"The server did not become ready within {wait_s:.0f}s.", hint="See logs/server.log.")


def _note_pid(pid: int) -> None:
    """Write ``server.pid`` (what ``make stop`` stops) for a server that answered, unless it names a
    process still alive: a server started by hand, or by an earlier run, must stay stoppable."""
    path = paths.home() / "server.pid"
    if not _alive(path):
        path.write_text(str(pid))


def _alive(pid_file: Path) -> bool:
    """Whether ``pid_file`` names a live process."""
    try:
        pid = int(pid_file.read_text().strip())
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, ValueError):  # no file, not a number, or the process is gone
        return False
    return True


def _chats(tuner) -> bool:
    """Whether the task's models are asked through the OpenAI chat route (language models)."""
    return get_task(tuner.task).data_kind == "chat"


def _ask(client, url: str, name: str, tuner, ds) -> str:
    """The served model's answer to one real held-out input: its label, or a language model's reply
    to a held-out conversation over the OpenAI chat route."""
    if _chats(tuner):
        body = sample_chat(ds, name, _answer_tokens(name))
        return client.call("POST", "/v1/chat/completions", json=body, server=url)["choices"][0]["message"][
            "content"
        ]
    answer = client.call("POST", f"/v1/models/{name}/predict", json=_sample(tuner, ds), server=url)
    first = answer["predictions"][0]
    return first["label"] if "label" in first else ", ".join(first["labels"])  # multi-label: every label


def _answer_tokens(name: str) -> int:
    """The ``max_new_tokens`` the version was planned with (what its evaluation generated)."""
    record = registry.get_version(f"{name}@production")
    return int(
        json.loads((registry.open_folder(record) / "model.json").read_text())["params"]["max_new_tokens"]
    )


def _sample(tuner, ds) -> dict:
    """One real held-out input as a request body (as the task sends one: ``Task.request_item``)."""
    return {"inputs": [get_task(tuner.task).request_item(ds.inputs("test")[0])]}


def _endpoint(url: str, name: str, tuner) -> str:
    return f"{url}/v1/chat/completions" if _chats(tuner) else f"{url}/v1/models/{name}/predict"


def _curl(url: str, name: str, tuner, ds) -> str:
    if _chats(tuner):
        return chat_curl(url, sample_chat(ds, name, 64))
    body = '{"inputs": [' + get_task(tuner.task).curl_item(ds.inputs("test")[0]) + "]}"
    return (
        f"curl -s {url}/v1/models/{name}/predict -H 'Content-Type: application/json' "
        f"-H \"Authorization: Bearer $AIMASS_API_KEY\" -d '{body}'"
    )


# ==================================================================== report
def _report(run: _Run, task, ds, record, report, compression, chosen, served, tuner) -> dict:
    from aimass import client  # heavy: see _deploy

    summary = ds.summary()
    url = client.server_url()
    out = {
        "task": task,
        "dataset": {
            "id": ds.id,
            "name": ds.name,
            "rows": summary["rows"],
            "rejects": summary["rejects"],
            "splits": summary["splits"],
        },
        "choices": run.choices,
        "search": run.search,
        "metrics": {k: report[k] for k in METRICS if k in report},
        "portfolio": report.get("portfolio"),  # the candidates the final fit compared, and its choice
        "model": record.ref,
        "chosen": chosen,
        "compression": compression,
        "deployed": served,
        "endpoint": _endpoint(url, record.name, tuner),
        "curl": _curl(url, record.name, tuner, ds),
        "budget_s": run.total,
        "wall_s": round(run.elapsed(), 1),
        "timings": run.timings,
    }
    (Path(record.path) / "auto_report.json").write_text(json.dumps(out, indent=2, default=str))
    run.tell(1.0, f"done: {record.ref} in {out['wall_s']:.0f}s")
    return out
