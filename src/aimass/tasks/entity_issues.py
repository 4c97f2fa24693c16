"""Likely annotation errors and hard examples in texts with entities (what
:func:`aimass.curation.dataset_issues` reports for an ``entities`` dataset).

Every text is judged by a model that never saw it: the texts are cut into ``folds`` groups and a
CRF (:mod:`aimass.tasks.sequence`) trained on the others gives each unit of the held-out texts its
tag probabilities (forward-backward) and the texts their predicted entities (Viterbi). The CRF sees
each unit's lexical features and, given ``dense``, a vector of the unit (the tagger's frozen
encoder, reduced: the ``network`` candidate's features), which finds more of the errors and flags
fewer right texts than the lexical features alone (``bench/ner_issues.py``). Confident learning
then runs over every unit's given BIO tag, as cleanlab's
``token_classification.filter.find_label_issues`` does (the units of all texts flattened, per-tag
thresholds, prune by noise rate): a text with a flagged unit is a likely annotation error, ranked
by its least likely given tag. What the report shows of it is what a
reviewer needs: the entities given, the entities the held-out model finds, and the units whose tag
disagrees. Hard examples are the unflagged texts whose least sure unit (the margin between its two
likeliest tags) is lowest.

What a relabel gives a flagged text (``relabel_entities``, :func:`merged_entities`) is its given
entities with only the doubted units retagged, not the held-out model's whole output: an entity
the model missed but nobody doubted stays. Where the retagged units would cut an entity so that a
unit is ``I-X`` with no ``B-X`` before it, no merge is made (``relabel_refused`` says why) and the
text is left for a person, rather than guessed at.

>>> texts = ["Ann met Bob in Rome."] * 2
>>> [tags for tags in given_tags(texts, [[[0, 3, "PER"]], []])][0]
['B-PER', 'O', 'O', 'O', 'O', 'O']
>>> merged_entities("Ann met Bob in Rome.", [[0, 3, "PER"], [15, 19, "PER"]], {4: "B-LOC"})
([[0, 3, 'PER'], [15, 19, 'LOC']], ['Rome: B-PER -> B-LOC'], None)
"""

from __future__ import annotations

import re

import numpy as np

from aimass.errors import DataError
from aimass.evaluation import label_issues as cl
from aimass.tasks import sequence as seq

C1, C2, ITERATIONS = 0.1, 0.1, 100  # the crf-lexical candidate's defaults
DIGIT = re.compile(r"\d")  # a decimal digit of any script (str patterns match Unicode's Nd)


def tag_set(spans: list[list]) -> list[str]:
    """``O`` then ``B-``/``I-`` of every label, in :mod:`aimass.tasks.sequence`'s order."""
    labels = sorted({s[2] for entities in spans for s in entities})
    return ["O"] + [f"{p}-{label}" for label in labels for p in ("B", "I")]


def given_tags(texts: list[str], spans: list[list]) -> list[list[str]]:
    """Each text's BIO tag per unit, from its spans."""
    return [seq.bio_tags(t, s) for t, s in zip(texts, spans, strict=True)]


def out_of_fold(texts: list[str], spans: list[list], *, folds: int = 5, seed: int = 0, dense=None):
    """(the tag set, per text its units' tag probabilities ``[units, tags]``, per text its
    predicted spans), each text from a CRF fitted on the other folds; ``dense``: per text a
    ``[units, d]`` array the CRF sees beside the lexical features (None: the lexical CRF).

    Raises:
        DataError: fewer texts than folds, or no entities at all.
    """
    if len(texts) < folds:
        raise DataError(
            f"{len(texts)} texts cannot be cross-validated in {folds} folds",
            hint="Use fewer folds (--folds), or add texts.",
        )
    tags = tag_set(spans)
    if len(tags) == 1:
        raise DataError("no text holds an entity", hint="Mark entities in the texts first.")
    column = {t: i for i, t in enumerate(tags)}
    lexical = [seq.lexical(t) for t in texts]
    given = given_tags(texts, spans)
    fold_of = np.random.default_rng(seed).permutation(len(texts)) % folds
    proba: list = [None] * len(texts)
    found: list = [None] * len(texts)
    for k in range(folds):
        rows = [(lexical[i], _at(dense, i), given[i]) for i in np.flatnonzero(fold_of != k)]
        weights = seq.train_crf(rows, c1=C1, c2=C2, max_iterations=ITERATIONS)
        where = [column[t] for t in weights.tags]  # a fold may lack a rare label's tags
        for i in np.flatnonzero(fold_of == k):
            emissions = weights.emissions(lexical[i], _at(dense, i))
            p = np.zeros((len(emissions), len(tags)))
            p[:, where] = seq.marginals(emissions, weights.transitions)
            proba[i] = p
            best = seq.viterbi(emissions, weights.transitions)
            found[i] = seq.spans(texts[i], [weights.tags[b] for b in best])
    return tags, proba, found


def _at(dense, i: int):
    return None if dense is None else dense[i]


def flattened(tags: list[str], given: list[list[str]], proba: list[np.ndarray]):
    """Every unit of every text as one row: (its given tag's index, its tag probabilities)."""
    column = {t: i for i, t in enumerate(tags)}
    labels = np.array([column.get(t, 0) for text in given for t in text], dtype=np.int64)
    flat = np.vstack([p for p in proba if len(p)]) if labels.size else np.zeros((0, len(tags)))
    return labels, flat


def find_issues(tags: list[str], given: list[list[str]], proba: list[np.ndarray]):
    """(per text whether it holds a likely error, per text the units flagged, per text its quality:
    the lowest probability of a given tag) by confident learning over all units."""
    return _issues_in(*flattened(tags, given, proba), given)


def _issues_in(labels: np.ndarray, flat: np.ndarray, given: list[list[str]]):
    mask = cl.find_label_issues(labels, flat) if labels.size else np.zeros(0, dtype=bool)
    confidence = cl.self_confidence(labels, flat) if labels.size else np.zeros(0)
    flagged, quality, at = [], [], 0
    for text in given:
        n = len(text)
        flagged.append(np.flatnonzero(mask[at : at + n]).tolist())
        quality.append(float(confidence[at : at + n].min()) if n else 1.0)
        at += n
    return np.array([bool(f) for f in flagged]), flagged, np.array(quality)


def merged_entities(text: str, spans: list[list], retag: dict[int, str]):
    """``(entities, changes, None)``: the given ``spans`` of ``text`` with only the units in ``retag``
    (unit number -> new BIO tag) retagged, the spans rebuilt from the merged tags; every entity none
    of whose units changed is kept exactly as given (its own start and end). ``changes`` says what
    changed, one ``unit: old -> new`` each. ``(None, [], reason)`` when the merged tags cannot be read
    as entities: a unit left ``I-X`` after a unit that is not ``B-X``/``I-X`` (the doubted units cut
    an entity part way), or a given entity the units do not show overlapping a new one."""
    cuts = seq.units(text)
    given = seq.bio_tags(text, spans)
    tags = list(given)
    for u, tag in retag.items():
        tags[u] = tag
    orphan = _orphan(text, cuts, tags)
    if orphan:
        return None, [], orphan
    as_given = {tuple(_aligned(cuts, s)): s for s in spans if _aligned(cuts, s)}  # the unit-wise form
    merged = [list(as_given.get(tuple(m), m)) for m in seq.spans(text, tags, cuts)]
    unseen = [list(s) for s in spans if not _aligned(cuts, s)]  # starts inside a unit: no tag shows it
    if any(a < m[1] and m[0] < b for a, b, _ in unseen for m in merged):
        return None, [], "a given entity that starts inside a unit overlaps the retagged units' entity"
    changes = [f"{text[slice(*cuts[u])]}: {given[u]} -> {tag}" for u, tag in sorted(retag.items())]
    return sorted(merged + unseen), changes, None


def _orphan(text: str, cuts: list[tuple[int, int]], tags: list[str]) -> str | None:
    """Why ``tags`` are no BIO reading: the first unit ``I-X`` after one that is not ``B-X``/``I-X``."""
    for u, tag in enumerate(tags):
        before = tags[u - 1][2:] if u and tags[u - 1] != "O" else None
        if tag.startswith("I-") and before != tag[2:]:
            return (
                f"retagging the doubted units leaves {text[slice(*cuts[u])]!r} as {tag} with no "
                f"B-{tag[2:]} before it: the model doubts only part of an entity"
            )
    return None


def _aligned(cuts: list[tuple[int, int]], span: list) -> list | None:
    """A span as the units read it: from its first unit's start to its last unit's end."""
    inside = [(a, b) for a, b in cuts if span[0] <= a < span[1]]
    return [inside[0][0], inside[-1][1], span[2]] if inside else None


def least_sure(proba: list[np.ndarray]) -> np.ndarray:
    """Per text, the smallest margin between a unit's two likeliest tags (1.0 for no units)."""
    return np.array([float(cl.top_two_margin(p).min()) if len(p) else 1.0 for p in proba])


def shown(text: str, spans: list) -> str:
    """Entities as a reviewer reads them: ``江泽民/PER 北京/LOC`` (``-`` for none)."""
    return " ".join(f"{text[s:e]}/{label}" for s, e, label in spans) or "-"


def report(
    rows: list[dict], *, folds: int = 5, seed: int = 0, hard: int = 20, snippet: int = 200, dense=None
) -> dict:
    """The issues of ``rows`` (``{"text", "label": spans, "split"}``, a stored dataset's order;
    ``dense`` as :func:`out_of_fold`):
    ``label_issues`` (least likely first), ``hard_examples``, the out-of-fold ``accuracy`` (of the
    units' tags) and entity ``micro_f1``, and ``thresholds`` per tag.

    Raises:
        DataError: as :func:`out_of_fold`.
    """
    texts, spans = [r["text"] for r in rows], [[list(s) for s in r["label"]] for r in rows]
    tags, proba, found = out_of_fold(texts, spans, folds=folds, seed=seed, dense=dense)
    given = given_tags(texts, spans)
    labels, flat = flattened(tags, given, proba)
    flagged, units, quality = _issues_in(labels, flat, given)
    column = {t: i for i, t in enumerate(tags)}

    def item(i: int) -> str:
        return texts[i] if len(texts[i]) <= snippet else texts[i][:snippet] + "…"

    def issue(i: int) -> dict:
        cuts = seq.units(texts[i])
        retag = {u: tags[int(proba[i][u].argmax())] for u in units[i]}
        relabelled, changes, refused = merged_entities(texts[i], spans[i], retag)
        return {
            "row": int(i),
            "split": rows[i]["split"],
            "label": shown(texts[i], spans[i]),
            "suggested": shown(texts[i], found[i]),
            "self_confidence": round(float(quality[i]), 4),
            "margin": round(float(min(cl.margins(_ids(given[i], column), proba[i]))), 4),
            "entities": spans[i],
            "suggested_entities": found[i],
            "units": [
                {
                    "unit": texts[i][slice(*cuts[u])],
                    "given": given[i][u],
                    "suggested": tags[int(proba[i][u].argmax())],
                }
                for u in units[i]
            ],
            "relabel_entities": relabelled,  # what --relabel gives: only the doubted units retagged
            "relabel_changes": changes,
            "relabel_refused": refused,
            "item": item(i),
        }

    def hard_one(i: int) -> dict:
        u = int(cl.top_two_margin(proba[i]).argmin())
        top = np.argsort(-proba[i][u])[:2]
        unit = texts[i][slice(*seq.units(texts[i])[u])]
        return {
            "row": int(i),
            "split": rows[i]["split"],
            "label": shown(texts[i], spans[i]),
            "predicted": shown(texts[i], found[i]),
            "runner_up": f"{unit}: {tags[int(top[0])]} or {tags[int(top[1])]}",
            "margin": round(float(proba[i][u][top[0]] - proba[i][u][top[1]]), 4),
            "item": item(i),
        }

    order = cl.rank_rows(quality, flagged)
    hardest = cl.lowest(least_sure(proba), hard, exclude=flagged)
    right = sum(len({tuple(s) for s in f} & {tuple(s) for s in g}) for f, g in zip(found, spans, strict=True))
    n_found, n_given = sum(map(len, found)), sum(map(len, spans))
    return {
        "accuracy": round(float((flat.argmax(1) == labels).mean()), 4),
        "micro_f1": round(2 * right / max(n_found + n_given, 1), 4),
        "thresholds": {
            t: round(float(v), 4) for t, v in zip(tags, cl.class_thresholds(labels, flat), strict=True)
        },
        "label_issues": [issue(int(i)) for i in order],
        "hard_examples": [hard_one(int(i)) for i in hardest],
    }


def near_copies(
    rows: list[dict], *, threshold: float = 0.95, snippet: int = 200, chunk: int = 512
) -> list[dict]:
    """Valid/test texts whose most similar training text (cosine of their character 1-3-gram TF-IDF
    vectors) reaches ``threshold``, most similar first: exact repeats are rejected at import, these
    are the near ones (a date or a digit changed), which a test score would count as memory.

    Every digit (ASCII, full-width ``１``, any script's) reads as ``0`` first: a short text with one
    date character changed (``１２月３０日`` for ``１２月３１日``) would otherwise lose three of its
    few n-grams and fall under the threshold (cosine 0.94 on a 46-character sentence)."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # heavy: scikit-learn

    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    other = [i for i, r in enumerate(rows) if r["split"] != "train"]
    if not train or not other:
        return []
    vectors = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True).fit_transform(
        [DIGIT.sub("0", r["text"]) for r in rows]
    )
    reference = vectors[train].T.tocsc()
    found = []
    for begin in range(0, len(other), chunk):
        sims = (vectors[other[begin : begin + chunk]] @ reference).toarray()
        best = sims.argmax(1)
        for offset, j in enumerate(best):
            if sims[offset, j] >= threshold:
                found.append((other[begin + offset], train[int(j)], float(sims[offset, j])))

    def shown(i: int) -> str:
        text = rows[i]["text"]
        return text if len(text) <= snippet else text[:snippet] + "…"

    return [
        {
            "row": q,
            "split": rows[q]["split"],
            "label": shown_spans(rows[q]),
            "match_row": r,
            "match_label": shown_spans(rows[r]),
            "similarity": round(sim, 4),
            "item": shown(q),
            "match_item": shown(r),
        }
        for q, r, sim in sorted(found, key=lambda item: -item[2])
    ]


def shown_spans(row: dict) -> str:
    return shown(row["text"], row["label"])


def _ids(tags: list[str], column: dict) -> np.ndarray:
    return np.array([column[t] for t in tags], dtype=np.int64)


__all__ = [
    "find_issues",
    "flattened",
    "given_tags",
    "least_sure",
    "merged_entities",
    "near_copies",
    "out_of_fold",
    "report",
    "shown",
    "tag_set",
]
