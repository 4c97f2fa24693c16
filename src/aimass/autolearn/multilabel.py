"""The multi-label tuners: ``aimass auto`` on texts or images with several labels each (a JSONL
table or image manifest whose labels are lists, or a stored ``multilabel`` / ``multilabel-image``
dataset).

There is nothing for auto to search: the fit itself compares every candidate on the validation
split (texts: TF-IDF alone and beside the embedding, C, the embedding's weight; images: the frozen
features or the raw pixels, C; and the threshold: :mod:`aimass.tasks.text_multilabel`,
:mod:`aimass.tasks.image_multilabel`) in seconds after the frozen pass. Auto checks the budget holds
the frozen pass, plans evaluation and the int8 child as for the single-label task, and reports what
the fit chose and why.
"""

from __future__ import annotations

from aimass.autolearn.plan import Plan, _reserve
from aimass.autolearn.run import _Run
from aimass.autolearn.tuners import Count, ImageTuner, TextTuner


class NoSearch:
    """What the multi-label tuners share: no search, no stage 2; the frozen pass is costed as for
    the single-label task they are mixed with."""

    searches = False
    least_work = "embedding them with the frozen backbone, fitting a regression per label and evaluating"
    more_time = "to make and measure the int8 child as well"
    fixed: dict = {}
    why_no_search = ""

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
        run.search = _no_search(self.why_no_search, {})
        run.choose("hyper-parameters", {}, self.why_no_search)
        return {}

    def fit_note(self, model) -> tuple[dict, str]:
        chosen = model.candidates_.get(model.chosen_, {}) if model.candidates_ else {}
        value = {"chosen": model.chosen_, "threshold": model.threshold_, "candidates": model.candidates_}
        scores = ", ".join(f"{name} {c['micro_f1']:.4f}" for name, c in (model.candidates_ or {}).items())
        why = f"validation micro-F1: {scores}" if scores else "the network alone (baselines off)"
        if chosen:
            why += f"; kept {model.chosen_} at C={chosen['C']}"
            why += f", embedding weight {chosen['w']}" if "w" in chosen else ""
        return value, why + f", labels given from {model.threshold_}"


class MultiLabelTuner(NoSearch, TextTuner):
    """Multi-label text: the frozen pass is costed as for text classification."""

    why_no_search = (
        "nothing to search: the fit compares TF-IDF alone against TF-IDF beside the frozen embedding over "
        "C, the embedding's weight and the threshold on the validation split, in seconds"
    )


class MultiLabelImageTuner(NoSearch, ImageTuner):
    """Multi-label images: the frozen pass is costed as for image classification."""

    why_no_search = (
        "nothing to search: the fit compares the frozen backbone's features against the raw pixels over "
        "C and the threshold on the validation split, in seconds"
    )
