"""Auto-learning ("ExeML"): labelled data in, a tuned, registered and optionally served model out.

One call detects the task from the data's layout, imports it, picks a backbone, searches
hyper-parameters within the time budget, trains the best, evaluates it on the held-out test split,
tries an ``onnx-int8`` child, registers both and (with ``deploy=True``) serves the chosen one.

>>> from aimass.autolearn import detect_task
>>> from aimass.data import bbc_news_path
>>> detect_task(bbc_news_path())[1]
'a folder of class sub-folders holding documents (.txt, .pdf, .docx, .html, .htm)'

How the budget is spent (every phase is timed; the numbers are for BBC News, 2 CPU cores, 5 min):

1. *Up front*: count the items (no model is loaded) and refuse a budget that cannot cover the frozen
   encoder pass, a head and the test evaluation, naming the smallest useful one.
2. *Prepare* (~40 s): the task's estimator with its default settings runs up to stage 2 (backbone,
   frozen-feature cache, the stage-1 head). The cache makes every later fit skip the encoder pass.
3. *Reserve*: the final fit (the estimator's own stage-2 plan, up to 4 text / 12 image epochs),
   the test evaluation, registration, the ONNX int8 child (and deployment) are costed first, from
   rates calibrated on this CPU and scaled by how fast the encoder pass just ran. On a tight budget
   the search goes before the int8 child, which is then tried only if time is left.
4. *Search* (what is left): a learning-rate range test (Smith 2017, fastai's ``lr_find``) of a
   few dozen stage-2 steps on the cached features proposes ``lr_body``; Optuna (seeded TPE,
   median pruning on the validation macro-F1 reported after every epoch) then tries
   ``lr_body`` x ``lr_head`` on a stratified subsample for a couple of epochs each. Trial 0 is
   the task's default, so the search can only match or beat it; another setting replaces it only
   when it scores higher than luck explains (the best of N equal trials gains ~sigma*sqrt(2 ln N))
   and beats it again on another subsample with another seed (a confirmation rung). Short trials
   favour low learning rates (short-horizon bias), so the evidence to leave the default is strict.
5. *Final fit* with the chosen settings and all the time left, then evaluate, register, compress.

Conversations (text generation) are planned, not searched (:mod:`aimass.autolearn.generation`): a
LoRA step is timed on this machine and the fit gets the steps the budget leaves; there is no int8
child (a language model is quantised where it is served).

Where tasks differ (how stage 2 reads its cached inputs, the default learning rates) lives in one
small tuner per task, found in a table by task name, as the task and backbone tables do. The tuners
reach into their estimator's stage-2 inputs (``_stage_top``'s arguments): they mirror what the
estimator trains so that a trial is a cheaper copy of the real run, not a different model.
"""

from __future__ import annotations

from aimass import budget as budgets
from aimass.autolearn.deploy import _deploy, _report
from aimass.autolearn.final import _compress, _fit_and_register, _State
from aimass.autolearn.run import _Run, dataset_task, detect_task, from_dataset, from_path
from aimass.autolearn.search import _search_or_resume
from aimass.autolearn.settings import DEPLOY_S
from aimass.autolearn.trials import _pick as _pick
from aimass.errors import ConfigError

__all__ = ["auto", "dataset_task", "detect_task"]


# ==================================================================== the one call
def auto(
    path=None,
    *,
    data=None,
    time_budget="10m",
    name=None,
    deploy=False,
    seed=0,
    progress=True,
    on_progress=None,
    run_dir=None,
    resume=False,
) -> dict:
    """Detect, import, search, train, evaluate, compress, register and (optionally) serve.

    Example:
        >>> import aimass
        >>> report = aimass.auto("reviews.csv", time_budget="5m")   # doctest: +SKIP
        >>> report["model"], report["metrics"]["accuracy"]           # doctest: +SKIP
        ('reviews:1', 0.93)

    Args:
        path: a CSV/TSV/JSONL table with a text column, a folder of class sub-folders of .txt
            files, a folder, archive or manifest of images, or conversations (chat or
            prompt/completion JSONL, source/target columns) for a LoRA fine-tune.
        data: instead of ``path``, a stored dataset (id or name, e.g. what the console's wizard
            imported): nothing is imported again, its split is kept and its task is the one that
            reads its kind of items.
        time_budget: wall time for the whole run, e.g. ``"5m"``; phases that do not fit are skipped
            and the report says so.
        name: model name (default: the data's file or folder name).
        deploy: point ``production`` at the chosen version and serve it on 127.0.0.1.
        seed: makes the split, the search and training repeatable.
        progress: show progress bars of the long stages.
        on_progress: ``on_progress(fraction, message)`` at each phase (fraction in 0..1).
        run_dir: where the final fit keeps its checkpoint (and the search result), so that
            ``resume=True`` continues an interrupted run from there.
        resume: continue the final fit from ``run_dir``'s checkpoint, reusing its search.

    Returns:
        A JSON-able report: task, dataset, choices (what, value, why), search, metrics, model,
        compression, deployed, endpoint, curl, wall_s and timings per phase.

    Raises:
        ConfigError: the budget is too small to train anything useful (said before any work), or
            not exactly one of ``path`` and ``data`` is given.
        DataError: the data's layout names no task, or the data cannot train a classifier.
    """
    if (path is None) == (data is None):
        raise ConfigError(
            "auto takes the data's path or a stored dataset, one of the two.",
            hint="Pass a path (a file or folder), or data=ID-or-NAME of an imported dataset.",
        )
    run = _Run(budgets.seconds(time_budget), on_progress, progress, seed, DEPLOY_S if deploy else 0.0)
    if run.total is None:
        raise ConfigError("auto needs a time budget.", hint="Pass --time-budget 5m (or 300s, 1h).")
    if data is not None:
        ds, task, tuner, name = from_dataset(run, data, name)
    else:
        ds, task, tuner, name = from_path(run, path, name)
    state = _State(run_dir, resume)
    params = _search_or_resume(run, tuner, ds, state)
    record, report = _fit_and_register(run, tuner, ds, params, name, state)
    compression = state.saved.get("compression") or _compress(run, record.ref, task)
    state.save(compression=compression)
    chosen = compression["child"] if compression["kept"] else record.ref
    served = _deploy(run, name, chosen, tuner, ds) if deploy else None
    return _report(run, task, ds, record, report, compression, chosen, served, tuner)
