"""Custom training jobs: the developer's own script, uploaded into aimass, run on a stored dataset.

The code is uploaded first, as ModelArts runs training code from its own storage:
:func:`upload_code` takes a folder (packed here) or a .zip/.tar/.tar.gz archive, extracts it with
the safe extractor (:mod:`aimass.data.archive`: no links, no ``..``, no bombs) into
``AIMASS_HOME/code/<content digest>/`` and returns its id. A custom job then names that id
(``code``) and the script inside it (``entry``); it never names a folder of the host, so whoever
may submit jobs cannot run the server's own files (the standard library's ``timeit.py -s ...``
is a shell).

>>> from aimass import jobs
>>> code = jobs.upload_code("./src")["code"]                                # doctest: +SKIP
>>> jobs.submit("custom", {"code": code, "entry": "train.py", "data": "reviews"})  # doctest: +SKIP

``aimass jobs submit --code-dir DIR --entry train.py --data DATASET -- ARGS`` does both; over
REST it is ``POST /v1/jobs/code`` (multipart, one archive) then ``POST /v1/jobs``. Every check
runs before anything does, and each failed one has a stable code and says how to fix it. The
script runs in its own process, in the uploaded copy (its files are read-only: write to the
output folder), with:

- ``AIMASS_DATA_DIR``: the dataset's folder (``manifest.json`` and its split files),
- ``AIMASS_DATA_ID``: the dataset id,
- ``AIMASS_OUTPUT_DIR``: an empty folder for its outputs,
- ``AIMASS_JOB_ID``: the job id.

If the output folder then holds a model folder aimass can load (``model.json`` + safetensors,
as ``model.save(AIMASS_OUTPUT_DIR)`` writes it), it is registered as a new version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from aimass import paths, workflow
from aimass.data import load_dataset
from aimass.data.archive import extract_archive
from aimass.data.limits import MIB, limit, mebibytes
from aimass.errors import DataError, JobError, NotFoundError, TooLargeError
from aimass.jobs.explain import ScriptFailed
from aimass.jobs.logs import log_tail
from aimass.store import registry
from aimass.tasks import available_tasks, get_task

CODE_ID = re.compile(r"[0-9a-f]{32}")
MAX_UPLOAD_BYTES = 64 * MIB  # the archive (env AIMASS_MAX_CODE_UPLOAD_BYTES)
MAX_CODE_BYTES = 256 * MIB  # what it unpacks to (env AIMASS_MAX_CODE_BYTES)
MAX_CODE_FILES = 10_000  # (env AIMASS_MAX_CODE_FILES)
SKIPPED_FOLDERS = ("__pycache__",)  # and hidden ones (.git, .venv), as the extractor skips them
UPLOAD_HINT = (
    "Upload the code and pass its id as 'code': `aimass jobs submit --code-dir DIR ...` does both; "
    "over REST, POST a .zip or .tar.gz to /v1/jobs/code (multipart field 'file')."
)


# ------------------------------------------------------------ uploading
def upload_code(source: str | Path | BinaryIO) -> dict:
    """Store code for custom jobs; returns ``{"code": id, "files", "bytes", "scripts"}``.

    Args:
        source: A folder (its plain files are packed; hidden folders, ``__pycache__`` and links
            are left out), a .zip/.tar/.tar.gz file, or an open binary file holding one.

    The same content always gets the same id (a digest of its paths and bytes), so uploading
    it again is free.

    Raises:
        JobError: ``code_dir_not_found``, ``code_archive_refused`` (not an archive, or a member
            is unsafe: absolute path, ``..``, a link) or ``code_archive_empty``.
        TooLargeError: over :data:`MAX_UPLOAD_BYTES` packed, or :data:`MAX_CODE_BYTES` /
            :data:`MAX_CODE_FILES` unpacked.
    """
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=code_root()))
    try:
        archive = staging / "upload"
        if hasattr(source, "read"):
            _copy_bounded(source, archive)
        else:
            archive = _archive_of(Path(source).expanduser(), archive)
        return _store(archive, staging / "tree")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def code_root() -> Path:
    return paths.subdir("code")


def code_folder(code_id: str) -> Path:
    """The folder of uploaded code ``code_id``; JobError ``code_not_found`` if there is none."""
    if not code_id:
        raise JobError("The job names no uploaded code.", code="code_missing", hint=UPLOAD_HINT)
    folder = code_root() / code_id
    if not CODE_ID.fullmatch(code_id) or not folder.is_dir():
        raise JobError(f"No uploaded code {code_id!r}.", code="code_not_found", hint=UPLOAD_HINT)
    return folder


def _archive_of(path: Path, packed: Path) -> Path:
    if path.is_dir():
        _pack(path, packed)
        return packed
    if path.is_file():
        return path
    raise JobError(
        f"The code dir {str(path)!r} does not exist.",
        code="code_dir_not_found",
        hint="Pass --code-dir with the folder that holds your training script.",
    )


def _pack(folder: Path, archive: Path) -> None:
    """Pack the plain files under ``folder`` as .tar.gz (no links: the extractor refuses them)."""
    total, count = 0, 0
    home = paths.home().resolve()
    with tarfile.open(archive, "w:gz") as tar:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if _keep(Path(root, d)) and Path(root, d).resolve() != home)
            for path in (Path(root, name) for name in sorted(files)):
                if not _keep(path) or not path.is_file():
                    continue
                size = path.stat().st_size
                total, count = total + size, count + 1
                if total > _limit("bytes") or count > _limit("files"):
                    raise _too_large(f"The code dir {str(folder)!r} holds more than {_capacity()}.")
                info = tarfile.TarInfo(path.relative_to(folder).as_posix())
                info.size, info.mode, info.mtime = size, 0o644, int(path.stat().st_mtime)
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)


def _keep(path: Path) -> bool:
    return not (path.name.startswith(".") or path.name in SKIPPED_FOLDERS or path.is_symlink())


def _copy_bounded(source: BinaryIO, target: Path) -> None:
    most, written = _limit("upload"), 0
    with open(target, "wb") as out:
        while chunk := source.read(MIB):
            written += len(chunk)
            if written > most:
                raise _too_large(f"The code archive is over {mebibytes(most)}.")
            out.write(chunk)


def _store(archive: Path, tree: Path) -> dict:
    """Extract ``archive`` safely into ``tree``, then move it to ``code/<digest>``."""
    if archive.stat().st_size > _limit("upload"):
        raise _too_large(f"The code archive is {mebibytes(archive.stat().st_size)}, over the limit.")
    try:
        extracted = extract_archive(archive, tree, max_bytes=_limit("bytes"), max_members=_limit("files"))
    except TooLargeError as exc:
        raise _too_large(exc.message) from None
    except DataError as exc:  # its ``where`` is a staging path: not for the client
        raise JobError(
            exc.message,
            code="code_archive_refused",
            hint="Upload a .zip, .tar or .tar.gz of plain files and folders with relative paths "
            "(no links, no '..').",
        ) from None
    if not extracted.files:
        raise JobError(
            "The code archive holds no files.", code="code_archive_empty", hint="Pack your script's folder."
        )
    digest = hashlib.sha256()
    for name in sorted(extracted.files):
        digest.update(name.encode() + b"\0" + _sha256(tree / name) + b"\n")
        (tree / name).chmod(0o444)
    code_id = digest.hexdigest()[:32]
    final = code_root() / code_id
    try:
        tree.rename(final)
    except OSError:  # the same code is there already (uploaded before, or just now)
        if not final.is_dir():
            raise
    scripts = sorted(n for n in extracted.files if n.endswith(".py"))
    return {
        "code": code_id,
        "files": len(extracted.files),
        "bytes": extracted.bytes_written,
        "scripts": scripts[:20],
    }


def _sha256(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def upload_limit() -> int:
    """Most bytes a code archive may have (``AIMASS_MAX_CODE_UPLOAD_BYTES``, default 64 MiB)."""
    return _limit("upload")


def _limit(which: str) -> int:
    env, default = {
        "upload": ("AIMASS_MAX_CODE_UPLOAD_BYTES", MAX_UPLOAD_BYTES),
        "bytes": ("AIMASS_MAX_CODE_BYTES", MAX_CODE_BYTES),
        "files": ("AIMASS_MAX_CODE_FILES", MAX_CODE_FILES),
    }[which]
    return int(limit(env, default, None))


def _capacity() -> str:
    return f"{mebibytes(_limit('bytes'))} or {_limit('files'):,} files"


def _too_large(message: str) -> TooLargeError:
    return TooLargeError(
        message,
        hint=f"Code may be up to {mebibytes(_limit('upload'))} packed and {_capacity()} unpacked. "
        "Keep data out of it: import it with `aimass data import` and read AIMASS_DATA_DIR.",
    )


# ------------------------------------------------------------- checking
def check(params: dict) -> dict:
    """Validate ``code``, ``entry``, ``data`` and ``args``; returns the params as stored."""
    if "code_dir" in params:
        raise JobError(
            "Custom jobs run uploaded code; a folder on the server ('code_dir') is not accepted.",
            code="code_dir_not_accepted",
            hint=UPLOAD_HINT,
        )
    code_id = str(params.get("code") or "")
    folder = code_folder(code_id)
    entry_name = str(params.get("entry") or "")
    if not entry_name.endswith(".py"):
        raise JobError(
            f"The entry {entry_name!r} is not a Python file.",
            code="entry_not_python",
            hint="Pass --entry with a .py file inside the code, e.g. --entry train.py.",
        )
    entry = (folder / entry_name).resolve()
    if not entry.is_relative_to(folder.resolve()):
        raise JobError(
            f"The entry {entry_name!r} points outside the uploaded code.",
            code="entry_outside_code_dir",
            hint="Give the entry as a path relative to the code's top folder, without '..'.",
        )
    if not entry.is_file():
        scripts = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py"))  # uploaded copy
        raise JobError(
            f"There is no file {entry_name!r} in uploaded code {code_id}.",
            code="entry_not_found",
            hint=f"Python files in it: {', '.join(scripts[:10]) or 'none'}.",
        )
    ds_id = _dataset_id(params.get("data"))
    args = params.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise JobError(
            "The script's args must be a list of strings.",
            code="args_invalid",
            hint='e.g. ["--epochs", "3"].',
        )
    return {**params, "code": code_id, "entry": entry_name, "data": ds_id, "args": args}


def _dataset_id(data) -> str:
    if not data:
        raise JobError(
            "The job needs a dataset.", code="data_missing", hint="Pass --data DATASET_ID_OR_NAME."
        )
    try:
        return load_dataset(str(data)).id
    except NotFoundError:
        raise JobError(
            f"No stored dataset {data!r}.",
            code="dataset_not_found",
            hint="Import it first (`aimass data import FILE`) and pass its id or name (`aimass data list`).",
        ) from None


# -------------------------------------------------------------- running
def run(params: dict, ctx) -> dict:
    """Run the script to completion in its own process; register what it leaves in the output dir."""
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
        "PYTHONDONTWRITEBYTECODE": "1",  # the uploaded copy stays as uploaded
    }
    ctx.progress(0.01, f"running {params['entry']}")
    command = [sys.executable, params["entry"], *params["args"]]
    folder = code_folder(params["code"])
    done = subprocess.run(command, cwd=folder, env=env, stdout=sys.stdout, stderr=sys.stderr)
    if done.returncode != 0:
        sys.stdout.flush()
        raise ScriptFailed(done.returncode, params["entry"], log_tail(ctx.job_id, 15))
    result = {"returncode": 0, "output_dir": str(output)}
    meta = output / "model.json"
    if meta.exists():
        result.update(_register(output, json.loads(meta.read_text()), params, ctx))
    return result


def _register(output: Path, meta: dict, params: dict, ctx) -> dict:
    if (done := registry.version_of_run(ctx.run_id)) is not None:
        return {"model": done.ref}
    if meta.get("task") not in available_tasks():
        raise JobError(
            f"{output / 'model.json'} names task {meta.get('task')!r}, which aimass does not know.",
            code="output_not_a_model",
            hint=f"Save a {' or '.join(sorted(available_tasks()))} model with model.save(AIMASS_OUTPUT_DIR).",
        )
    model = get_task(meta["task"]).estimator.load(output)
    name = params.get("name") or Path(params["entry"]).stem
    settings = {"custom": params["entry"], "code": params["code"], "args": params["args"]}
    registry.start_run(model.task, settings, params["data"], run_id=ctx.run_id)
    record = workflow.register(model, registry.check_name(name), run_id=ctx.run_id)
    registry.finish_run(ctx.run_id, "succeeded")
    return {"model": record.ref}
