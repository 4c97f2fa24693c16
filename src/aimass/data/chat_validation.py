"""Conversations trained on whole, validated on a file of their own: OpenAI's ``validation_file``.

An import splits one file into train, valid and test. A fine-tuning job given a separate
validation file trains on *all* of its training file and scores the validation file instead:
:func:`with_validation` stores that as a dataset of its own (by content digest, like any import)
whose ``train`` split is every training conversation and whose ``valid`` and ``test`` splits are
both the validation file's conversations (the fit's validation curve and the final evaluation are
on the file the user gave). Its manifest names both sources under ``parents``.

>>> ds = with_validation(load_dataset("train-file"), load_dataset("valid-file"))  # doctest: +SKIP
>>> ds.manifest["counts"]["by_split"]                                            # doctest: +SKIP
{'train': 120, 'valid': 30, 'test': 30}
"""

from __future__ import annotations

import json

from aimass.data.dataset import Dataset
from aimass.data.pairs_import import chat_manifest, count_tokens
from aimass.data.storage import ID_LENGTH, compute_digest, existing, save_dataset
from aimass.errors import DataError
from aimass.llm.backbone import get_llm_backbone, load_tokenizer


def with_validation(train: Dataset, valid: Dataset, name: str | None = None) -> Dataset:
    """Store (or find) the dataset that trains on all of ``train`` and validates and tests on all
    of ``valid``; both must hold conversations.

    Raises:
        DataError: Either is not a chat dataset.
    """
    for role, ds in (("training", train), ("validation", valid)):
        if ds.kind != "chat":
            raise DataError(
                f"The {role} data {ds.name!r} ({ds.id}) holds {ds.kind} data, not conversations.",
                hint="A separate validation set is for text-generation (chat JSONL, one "
                "{'messages': [...]} a line); classification data takes its splits at import (--split-col).",
            )
    rows = [{**r, "split": "train"} for r in train.rows()]
    held = valid.rows()
    rows += [{**r, "split": "valid"} for r in held] + [{**r, "split": "test"} for r in held]
    settings = {"kind": "chat", "training_file": train.digest, "validation_file": valid.digest}
    lines = [json.dumps({"messages": r["messages"], "split": r["split"]}, ensure_ascii=False) for r in rows]
    digest = compute_digest(lines, settings)
    stored = existing(digest[:ID_LENGTH])
    if stored is not None:
        return stored
    tokens = train.manifest.get("tokens", {})
    spec = get_llm_backbone(tokens.get("tokenizer", "smollm2-135m"))
    tokenizer = load_tokenizer(spec)
    for row in rows:
        row["tokens"] = list(count_tokens(tokenizer, row["messages"]))
    info = {
        "file": train.manifest["source"],
        "sha256": train.manifest["source_sha256"],
        "encoding": train.manifest.get("encoding", "utf-8"),
        "encodings": train.manifest.get("encodings", {}),
    }
    limit = tokens.get("limit") or spec.context_length
    manifest = chat_manifest(
        digest, name or f"{train.name}-with-{valid.name}"[:100], rows, [], info, None, {}, spec.name, limit
    )
    manifest.update(
        language=train.manifest.get("language", "en"),
        warnings=list(train.manifest.get("warnings", [])),
        split_settings=settings,
        parents={
            "training_file": {"id": train.id, "name": train.name, "digest": train.digest},
            "validation_file": {"id": valid.id, "name": valid.name, "digest": valid.digest},
        },
    )
    return save_dataset(lines, rows, [], manifest)
