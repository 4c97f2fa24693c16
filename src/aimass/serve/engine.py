"""The serving engine: services, the versions behind them, and traffic between those versions.

A *service* is a name clients call (``/v1/models/{service}/predict``). Behind it run one or
more *deployments* (a loaded, warmed model version with its own batcher), each with a
traffic weight. Deploying a version loads and warms it off the request path; only when it
has answered a sample request does traffic move to it, and the version it replaces
finishes what it has queued before it is released. A version that fails to load or warm
never takes traffic, and its failure (cause and fix) is in the service's events.

The engine never looks at the task name: it calls the task's handler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from aimass import paths, workflow
from aimass.access import directory
from aimass.compressors import get_compressor
from aimass.data.limits import limit
from aimass.errors import AimassError, ConfigError, InUseError, NotFoundError, Unavailable
from aimass.serve import events
from aimass.serve.batching import Batcher, BatchSettings
from aimass.serve.metrics import Metrics
from aimass.serve.settings import check_settings
from aimass.serve.worker import Worker
from aimass.store import registry
from aimass.tasks import get_task

log = logging.getLogger("aimass.serve")
CLOSE_S = 1.0  # of a shutdown's grace, the most that closing the versions is given


class DeployFailed(ConfigError):
    """A version could not be loaded or warmed; the service keeps its old version."""

    code = "deploy_failed"


def missing_service(name: str) -> NotFoundError:
    """A service that is not there, or that the caller may not read: one answer for both, so a key
    cannot tell another project's names (no list of the others either)."""
    return NotFoundError(
        f"No service '{name}'.", hint="`aimass services list` (GET /v1/services) lists those you may see."
    )


def not_served(name: str) -> NotFoundError:
    """What a prediction for a model nothing serves here (or the caller may not read) answers."""
    return NotFoundError(
        f"Model '{name}' is not served here.",  # no list: it would name others' services
        hint="GET /v1/models lists them; deploy one with `aimass deploy NAME[:VERSION]`.",
    )


@dataclass
class Deployment:
    """One loaded, warmed model version and its batcher."""

    record: object
    spec: type
    handler: object
    batcher: Batcher
    weight: int = 100
    load_s: float = 0.0
    warm_s: float = 0.0
    backend: str = "torch"
    export: dict | None = None  # the ONNX export's check against torch
    worker: Worker | None = None  # the child process running forward passes, if any
    overrides: dict = field(default_factory=dict)  # the settings the operator chose for it

    def close(self, timeout: float = 5.0) -> None:
        """Release the version within about ``timeout`` seconds (blocks: call it off the event
        loop). The model thread stops first, so the worker is never asked for a batch after it
        closes (nor restarted); a pass still running then ends with the worker."""
        began = time.monotonic()
        ended = self.batcher.stop(timeout)
        if self.worker is not None:
            self.worker.close(max(0.0, timeout - (time.monotonic() - began)) if ended else 0.0)

    @property
    def ref(self) -> str:
        return self.record.ref

    def info(self) -> dict:
        r, m = self.record, self.handler.model
        return {
            "ref": r.ref,
            "version": r.version,
            "weight": self.weight,
            "task": r.task,
            "backbone": r.backbone,
            "metrics": {k: r.metrics.get(k) for k in ("accuracy", "macro_f1", "micro_f1")},
            "labels": list(getattr(m, "classes_", None) or getattr(m, "labels_", None) or []),
            "backend": self.backend,
            "worker": None
            if self.worker is None
            else {"pid": self.worker.proc.pid, "restarts": self.worker.restarts},
            "onnx_check": {k: v for k, v in (self.export or {}).items() if "diff" in k or "same" in k},
            "load_s": round(self.load_s, 3),
            "warm_s": round(self.warm_s, 3),
            "queue": self.batcher.pending,
            "settings": self.batcher.settings.__dict__,
        }


def _check_same_task(service: Service, record) -> None:
    """A canary shares its service's requests: a version of another task (an image model beside a
    text one) would answer its share with 422s. 422 before anything loads."""
    other = next((d for d in service.deployments if d.record.task != record.task), None)
    if other is not None:
        raise ConfigError(
            f"Service '{service.name}' serves {other.record.task} ({other.ref}); {record.ref} is "
            f"{record.task}: a share of the service's traffic would be requests it cannot read.",
            hint=f"Deploy it as a service of its own (service: '{record.name}'), or replace the service's "
            "versions by deploying it without a weight.",
        )


@dataclass
class Service:
    name: str
    deployments: list[Deployment] = field(default_factory=list)
    state: str = "loading"
    failure: AimassError | None = None  # why the last deploy failed (cause and fix)
    # serving.json's entries ({"ref", "weight", "settings"}) of versions that failed to restore:
    # written back as they were until the operator deploys that version, replaces the service's
    # versions or undeploys the service (see Engine._saved)
    unrestored: list[dict] = field(default_factory=list)

    def pick(self, ref: str | None = None) -> Deployment:
        """A deployment by weighted random choice, or the one serving ``ref`` (NAME:VERSION)."""
        live = [d for d in self.deployments if d.weight > 0 or d.ref == ref]
        if ref is not None:
            for d in live:
                if d.ref == ref:
                    return d
            served = ", ".join(d.ref for d in self.deployments) or "none"
            raise NotFoundError(
                f"Version '{ref}' is not deployed in service '{self.name}' (deployed: {served}).",
                hint=f"Call /v1/models/{self.name}/predict (its traffic split picks the version), or deploy "
                f"the version into it: POST /v1/services with its NAME:VERSION and service '{self.name}'.",
            )
        if not live:
            raise Unavailable(f"Service '{self.name}' has no version taking traffic.", hint="Deploy one.")
        if len(live) == 1:
            return live[0]
        return random.choices(live, weights=[d.weight for d in live])[0]

    def info(self) -> dict:
        out = {"name": self.name, "state": self.state, "versions": [d.info() for d in self.deployments]}
        if self.failure is not None:
            out["last_failure"] = {"message": self.failure.message, "hint": self.failure.hint}
        return out


class Engine:
    """Services by name; every change is serialised and written to the service's events.

    An ``offline`` engine (a batch job's, :mod:`aimass.serve.batches`) serves only its own
    process: it writes no service events and leaves ``serving.json`` as the server wrote it."""

    def __init__(
        self, settings: BatchSettings | None = None, metrics: Metrics | None = None, *, offline: bool = False
    ):
        self.offline = offline
        self.settings = settings or BatchSettings()
        self.metrics = metrics or Metrics()
        self.services: dict[str, Service] = {}
        self._change = asyncio.Lock()
        self._draining: set[asyncio.Task] = set()
        self.deadline: float | None = None  # time.monotonic() by which a shutdown ends (stop_by)
        self.loading = False  # the server's start-up versions are still loading

    def stop_by(self, deadline: float) -> None:
        """A shutdown has begun (SIGTERM) and must end by ``deadline`` (``time.monotonic()``):
        a request still waiting when its server cancels it is answered 503, not cut off."""
        self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)

    def grace_left(self, grace: float) -> float:
        """Seconds left of the shutdown begun by :meth:`stop_by`; ``grace`` when none was."""
        return grace if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _record(self, *args, **kwargs) -> None:
        if not self.offline:
            events.record(*args, **kwargs)

    # ------------------------------------------------------------- lookup
    def route(self, name: str) -> Deployment:
        """The deployment that answers ``name`` (a service, or SERVICE:VERSION)."""
        service_name, colon, version = name.partition(":")
        service = self.services.get(service_name) if version or not colon else None  # "reviews:" names none
        if service is None or service.state != "ready":
            if service is not None and service.state == "failed" and service.failure is not None:
                raise Unavailable(
                    f"Service '{service_name}' has no version serving: {service.failure.message}",
                    hint=f"{service.failure.hint} Then deploy again (`aimass deploy NAME[:VERSION]`); "
                    f"`aimass services events {service_name}` has the details.",
                )
            if service is not None:
                raise Unavailable(f"Service '{service_name}' is {service.state}.", hint="Retry shortly.")
            if self.loading:  # it may be one still to load
                raise Unavailable(
                    "The server is still loading the models it serves.",
                    hint="Retry shortly: /readyz answers 200 once they are loaded.",
                )
            raise not_served(name)
        return service.pick(name if version else None)

    def answering(self, name: str) -> list[str]:
        """The versions (NAME:VERSION) that may answer ``name`` now: a service's that take traffic,
        or the one ``SERVICE:VERSION`` names; none for a name not served (the route answers 404)."""
        service_name, colon, version = name.partition(":")
        service = self.services.get(service_name)
        if service is None:
            return []
        return [d.ref for d in service.deployments if (d.ref == name if colon else d.weight > 0)]

    def info(self) -> list[dict]:
        return [s.info() for s in self.services.values()]

    def check_room(self, model: str, service: str | None) -> None:
        """409 when deploying ``model`` into ``service`` (default: the model's name) would load one
        more version than its project may hold loaded (``AIMASS_MAX_PROJECT_MODELS``, 16): each
        loaded version holds its weights in this server's memory, which every project shares.
        Moving traffic, or deploying a version the service already holds, loads nothing."""
        ref = registry.get_version(model).ref
        name = service or ref.split(":")[0]
        project = directory.service_project(name)
        loaded = [
            (s.name, d.ref)
            for s in list(self.services.values())
            for d in list(s.deployments)
            if directory.service_project(s.name) == project
        ]
        most = int(limit("AIMASS_MAX_PROJECT_MODELS", 16, None))
        if (name, ref) not in loaded and len(loaded) >= most:
            raise InUseError(
                f"Project {project!r} has {len(loaded)} versions loaded in this server, the most it "
                "may hold.",
                hint="Undeploy a service or a canary you no longer need (DELETE /v1/services/{name}); "
                "the operator sets AIMASS_MAX_PROJECT_MODELS.",
            )

    def service(self, name: str) -> Service:
        if name not in self.services:
            raise self._unknown(name)
        return self.services[name]

    def _unknown(self, name: str) -> NotFoundError:
        return missing_service(name)

    def events(self, name: str, limit: int) -> list[dict]:
        """The events of service ``name``: one deployed now or in the past (404 for a name never used)."""
        found = events.events(name, limit)
        if not found and name not in self.services:
            raise self._unknown(name)
        return found

    # ------------------------------------------------------------- deploy
    async def deploy(
        self, ref: str, *, service: str | None = None, weight: int | None = None, settings: dict | None = None
    ) -> dict:
        """Load and warm ``ref``, then move traffic to it (all of it, or ``weight`` percent).
        ``settings`` (see :class:`~aimass.serve.settings.ServingSettings`) override the server's
        for this version; given for a version already deployed, they apply to it at once."""
        if weight is not None and not _is_weight(weight):
            raise ConfigError(f"Traffic weight must be a whole number 0-100; got {weight!r}.", hint="e.g. 10")
        overrides = check_settings(settings)
        batch = self._settings(overrides)
        record = await asyncio.to_thread(registry.get_version, ref)
        name = registry.check_name(service or record.name)
        async with self._change:
            out = await self._deploy(record, name, weight, overrides, batch)
            self._persist()
            return {**out, "on_restart": self.on_restart(name)}

    async def _deploy(self, record, name: str, weight: int | None, overrides: dict, batch) -> dict:
        current = self.services.get(name)
        if current is not None and weight is not None:
            _check_same_task(current, record)
        if current is None:
            current = self.services[name] = Service(name)
            self._record(name, "created", f"service {name} created", ref=record.ref)
        existing = next((d for d in current.deployments if d.ref == record.ref), None)
        if existing is not None and overrides and overrides != existing.overrides:
            existing = await self._apply(current, existing, overrides, batch)
        if existing is not None:  # already loaded: only the traffic changes
            others = [d for d in current.deployments if d is not existing]
            if weight is None or not others:  # the only version takes all traffic, whatever asked
                return await self._set_only(current, record.ref)
            existing.weight = weight
            _scale([d for d in current.deployments if d is not existing], 100 - weight)
            self._record(name, "traffic", self._describe(current), ref=record.ref)
            return current.info()
        self._record(name, "loading", f"loading {record.ref} from {record.path}", ref=record.ref)
        try:
            deployment = await self._load(record, batch, name)
        except Exception as exc:
            self._failed(current, record.ref, exc)
            failure = DeployFailed(f"Deploying {record.ref} failed: {_cause(exc)}", hint=_fix(exc))
            current.failure = failure
            if not current.deployments:
                current.state = "failed"
            raise failure from None
        deployment.overrides = overrides
        current.failure = None
        current.unrestored = [v for v in current.unrestored if not _names(v, record.ref)]
        self._record(
            name,
            "warmed",
            f"{record.ref} loaded in {deployment.load_s:.2f}s ({_backend_note(deployment)}), "
            f"warmed in {deployment.warm_s * 1000:.0f} ms",
            ref=record.ref,
        )
        self._switch(current, deployment, weight)
        current.state = "ready"
        self._record(name, "ready", f"{name} serving {self._describe(current)}", ref=record.ref)
        return current.info()

    def _settings(self, overrides: dict) -> BatchSettings:
        if not overrides:
            return self.settings
        return BatchSettings(**{**self.settings.__dict__, **overrides})

    async def _apply(self, service: Service, existing: Deployment, overrides: dict, batch) -> Deployment:
        """New settings for a deployed version: batching ones at once; a new backend or worker
        mode by loading the version again beside the old one, which then finishes its queue."""
        now = existing.batcher.settings
        reload = (batch.backend, batch.workers) != (now.backend, now.workers)
        if not reload:
            existing.batcher.settings = batch
            existing.overrides = overrides
            self._record(service.name, "settings", f"{existing.ref}: {overrides}", ref=existing.ref)
            return existing
        self._record(service.name, "loading", f"reloading {existing.ref} with {overrides}", ref=existing.ref)
        try:
            fresh = await self._load(existing.record, batch, service.name)
        except Exception as exc:
            self._failed(service, existing.ref, exc)
            raise DeployFailed(
                f"Applying {overrides} to {existing.ref} failed: {_cause(exc).rstrip('.')}; it keeps its "
                "old settings.",
                hint=_fix(exc),
            ) from None
        fresh.overrides, fresh.weight = overrides, existing.weight
        service.deployments = [fresh if d is existing else d for d in service.deployments]
        self._retire(service.name, existing)
        self._record(service.name, "settings", f"{existing.ref} reloaded with {overrides}", ref=existing.ref)
        return fresh

    async def _load(self, record, settings: BatchSettings, service: str) -> Deployment:
        spec = get_task(record.task)
        began = time.perf_counter()
        backend = _backend(spec, settings.backend, record)
        export = await asyncio.to_thread(exported, record, spec) if backend.startswith("onnx") else None
        handler = spec.handler(record.path)
        await asyncio.to_thread(handler.setup, "cpu", backend)
        worker = None
        if backend.startswith("onnx") and settings.workers == "process" and spec.runtime:
            worker = Worker(
                spec.runtime,
                Path(record.path) / "onnx",
                {"int8": backend == "onnx-int8"},
                on_event=lambda kind, message: self._record(service, kind, message, ref=record.ref),
            )
        run = handler.predict if worker is None else worker.run
        try:
            if worker is not None:
                await asyncio.to_thread(worker.start)
            loaded = time.perf_counter()
            await asyncio.to_thread(_warm, spec, handler, run)
        except BaseException:  # it did not warm, or a shutdown cancelled the load: no stray worker
            if worker is not None:
                await asyncio.to_thread(worker.close, self.grace_left(5.0))
            raise
        warm = time.perf_counter() - loaded
        model = service

        def observe(n: int, seconds: float) -> None:
            self.metrics.batch_size.labels(model).observe(n)
            self.metrics.batch_seconds.labels(model).observe(seconds)

        batcher = Batcher(run, settings, observe)
        batcher.start()
        deployment = Deployment(record, spec, handler, batcher, load_s=loaded - began, warm_s=warm)
        deployment.backend, deployment.export, deployment.worker = backend, export, worker
        return deployment

    def _switch(self, service: Service, new: Deployment, weight: int | None) -> None:
        """Move traffic to ``new``: all of it (replacing the others), or ``weight`` percent (canary)."""
        old = [d for d in service.deployments if d.ref != new.ref]
        if weight is None or not old:
            new.weight = 100
            service.deployments = [new]
            service.unrestored = []  # it replaces every version, those saved but not restored too
            for d in old:
                self._retire(service.name, d)
            if old:
                was = ", ".join(d.ref for d in old)
                self._record(service.name, "swapped", f"{was} -> {new.ref}", ref=new.ref)
            return
        new.weight = weight
        _scale(old, 100 - weight)
        service.deployments = [*old, new]
        self._record(service.name, "traffic", self._describe(service), ref=new.ref)

    async def set_traffic(self, name: str, weights: dict[str, int]) -> dict:
        """Set the weights of deployed versions (``{"reviews:3": 90, "reviews:4": 10}``): whole
        numbers 0-100 that add up to 100; a version set to 0 keeps running but takes no traffic;
        one left out is retired."""
        _check_weights(weights)
        async with self._change:
            service = self.service(name)
            by_ref = {d.ref: d for d in service.deployments}
            unknown = set(weights) - set(by_ref)
            if unknown:
                raise NotFoundError(
                    f"Not deployed in '{name}': {sorted(unknown)}.", hint=f"Deployed: {sorted(by_ref)}."
                )
            for ref, d in by_ref.items():
                if ref not in weights:
                    self._retire(name, d)
            service.deployments = [by_ref[r] for r in weights]
            for ref, w in weights.items():
                by_ref[ref].weight = w
            self._record(name, "traffic", self._describe(service))
            self._persist()
            return {**service.info(), "on_restart": self.on_restart(name)}

    async def _set_only(self, service: Service, ref: str) -> dict:
        keep = [d for d in service.deployments if d.ref == ref]
        for d in service.deployments:
            if d.ref != ref:
                self._retire(service.name, d)
        keep[0].weight = 100
        service.deployments = keep
        self._record(service.name, "traffic", self._describe(service), ref=ref)
        return service.info()

    def _retire(self, name: str, deployment: Deployment) -> None:
        """Let a replaced version finish its queue, then release it."""
        self._record(name, "draining", f"{deployment.ref} finishing {deployment.batcher.pending} queued")

        async def drain():
            await deployment.batcher.drain(deployment.batcher.settings.timeout_s)
            await asyncio.to_thread(deployment.close)
            self._record(name, "stopped", f"{deployment.ref} released", ref=deployment.ref)

        task = asyncio.get_running_loop().create_task(drain())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def _failed(self, service: Service, ref: str, exc: BaseException) -> None:
        log.error("deploying %s failed:\n%s", ref, "".join(traceback.format_exception(exc)))
        self._record(service.name, "failed", f"{ref}: {self._still(service, exc)}", hint=_fix(exc), ref=ref)

    def _still(self, service: Service, exc: BaseException) -> str:
        """Why a version failed, and what the service serves meanwhile."""
        cause = _cause(exc)
        return (
            f"{cause.rstrip('.')}; still serving {self._describe(service)}" if service.deployments else cause
        )

    @staticmethod
    def _describe(service: Service) -> str:
        return ", ".join(f"{d.ref} ({d.weight}%)" for d in service.deployments) or "nothing"

    # ----------------------------------------------------------- undeploy
    async def undeploy(self, name: str) -> dict:
        async with self._change:
            service = self.service(name)
            service.state = "draining"
            self._record(name, "draining", f"undeploying {self._describe(service)}")
            for d in service.deployments:
                await d.batcher.drain(d.batcher.settings.timeout_s)
                await asyncio.to_thread(d.close)
            del self.services[name]
            self.metrics.recent.forget(name)
            self._record(name, "stopped", "service removed")
            self._persist()
            return {"name": name, "state": "stopped", "on_restart": "nothing (undeployed)"}

    def live(self, name: str, window_s: float = 60.0) -> dict:
        """Live figures of service ``name``: requests/s, p50/p95 latency, errors and generated
        tokens/s over the last ``window_s`` seconds (this process's own requests: predict and the
        OpenAI-compatible routes) and what is queued or decoding now."""
        service = self.service(name)
        running = self.metrics.recent.in_flight
        queued = {d.ref: d.batcher.pending + running(d.ref) for d in service.deployments}
        self.metrics.queue_depth.labels(name).set(sum(queued.values()))  # what /metrics says too
        return {
            "service": name,
            "state": service.state,
            **self.metrics.recent.summary(name, window_s),
            "queue_depth": sum(queued.values()),
            "queued": queued,
        }

    def observe(self, name: str, seconds: float, *, error: bool = False, tokens: int | None = None) -> None:
        """Count one request to ``name`` (a service or ``service:N``) in its service's live figures;
        a name no service here has (a base model, a typo) counts nowhere."""
        service = name.partition(":")[0]
        if service in self.services:
            self.metrics.recent.observe(service, seconds, error, tokens=tokens)

    # -------------------------------------------------- what a restart serves
    def _persist(self) -> None:
        """Write what is served now (versions, weights, the operator's settings) to
        ``AIMASS_HOME/serving.json``, which a plain restart restores (see :meth:`restore`)."""
        if self.offline:
            return
        state = {name: _saved(s) for name, s in self.services.items() if s.deployments or s.unrestored}
        path = state_path()
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps({"version": 1, "services": state}, indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            log.error("could not write %s (a restart will not restore this change): %s", path, exc)

    def on_restart(self, name: str) -> str:
        """What service ``name`` serves after a restart of a server started without ``--model``."""
        saved = persisted() or {}
        versions = saved.get(name) or []
        return ", ".join(f"{v['ref']} ({v['weight']}%)" for v in versions) or "nothing"

    async def restore(self, saved: dict) -> None:
        """Deploy what :meth:`_persist` wrote, with its traffic split. A version that no longer
        loads is skipped (its failure is in the service's events) and the others share its
        traffic; the saved state itself is left as the operator wrote it."""
        for name, versions in saved.items():
            loaded = {}
            for v in versions:
                try:
                    overrides = check_settings(v.get("settings"))
                    record = await asyncio.to_thread(registry.get_version, v["ref"])
                    async with self._change:
                        weight = 0 if loaded else None  # the first takes all traffic, the rest none yet
                        await self._deploy(record, name, weight, overrides, self._settings(overrides))
                    loaded[record.ref] = int(v.get("weight", 100))
                except (AimassError, KeyError, TypeError, ValueError) as exc:
                    log.error("could not restore %s in service %s: %s", v, name, exc)
                    self._unrestored(name, v, exc)
            if len(loaded) > 1 and sum(loaded.values()):
                service = self.services[name]
                for d in service.deployments:
                    d.weight = loaded.get(d.ref, 0)
                _scale(service.deployments, 100)  # whole numbers adding up to 100, as a PUT needs
                self._record(name, "traffic", f"restored {self._describe(service)}")

    def _unrestored(self, name: str, entry, exc: BaseException) -> None:
        """Keep the saved ``entry`` of a version that did not restore on its service (a failed one
        if none loaded before), so the next change does not erase it from ``serving.json``."""
        service = self.services.setdefault(name, Service(name, state="failed"))
        service.unrestored.append(entry)
        if isinstance(exc, DeployFailed):  # it failed loading: _deploy said so
            return
        ref = str(entry.get("ref") if isinstance(entry, dict) else entry)  # no such version, bad settings
        service.failure = DeployFailed(f"Restoring {ref} failed: {_cause(exc)}", hint=_fix(exc))
        self._record(name, "failed", f"{ref}: {self._still(service, exc)}", hint=_fix(exc), ref=ref)

    async def shutdown(self, grace: float) -> None:
        """Finish what is queued, then release every version, all within ``grace`` seconds: the
        queues get what :func:`close_share` leaves, closing (model threads, then workers) the rest."""
        deadline = time.monotonic() + grace
        for service in self.services.values():
            service.state = "draining"
            self._record(service.name, "draining", "server shutting down")
        drain_s = grace - close_share(grace)
        waits = [d.batcher.drain(drain_s) for s in self.services.values() for d in s.deployments]
        await asyncio.gather(*waits, return_exceptions=True)
        if self._draining:  # versions a swap retired: their queues had the same time
            await asyncio.wait(set(self._draining), timeout=max(0.0, deadline - time.monotonic()))
        closing = [d for s in self.services.values() for d in s.deployments]
        left = max(0.0, deadline - time.monotonic())
        await asyncio.gather(*(asyncio.to_thread(d.close, left) for d in closing), return_exceptions=True)
        for service in self.services.values():
            self._record(service.name, "stopped", "server stopped")


def close_share(grace: float) -> float:
    """Of a shutdown's ``grace`` seconds, what closing the versions may take (model threads and
    workers, after the requests in flight): a second, or a quarter of a short grace."""
    return min(CLOSE_S, grace / 4)


def state_path() -> Path:
    return paths.home() / "serving.json"


def persisted() -> dict | None:
    """The services a restart restores (``{service: [{"ref", "weight", "settings"}]}``), or None
    when nothing was ever deployed through this home (start-up then serves each model's
    ``production`` alias or latest version)."""
    path = state_path()
    try:
        return json.loads(path.read_text())["services"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("ignoring %s (unreadable: %s); serving the defaults", path, exc)
        return None


def _is_weight(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100


def _check_weights(weights: dict) -> None:
    bad = {r: w for r, w in weights.items() if not _is_weight(w)}
    if bad or not weights:
        raise ConfigError(
            f"Traffic weights must be whole numbers 0-100; got {bad or weights}.",
            hint='e.g. {"reviews:3": 90, "reviews:4": 10}',
        )
    if sum(weights.values()) != 100:
        raise ConfigError(
            f"Traffic weights must add up to 100; these add up to {sum(weights.values())}.",
            hint='e.g. {"reviews:3": 90, "reviews:4": 10}',
        )


def _backend(spec, wanted: str, record) -> str:
    """The backend to serve ``record`` on: a compressed version's own (an ``onnx-int8`` child runs
    on ONNX int8, an ``int8-dynamic`` one only on torch), else ONNX when the task exports it."""
    if wanted == "auto":
        return workflow.served_backend(record, spec)
    supports = spec.supports_onnx()
    method = workflow.compression_method(record)
    own = get_compressor(method).backend if method else None
    if wanted not in ("torch", "onnx", "onnx-int8"):
        raise ConfigError(f"Unknown backend '{wanted}'.", hint="Use auto, torch, onnx or onnx-int8.")
    if wanted != "torch" and not supports:
        raise ConfigError(f"Task '{spec.name}' has no ONNX export yet.", hint="Use --backend torch.")
    if own == "torch" and wanted != "torch":
        raise ConfigError(
            f"{record.ref} is a {method} version; it runs on torch only.", hint="Use --backend torch or auto."
        )
    return wanted


def exported(record, spec) -> dict:
    """The version's ONNX folder, exported (and checked against torch) on first use, sealed when
    written and checked before each load; one that no longer matches its seal is exported again
    (see :func:`aimass.workflow.served_onnx`, which compressions time a parent on too)."""
    return workflow.served_onnx(record, spec)


def _backend_note(d: Deployment) -> str:
    if not d.export:
        return f"backend {d.backend}"
    diff = d.export.get("max_abs_diff_proba")
    return f"backend {d.backend}, ONNX vs torch max |diff| {diff:.1e}"


def _warm(spec, handler, run) -> None:
    """Answer the task's sample request once: loads lazy parts and proves the version works."""
    request = spec.request.model_validate(spec.sample_request)
    items = handler.decode_request(request)
    rows = run(items)
    if len(rows) != len(items):
        raise RuntimeError(f"predict returned {len(rows)} rows for {len(items)} inputs")
    handler.encode_response(rows)


def _scale(deployments: list[Deployment], total: int) -> None:
    """Share ``total`` percent among ``deployments`` in proportion to their weights, in whole
    numbers that add up to exactly ``total`` (largest remainders get the spare points)."""
    for d, w in zip(deployments, _shares([d.weight for d in deployments], total)):
        d.weight = w


def _shares(weights: list[int], total: int) -> list[int]:
    """``total`` shared in proportion to ``weights`` (equally when all are 0), in whole numbers
    that add up to exactly ``total``.

    >>> _shares([10, 10, 10], 100)
    [34, 33, 33]
    >>> _shares([33, 33, 34], 30)
    [10, 10, 10]
    """
    if not weights:
        return []
    weights = weights if any(weights) else [1] * len(weights)
    shares = [w * total / sum(weights) for w in weights]
    floors = [int(s) for s in shares]
    spare = total - sum(floors)
    for i in sorted(range(len(shares)), key=lambda i: floors[i] - shares[i])[:spare]:
        floors[i] += 1
    return floors


def _names(entry, ref: str) -> bool:
    """Whether the saved ``entry`` (as read from ``serving.json``: maybe not even a dict) is ``ref``'s."""
    return isinstance(entry, dict) and entry.get("ref") == ref


def _saved(service: Service) -> list[dict]:
    """What a restart restores of ``service``: its versions with their weights and settings, and
    the saved entries of versions that failed to restore, as they were; the versions served now
    share what those leave (live weights 100 beside a saved 20 are written as 80)."""
    kept = service.unrestored
    held = sum(w for v in kept if isinstance(v, dict) and _is_weight(w := v.get("weight", 100)))
    live = [d.weight for d in service.deployments]
    weights = _shares(live, max(0, 100 - held)) if kept else live
    mine = [
        {"ref": d.ref, "weight": w, "settings": d.overrides} for d, w in zip(service.deployments, weights)
    ]
    return [*mine, *kept]


def _cause(exc: BaseException) -> str:
    if isinstance(exc, AimassError):
        return exc.message
    if isinstance(exc, MemoryError):
        return "out of memory while loading"
    return f"{type(exc).__name__}: {exc}"


def _fix(exc: BaseException) -> str:
    if isinstance(exc, AimassError) and exc.hint:
        return exc.hint
    if isinstance(exc, MemoryError):
        return "Free memory (undeploy other services) or deploy a compressed version."
    if isinstance(exc, FileNotFoundError | OSError):
        return "The version's files are missing or unreadable; check AIMASS_HOME/models or re-register it."
    return "The server log has the full traceback; `aimass models show` describes the version."
