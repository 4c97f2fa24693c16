"""Custom training jobs: the developer's own script, run on a stored dataset.

``aimass jobs submit --code-dir DIR --entry train.py --data DATASET -- ARGS`` is checked before
anything runs; each failed check has a stable code and says how to fix it. The script runs in its
own process (its working directory is a copy-free view of ``DIR``) with:

- ``AIMASS_DATA_DIR``: the dataset's folder (``manifest.json`` and its split files),
- ``AIMASS_DATA_ID``: the dataset id,
- ``AIMASS_OUTPUT_DIR``: an empty folder for its outputs,
- ``AIMASS_JOB_ID``: the job id.

If the output folder then holds a model folder aimass can load (``model.json`` + safetensors,
as ``model.save(AIMASS_OUTPUT_DIR)`` writes it), it is registered as a new version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from aimass.errors import JobError, NotFoundError


def check(params: dict) -> dict:
    """Validate ``code_dir``, ``entry`` and ``data``; returns the params with absolute paths."""
    code_dir = Path(str(params.get("code_dir") or "")).expanduser()
    if not params.get("code_dir") or not code_dir.exists():
        raise JobError(
            f"The code dir {str(code_dir)!r} does not exist.",
            code="code_dir_not_found",
            hint="Pass --code-dir with the folder that holds your training script.",
        )
    if not code_dir.is_dir():
        raise JobError(
            f"The code dir {str(code_dir)!r} is a file, not a directory.",
            code="code_dir_not_directory",
            hint="Pass the folder that contains the script as --code-dir and the script's name as --entry.",
        )
    code_dir = code_dir.resolve()
    entry_name = str(params.get("entry") or "")
    if not entry_name.endswith(".py"):
        raise JobError(
            f"The entry {entry_name!r} is not a Python file.",
            code="entry_not_python",
            hint="Pass --entry with a .py file inside the code dir, e.g. --entry train.py.",
        )
    entry = (code_dir / entry_name).resolve()
    if not entry.is_relative_to(code_dir):
        raise JobError(
            f"The entry {entry_name!r} points outside the code dir {str(code_dir)!r}.",
            code="entry_outside_code_dir",
            hint="Give the entry as a path relative to --code-dir, without '..'.",
        )
    if not entry.is_file():
        raise JobError(
            f"There is no file {entry_name!r} in {str(code_dir)!r}.",
            code="entry_not_found",
            hint=f"Files there: {', '.join(sorted(p.name for p in code_dir.glob('*.py'))[:10]) or 'none'}.",
        )
    data = params.get("data")
    if not data:
        raise JobError(
            "The job needs a dataset.", code="data_missing", hint="Pass --data DATASET_ID_OR_NAME."
        )
    from aimass.data import load_dataset

    try:
        ds = load_dataset(str(data))
    except NotFoundError:
        raise JobError(
            f"No stored dataset {data!r}.",
            code="dataset_not_found",
            hint="Import it first (`aimass data import FILE`) and pass its id or name (`aimass data list`).",
        ) from None
    args = params.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise JobError(
            "The script's args must be a list of strings.",
            code="args_invalid",
            hint='e.g. ["--epochs", "3"].',
        )
    return {**params, "code_dir": str(code_dir), "entry": entry_name, "data": ds.id, "args": args}


def run(params: dict, ctx) -> dict:
    """Run the script to completion in its own process; register what it leaves in the output dir."""
    from aimass.data import load_dataset

    params = check(params)
    ds = load_dataset(params["data"])
    output = Path(ctx.run_dir) / "output"
    output.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "AIMASS_DATA_DIR": str(ds.path),
        "AIMASS_DATA_ID": ds.id,
        "AIMASS_OUTPUT_DIR": str(output),
        "AIMASS_JOB_ID": ctx.job_id,
        "PYTHONUNBUFFERED": "1",
    }
    ctx.progress(0.01, f"running {params['entry']}")
    command = [sys.executable, params["entry"], *params["args"]]
    done = subprocess.run(command, cwd=params["code_dir"], env=env, stdout=sys.stdout, stderr=sys.stderr)
    if done.returncode != 0:
        from aimass.jobs.runner import log_tail

        sys.stdout.flush()
        raise ScriptFailed(done.returncode, params["entry"], log_tail(ctx.job_id, 15))
    result = {"returncode": 0, "output_dir": str(output)}
    meta = output / "model.json"
    if meta.exists():
        result.update(_register(output, json.loads(meta.read_text()), params, ctx))
    return result


class ScriptFailed(Exception):
    """The script exited non-zero; ``tail`` holds the last lines it printed."""

    def __init__(self, returncode: int, entry: str, tail: str = ""):
        self.returncode, self.entry, self.tail = returncode, entry, tail
        super().__init__(f"{entry} exited with code {returncode}")


def _register(output: Path, meta: dict, params: dict, ctx) -> dict:
    from aimass import api
    from aimass.store import registry
    from aimass.tasks import get_task

    if (done := registry.version_of_run(ctx.run_id)) is not None:
        return {"model": done.ref}
    from aimass.tasks import available_tasks

    if meta.get("task") not in available_tasks():
        raise JobError(
            f"{output / 'model.json'} names task {meta.get('task')!r}, which aimass does not know.",
            code="output_not_a_model",
            hint=f"Save a {' or '.join(sorted(available_tasks()))} model with model.save(AIMASS_OUTPUT_DIR).",
        )
    model = get_task(meta["task"]).estimator.load(output)
    name = params.get("name") or Path(params["code_dir"]).name
    registry.start_run(
        model.task, {"custom": params["entry"], "args": params["args"]}, params["data"], run_id=ctx.run_id
    )
    record = api.register(model, registry.check_name(name), run_id=ctx.run_id)
    registry.finish_run(ctx.run_id, "succeeded")
    return {"model": record.ref}
