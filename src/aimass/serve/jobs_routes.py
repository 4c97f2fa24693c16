"""Jobs over REST (``/v1/jobs``, ``/v1/auto``): the same calls as ``aimass jobs ...``.

Submitting answers 202 with the queued job; a job runner (the server's own, see
:func:`start_runner`, or ``aimass jobs runner``) executes it. All routes need a ``manage`` key.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from fastapi import FastAPI, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from aimass import jobs
from aimass.errors import AimassError

log = logging.getLogger("aimass.serve")


class JobRequest(BaseModel):
    kind: str = Field(description="import, train, evaluate, compress, auto or custom")
    params: dict = Field(default_factory=dict, description="the kind's parameters, e.g. {'data': 'reviews'}")
    timeout_s: float | None = Field(None, gt=0, description="stop the job after this many seconds")


class AutoRequest(BaseModel):
    path: str = Field(description="a CSV/TSV/JSONL file, or a folder/archive of images, on the server")
    time_budget: str = "10m"
    name: str | None = None
    deploy: bool = False


def add_jobs(app: FastAPI, manage: list) -> None:
    @app.get("/v1/jobs", tags=["jobs"], dependencies=manage)
    async def list_jobs(status: str | None = None, limit: int = Query(100, ge=1, le=1000)):
        return {"jobs": await asyncio.to_thread(jobs.list_jobs, status, limit)}

    @app.post("/v1/jobs", tags=["jobs"], dependencies=manage, status_code=202)
    async def submit(body: JobRequest):
        """Check and queue a job; 422 with a stable code when a check fails."""
        return await asyncio.to_thread(jobs.submit, body.kind, body.params, timeout_s=body.timeout_s)

    @app.post("/v1/auto", tags=["jobs"], dependencies=manage, status_code=202)
    async def auto(body: AutoRequest):
        """Data to an evaluated (optionally deployed) model, as an ``auto`` job."""
        return await asyncio.to_thread(jobs.submit, "auto", body.model_dump(exclude_none=True))

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=manage)
    async def show(job_id: str):
        return await asyncio.to_thread(jobs.show, job_id)

    @app.get("/v1/jobs/{job_id}/logs", tags=["jobs"], dependencies=manage, response_class=PlainTextResponse)
    async def logs(job_id: str, tail: int | None = Query(None, ge=1, le=100_000)):
        return await asyncio.to_thread(jobs.logs, job_id, tail)

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], dependencies=manage)
    async def cancel(job_id: str):
        return await asyncio.to_thread(jobs.cancel, job_id)

    @app.post("/v1/jobs/{job_id}/retry", tags=["jobs"], dependencies=manage, status_code=202)
    async def retry(job_id: str):
        return await asyncio.to_thread(jobs.retry, job_id)


def start_runner(parallel: int = 1) -> threading.Event | None:
    """Run queued jobs in a background thread (workers are separate processes); returns the event
    that stops it, or None when another runner already serves this AIMASS_HOME."""
    runner = jobs.Runner(parallel=parallel)
    try:
        runner.acquire()
    except AimassError as exc:
        log.info("job runner not started here: %s", exc.message)
        return None
    runner.release()
    stop = threading.Event()

    def loop():
        try:
            runner.run(stop=stop)
        except AimassError as exc:  # another runner won the lock in between
            log.info("job runner stopped: %s", exc.message)

    threading.Thread(target=loop, name="aimass-jobs", daemon=True).start()
    return stop
