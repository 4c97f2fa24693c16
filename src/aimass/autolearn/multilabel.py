"""The multi-label text tuner: ``aimass auto`` on texts with several labels each (a JSONL table whose
labels are lists, or a stored ``multilabel`` dataset).

There is nothing for auto to search: the fit itself compares every candidate on the validation
split (TF-IDF alone and beside the embedding, C, the embedding's weight, the threshold;
:mod:`aimass.tasks.text_multilabel`) in seconds after the frozen pass. Auto checks the budget holds
the frozen pass, plans evaluation and the int8 child as for text classification, and reports what
the fit chose and why.
"""

from __future__ import annotations

from aimass.autolearn.plan import Plan, _reserve
from aimass.autolearn.run import _Run
from aimass.autolearn.tuners import Count, TextTuner

WHY_NO_SEARCH = (
    "nothing to search: the fit compares TF-IDF alone against TF-IDF beside the frozen embedding over "
    "C, the embedding's weight and the threshold on the validation split, in seconds"
)


class MultiLabelTuner(TextTuner):
    """Multi-label text: the frozen pass is costed as for text classification; no stage 2."""

    searches = False
    least_work = "embedding them with the frozen backbone, fitting a regression per label and evaluating"
    more_time = "to make and measure the int8 child as well"
    fixed: dict = {}

    def useful_seconds(self, count: Count) -> float:
        """The frozen pass with room to spare, the regressions, and the int8 child."""
        return (
            self.minimum_seconds(count) * 1.6 + self.compress_s + 0.3 * count.items * self.item_seconds(count)
        )

    def default_params(self) -> dict:
        return {}

    def reserve(self, run: _Run, ds) -> Plan:
        return _reserve(run, self, ds)

    def settle(self, run: _Run, ds) -> dict:
        from aimass.autolearn.search import _no_search  # optuna and the trials: only for a run

        run.plan = _reserve(run, self, ds)
        run.search = _no_search(WHY_NO_SEARCH, {})
        run.choose("hyper-parameters", {}, WHY_NO_SEARCH)
        return {}

    def fit_note(self, model) -> tuple[dict, str]:
        chosen = model.candidates_.get(model.chosen_, {}) if model.candidates_ else {}
        value = {"chosen": model.chosen_, "threshold": model.threshold_, "candidates": model.candidates_}
        scores = ", ".join(f"{name} {c['micro_f1']:.4f}" for name, c in (model.candidates_ or {}).items())
        why = f"validation micro-F1: {scores}" if scores else "the network alone (baselines off)"
        if chosen:
            why += f"; kept {model.chosen_} at C={chosen['C']}, embedding weight {chosen['w']}"
        return value, why + f", labels given from {model.threshold_}"
