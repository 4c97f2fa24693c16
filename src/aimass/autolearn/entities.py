"""The entity tuner: ``aimass auto`` on texts with named entities (a JSONL file of spans or of
tokens and tags, a CoNLL file, or a stored ``entities`` dataset).

There is nothing for auto to search: the fit itself compares the CRF over the frozen encoder's
unit vectors with the lexical CRF on the validation split (:mod:`aimass.tasks.token_classification`).
Auto checks the budget holds the frozen pass and the CRF fits, skips the int8 child (an entity
tagger is served as it is: ``Task.compress_instead``) and reports what the fit chose and why.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from aimass.autolearn.multilabel import NoSearch
from aimass.autolearn.tuners import Count, TextTuner


class EntityTuner(NoSearch, TextTuner):
    """Named entities: the frozen pass over every text, then two CRF fits."""

    least_work = "embedding them with the frozen encoder, fitting two CRFs and evaluating"
    more_time = "to evaluate the tagger on the test split"
    compress_s = 0.0  # no int8 child
    why_no_search = (
        "nothing to search: the fit compares the CRF over the frozen encoder's word vectors against the "
        "CRF over lexical features alone on the validation split"
    )

    def compress_item_s(self, item: float) -> float:
        return 0.0

    def count(self, source: Path) -> Count:
        from aimass.data.entities import is_conll, read_conll, spans_of  # the data layer reads the format
        from aimass.data.read import read_source

        table = read_conll(source) if is_conll(source) else read_source(source)
        texts = [spans_of(r.fields)[0] for r in table.records]
        return Count(len(texts), statistics.fmean(map(len, texts)) if texts else 0.0)

    def item_seconds(self, count: Count) -> float:
        """The frozen pass and the two CRF fits per text: 0.06 s for multilingual-e5 on the People's
        Daily's 36-character sentences (bench/ner.py: 131 s for 2,200), half for MiniLM."""
        depth = 2.0 if count.backbone in (None, "multilingual-e5-small") else 1.0
        return 0.03 * depth * max(1.0, count.mean_chars / 40)

    def fit_note(self, model) -> tuple[dict, str]:
        scores = ", ".join(f"{name} {c['micro_f1']:.4f}" for name, c in model.candidates_.items())
        value = {"chosen": model.chosen_, "candidates": model.candidates_}
        return value, f"validation entity micro-F1: {scores}; kept {model.chosen_}"
