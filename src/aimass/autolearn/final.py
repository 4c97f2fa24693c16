"""The saved state of a run, the final fit, registration and the int8 child."""

from __future__ import annotations

import json
from pathlib import Path

from aimass import paths, workflow
from aimass.autolearn.run import _Run
from aimass.autolearn.settings import MAX_DROP, METHOD
from aimass.store import registry
from aimass.tasks import get_task
from aimass.train.progress import Paused


class _State:
    """What an interrupted run left in ``run_dir/auto_state.json``: the search result and the final
    fit's exact settings, then the registered version (so a resumed run never registers twice)."""

    def __init__(self, run_dir, resume: bool):
        self.run_dir, self.resume = (Path(run_dir) if run_dir else None), resume
        path = self.path()
        self.saved = json.loads(path.read_text()) if resume and path and path.exists() else {}

    def path(self) -> Path | None:
        return self.run_dir / "auto_state.json" if self.run_dir else None

    def save(self, **values) -> None:
        self.saved.update(values)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.path().write_text(json.dumps(self.saved, indent=2, default=str))


# ==================================================================== train, register, compress
def _fit_and_register(run: _Run, tuner, ds, params: dict, name: str, state: _State):
    """The registered version and its test report: trained now, or the one a resumed run made."""
    if "model" in state.saved:
        record = registry.get_version(state.saved["model"])
        report = json.loads((registry.open_folder(record) / "evaluation.json").read_text())
        run.choose("final fit", record.ref, "resumed: the interrupted run had registered it")
        return record, report
    model, report, run_id = _train_final(run, tuner, ds, params, state)
    record = _register(run, model, report, name, run_id)
    state.save(model=record.ref)
    return record, report


def _train_final(run: _Run, tuner, ds, params: dict, state: _State):
    """Fit the task's estimator with ``params`` and the time left, then evaluate on the test split."""
    share = run.left() - run.plan.reserved() - run.deploy_s - run.margin_s
    final = {"seed": run.seed, **tuner.fixed, **params, "time_budget": round(max(10.0, share), 1)}
    if "time_budget" not in get_task(tuner.task).options():  # a fit that takes seconds has no budget
        final.pop("time_budget")
    if "time_budget" in params:  # resumed: the interrupted run's exact settings
        final = dict(params)
    state.save(params=final, search=run.search)
    model = get_task(tuner.task).estimator(**final)
    found = registry.find_run(tuner.task, model.get_params(), ds.id) if state.resume else None
    record = found or registry.start_run(tuner.task, model.get_params(), ds.id)
    folder = state.run_dir or paths.subdir("runs") / record.id
    try:
        budget = f" ({final['time_budget']:.0f}s)" if "time_budget" in final else ""
        with run.phase("train", 0.45, f"final fit{budget}"):
            model.fit(ds, run_dir=folder, resume=state.resume, progress=run.progress)
        with run.phase("evaluate", 0.8, "evaluating on the held-out test split"):
            report = model.evaluate(ds, "test")
    except Paused:  # its job was paused: the run goes on when it resumes
        raise
    except BaseException as exc:
        registry.finish_run(record.id, "failed", error=f"{type(exc).__name__}: {exc}"[-4000:])
        raise
    registry.finish_run(record.id, "succeeded", timings=model.timings_)
    _note_final(run, tuner, model, final)
    return model, report, record.id


def _note_final(run: _Run, tuner, model, final: dict) -> None:
    if not tuner.searches:
        value, why = tuner.fit_note(model)
        budget = {"time_budget_s": final["time_budget"]} if "time_budget" in final else {}
        run.choose("final fit", {**budget, **value}, why)
        return
    top = getattr(model, "stages_", {}).get("top", {})
    if top.get("skipped"):
        why = f"stage 2 skipped: {top['skipped']}"
    elif top.get("best_epoch", -1) < 0:
        why = f"stage 2 ran {len(top.get('history', []))} epoch(s) but never beat the head on validation"
    else:
        why = f"best validation macro-F1 {top['best_score']:.4f} at epoch {top['best_epoch'] + 1}"
    run.choose("final fit", {"time_budget_s": final["time_budget"], "stages": _stages(model)}, why)
    candidates = getattr(model, "candidates_", None)
    if candidates and "accuracy" in candidates.get(model.chosen_, {}):
        scores = ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in candidates.items())
        run.choose(
            "model", {"chosen": model.chosen_, "candidates": candidates}, f"validation accuracy: {scores}"
        )


def _stages(model) -> dict:
    return {
        k: {"best_score": v["best_score"], "epochs": len(v["history"]), "skipped": v["skipped"]}
        for k, v in getattr(model, "stages_", {}).items()
    }


def _register(run: _Run, model, report: dict, name: str, run_id: str):
    with run.phase("register", 0.85, "registering the model"):
        return workflow.register(model, name, report=report, run_id=run_id)


def _compress(run: _Run, ref: str, task: str) -> dict:
    """Try the ONNX int8 child; keep it only if it passes the accuracy gate. It starts only when the
    time left, less what deployment is given and the run's margin, covers its estimate: compression
    takes no deadline, so one started late overruns the budget. A task compressed another way
    (``Task.compress_instead``: a language model is quantised where it is served) is not tried, and
    the report says what to do instead."""
    info = {"method": METHOD, "max_drop": MAX_DROP, "kept": False, "child": None, "gate": None}
    instead = get_task(task).compress_instead
    if instead:
        return {**info, "method": None, "reason": f"not tried: {instead}"}
    need = run.plan.compress_s
    free = run.left() - run.deploy_s - run.margin_s  # deployment and the margin still come after it
    if free < need:
        after = f" after {run.deploy_s:.0f}s kept for deployment" if run.deploy_s else ""
        return {
            **info,
            "reason": f"skipped: {max(0, free):.0f}s left of the budget{after}, it needs ~{need:.0f}s",
        }
    try:
        with run.phase("compress", 0.9, f"trying {METHOD}"):
            result = workflow.compress(ref, METHOD, max_drop=MAX_DROP)
    except Exception as exc:  # an export that fails keeps the parent; the report says why
        return {**info, "reason": f"failed ({type(exc).__name__}: {str(exc)[:300]}); keeping {ref}"}
    gate, comparison = result["gate"], result["comparison"]
    kept = gate["status"] == "accepted"
    speed = f"p50 latency x{comparison['p50_speedup']:.2f} faster, size x{comparison['size_ratio']:.2f}"
    reason = f"{gate['reason']}; {speed}" if kept else f"rejected: {gate['reason']}; keeping {ref}"
    run.choose("served version", result["model"] if kept else ref, reason)
    return {
        **info,
        "kept": kept,
        "child": result["model"],
        "gate": gate,
        "comparison": comparison,
        "reason": reason,
    }
