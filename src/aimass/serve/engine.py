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
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from aimass.compressors import get_compressor
from aimass.errors import AimassError, ConfigError, NotFoundError, Unavailable
from aimass.serve import events
from aimass.serve.batching import Batcher, BatchSettings
from aimass.serve.metrics import Metrics
from aimass.serve.worker import Worker
from aimass.store import registry
from aimass.tasks import get_task

log = logging.getLogger("aimass.serve")


class DeployFailed(ConfigError):
    """A version could not be loaded or warmed; the service keeps its old version."""

    code = "deploy_failed"


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

    def close(self) -> None:
        self.batcher.close()
        if self.worker is not None:
            self.worker.close()

    @property
    def ref(self) -> str:
        return self.record.ref

    def info(self) -> dict:
        r = self.record
        return {
            "ref": r.ref,
            "version": r.version,
            "weight": self.weight,
            "task": r.task,
            "backbone": r.backbone,
            "metrics": {k: r.metrics.get(k) for k in ("accuracy", "macro_f1")},
            "labels": list(getattr(self.handler.model, "classes_", None) or []),
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


@dataclass
class Service:
    name: str
    deployments: list[Deployment] = field(default_factory=list)
    state: str = "loading"

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
                hint=f"Deploy it with `aimass deploy {ref}`, or call /v1/models/{self.name}/predict.",
            )
        if not live:
            raise Unavailable(f"Service '{self.name}' has no version taking traffic.", hint="Deploy one.")
        if len(live) == 1:
            return live[0]
        return random.choices(live, weights=[d.weight for d in live])[0]

    def info(self) -> dict:
        return {"name": self.name, "state": self.state, "versions": [d.info() for d in self.deployments]}


class Engine:
    """Services by name; every change is serialised and written to the service's events."""

    def __init__(self, settings: BatchSettings | None = None, metrics: Metrics | None = None):
        self.settings = settings or BatchSettings()
        self.metrics = metrics or Metrics()
        self.services: dict[str, Service] = {}
        self._change = asyncio.Lock()
        self._draining: set[asyncio.Task] = set()

    # ------------------------------------------------------------- lookup
    def route(self, name: str) -> Deployment:
        """The deployment that answers ``name`` (a service, or SERVICE:VERSION)."""
        service_name, _, version = name.partition(":")
        service = self.services.get(service_name)
        if service is None or service.state != "ready":
            known = ", ".join(sorted(s for s, v in self.services.items() if v.state == "ready")) or "none"
            if service is not None:
                raise Unavailable(f"Service '{service_name}' is {service.state}.", hint="Retry shortly.")
            raise NotFoundError(
                f"Model '{name}' is not served here. Served: {known}.",
                hint="GET /v1/models lists them; deploy one with `aimass deploy NAME[:VERSION]`.",
            )
        return service.pick(name if version else None)

    def info(self) -> list[dict]:
        return [s.info() for s in self.services.values()]

    def service(self, name: str) -> Service:
        if name not in self.services:
            known = ", ".join(sorted(self.services)) or "none"
            raise NotFoundError(f"No service '{name}'. Services: {known}.", hint="`aimass services list`.")
        return self.services[name]

    # ------------------------------------------------------------- deploy
    async def deploy(
        self, ref: str, *, service: str | None = None, weight: int | None = None, settings: dict | None = None
    ) -> dict:
        """Load and warm ``ref``, then move traffic to it (all of it, or ``weight`` percent)."""
        if weight is not None and not 0 <= weight <= 100:
            raise ConfigError(f"Traffic weight must be 0-100; got {weight}.", hint="e.g. --weight 10.")
        record = await asyncio.to_thread(registry.get_version, ref)
        name = registry.check_name(service or record.name)
        batch = self._settings(settings)
        async with self._change:
            current = self.services.get(name)
            if current is None:
                current = self.services[name] = Service(name)
                events.record(name, "created", f"service {name} created", ref=record.ref)
            existing = next((d for d in current.deployments if d.ref == record.ref), None)
            if existing is not None:  # already loaded: only the traffic changes
                if weight is None:
                    return await self._set_only(current, record.ref)
                existing.weight = weight
                _scale([d for d in current.deployments if d is not existing], 100 - weight)
                events.record(name, "traffic", self._describe(current), ref=record.ref)
                return current.info()
            events.record(name, "loading", f"loading {record.ref} from {record.path}", ref=record.ref)
            try:
                deployment = await self._load(record, batch, name)
            except Exception as exc:
                self._failed(current, record.ref, exc)
                if not current.deployments:
                    current.state = "failed"
                raise DeployFailed(f"Deploying {record.ref} failed: {_cause(exc)}", hint=_fix(exc)) from None
            events.record(
                name,
                "warmed",
                f"{record.ref} loaded in {deployment.load_s:.2f}s ({_backend_note(deployment)}), "
                f"warmed in {deployment.warm_s * 1000:.0f} ms",
                ref=record.ref,
            )
            self._switch(current, deployment, weight)
            current.state = "ready"
            events.record(name, "ready", f"{name} serving {self._describe(current)}", ref=record.ref)
            return current.info()

    def _settings(self, overrides: dict | None) -> BatchSettings:
        if not overrides:
            return self.settings
        allowed = set(BatchSettings.__dataclass_fields__)
        unknown = set(overrides) - allowed
        if unknown:
            raise ConfigError(f"Unknown serving settings: {sorted(unknown)}.", hint=f"Use {sorted(allowed)}.")
        return BatchSettings(**{**self.settings.__dict__, **overrides})

    async def _load(self, record, settings: BatchSettings, service: str) -> Deployment:
        spec = get_task(record.task)
        began = time.perf_counter()
        backend = _backend(spec, settings.backend, record)
        export = await asyncio.to_thread(exported, record, spec) if backend.startswith("onnx") else None
        handler = spec.handler(record.path)
        await asyncio.to_thread(handler.setup, "cpu", backend)
        worker, run = None, handler.predict
        if backend.startswith("onnx") and settings.workers == "process" and getattr(spec, "runtime", None):
            worker = Worker(
                spec.runtime,
                Path(record.path) / "onnx",
                {"int8": backend == "onnx-int8"},
                on_event=lambda kind, message: events.record(service, kind, message, ref=record.ref),
            )
            await asyncio.to_thread(worker.start)
            run = worker.run
        loaded = time.perf_counter()
        try:
            await asyncio.to_thread(_warm, spec, handler, run)
        except BaseException:
            if worker is not None:
                worker.close()
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
            for d in old:
                self._retire(service.name, d)
            if old:
                was = ", ".join(d.ref for d in old)
                events.record(service.name, "swapped", f"{was} -> {new.ref}", ref=new.ref)
            return
        new.weight = weight
        _scale(old, 100 - weight)
        service.deployments = [*old, new]
        events.record(service.name, "traffic", self._describe(service), ref=new.ref)

    async def set_traffic(self, name: str, weights: dict[str, int]) -> dict:
        """Set the weights of deployed versions (``{"reviews:3": 90, "reviews:4": 10}``); a version
        set to 0 keeps running but takes no traffic; one left out is retired."""
        async with self._change:
            service = self.service(name)
            by_ref = {d.ref: d for d in service.deployments}
            unknown = set(weights) - set(by_ref)
            if unknown:
                raise NotFoundError(
                    f"Not deployed in '{name}': {sorted(unknown)}.", hint=f"Deployed: {sorted(by_ref)}."
                )
            if not weights or sum(weights.values()) <= 0 or min(weights.values()) < 0:
                raise ConfigError("Weights must be >= 0 and not all 0.", hint='e.g. {"m:3": 90, "m:4": 10}')
            for ref, d in by_ref.items():
                if ref not in weights:
                    self._retire(name, d)
            service.deployments = [by_ref[r] for r in weights]
            for ref, w in weights.items():
                by_ref[ref].weight = w
            events.record(name, "traffic", self._describe(service))
            return service.info()

    async def _set_only(self, service: Service, ref: str) -> dict:
        keep = [d for d in service.deployments if d.ref == ref]
        for d in service.deployments:
            if d.ref != ref:
                self._retire(service.name, d)
        keep[0].weight = 100
        service.deployments = keep
        events.record(service.name, "traffic", self._describe(service), ref=ref)
        return service.info()

    def _retire(self, name: str, deployment: Deployment) -> None:
        """Let a replaced version finish its queue, then release it."""
        events.record(name, "draining", f"{deployment.ref} finishing {deployment.batcher.pending} queued")

        async def drain():
            await deployment.batcher.drain(deployment.batcher.settings.timeout_s)
            deployment.close()
            events.record(name, "stopped", f"{deployment.ref} released", ref=deployment.ref)

        task = asyncio.get_running_loop().create_task(drain())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def _failed(self, service: Service, ref: str, exc: BaseException) -> None:
        log.error("deploying %s failed:\n%s", ref, "".join(traceback.format_exception(exc)))
        keeps = f"; still serving {self._describe(service)}" if service.deployments else ""
        events.record(service.name, "failed", f"{ref}: {_cause(exc)}{keeps}", hint=_fix(exc), ref=ref)

    @staticmethod
    def _describe(service: Service) -> str:
        return ", ".join(f"{d.ref} ({d.weight}%)" for d in service.deployments) or "nothing"

    # ----------------------------------------------------------- undeploy
    async def undeploy(self, name: str) -> dict:
        async with self._change:
            service = self.service(name)
            service.state = "draining"
            events.record(name, "draining", f"undeploying {self._describe(service)}")
            for d in service.deployments:
                await d.batcher.drain(d.batcher.settings.timeout_s)
                d.close()
            del self.services[name]
            events.record(name, "stopped", "service removed")
            return {"name": name, "state": "stopped"}

    async def shutdown(self, grace: float) -> None:
        """Finish what is queued (within ``grace`` seconds), then release every version."""
        for service in self.services.values():
            service.state = "draining"
            events.record(service.name, "draining", "server shutting down")
        waits = [d.batcher.drain(grace) for s in self.services.values() for d in s.deployments]
        await asyncio.gather(*waits, *self._draining, return_exceptions=True)
        for service in self.services.values():
            for d in service.deployments:
                d.close()
            events.record(service.name, "stopped", "server stopped")


def _backend(spec, wanted: str, record) -> str:
    """The backend to serve ``record`` on: a compressed version's own (an ``onnx-int8`` child runs
    on ONNX int8, an ``int8-dynamic`` one only on torch), else ONNX when the task exports it."""
    supports = hasattr(spec.estimator, "export_onnx")
    method = compression_method(record)
    own = get_compressor(method).backend if method else None
    if wanted == "auto":
        return own or ("onnx" if supports else "torch")
    if wanted not in ("torch", "onnx", "onnx-int8"):
        raise ConfigError(f"Unknown backend '{wanted}'.", hint="Use auto, torch, onnx or onnx-int8.")
    if wanted != "torch" and not supports:
        raise ConfigError(f"Task '{spec.name}' has no ONNX export yet.", hint="Use --backend torch.")
    if own == "torch" and wanted != "torch":
        raise ConfigError(
            f"{record.ref} is a {method} version; it runs on torch only.", hint="Use --backend torch or auto."
        )
    return wanted


def compression_method(record) -> str | None:
    path = Path(record.path) / "compression.json"
    return json.loads(path.read_text())["method"] if path.exists() else None


def exported(record, spec) -> dict:
    """The version's ONNX folder, exported (and checked against torch) on first use."""
    folder = Path(record.path) / "onnx"
    done = folder / "export.json"
    if done.exists():
        return json.loads(done.read_text())
    model = spec.estimator.load(registry.open_folder(record))
    tmp = folder.with_name(f"onnx.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    from aimass.compressors.onnx import stored_calibration

    report = model.export_onnx(tmp, **stored_calibration(record.dataset_digest))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process exported it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return report


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
    current = sum(d.weight for d in deployments) or len(deployments)
    for d in deployments:
        d.weight = round((d.weight or 1) * total / current)


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
