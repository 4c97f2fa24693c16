"""``aimass batch``: a JSONL of OpenAI requests answered offline, as a job (vLLM's ``run_batch``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from aimass.cli.jobs import labels
from aimass.cli.shell import JsonFlag, command, emit, out


def attach(app: typer.Typer) -> None:
    app.command("batch")(batch)


@command
def batch(
    path: Annotated[Path, typer.Argument(help="A JSONL of requests: custom_id, method, url, body a line.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where the answers go (default: PATH.out.jsonl).")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(help="/v1/chat/completions, /v1/completions or /v1/embeddings (default: the lines')."),
    ] = None,
    background: Annotated[
        bool, typer.Option(help="Only queue it (a runner answers it; see `aimass jobs`).")
    ] = False,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="A label of your own, KEY=VALUE.")] = None,
    as_json: JsonFlag = False,
):
    """Answer every request of PATH with the registered models it names, as the server's routes
    would, in a durable job (killed or paused, it goes on where it stopped); write the answers."""
    from aimass import jobs
    from aimass.serve import batches

    job = batches.submit_file(path, endpoint, labels(meta))
    if not background:
        job = jobs.run_foreground(job["id"], echo=None if as_json else _write)
    if job["status"] == "succeeded":
        target = output or path.with_name(path.name.removesuffix(".jsonl") + ".out.jsonl")
        lines = batches.answers(job["id"])
        target.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
        job = {**job, "output": str(target)}
    emit(job, as_json, _render)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _render(job: dict) -> None:
    counts = (job.get("result") or {}).get("request_counts")
    if counts:
        out.print(
            f"batch {job['id']}: {counts['completed']} answered, {counts['failed']} failed -> {job['output']}"
        )
    else:
        out.print(f"batch {job['id']} is {job['status']}: `aimass jobs show {job['id']}`")
