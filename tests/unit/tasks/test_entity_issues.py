"""Entity issues: a relabel retags only the doubted units and keeps every other entity as given;
a text whose doubted units cannot be merged is refused, not erased."""

from __future__ import annotations

import json

import pytest

from aimass import api
from aimass.data.bundled import peoples_daily
from aimass.data.revise import CHANGES_FILE
from aimass.errors import ConfigError
from aimass.tasks.entity_issues import merged_entities, near_copies


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_merge_retags_the_doubted_units_only():
    text = "Ann met Bob in Rome."  # units: Ann met Bob in Rome .
    given = [[0, 3, "PER"], [8, 11, "PER"], [15, 19, "LOC"]]
    assert merged_entities(text, given, {2: "O"}) == (
        [[0, 3, "PER"], [15, 19, "LOC"]],
        ["Bob: B-PER -> O"],
        None,
    )
    assert merged_entities(text, given, {2: "B-ORG", 3: "I-ORG"})[0] == [
        [0, 3, "PER"],
        [8, 14, "ORG"],
        [15, 19, "LOC"],
    ]
    # "Bob" is I-PER once "Ann"'s B-PER is gone: the model doubts part of an entity, no guess is made
    entities, changes, refused = merged_entities("Ann Bob met us.", [[0, 7, "PER"]], {0: "O"})
    assert entities is None and changes == [] and "'Bob' as I-PER with no B-PER before it" in refused
    # an entity no doubted unit touches keeps its own bounds, even where the units would read it wider
    kept = merged_entities("xAnn met Bob.", [[1, 4, "PER"], [9, 12, "PER"]], {2: "B-LOC"})
    assert kept[0] == [[1, 4, "PER"], [9, 12, "LOC"]]


def test_relabel_keeps_the_entities_nobody_doubted(tmp_path, monkeypatch):
    """300 People's Daily sentences, one entity in 20 of them given the wrong type. A flagged text's
    relabel is its given entities with the doubted units retagged: an entity the held-out CRF missed
    but did not doubt stays (the CRF's whole output would delete it), and what changed is recorded."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    rows = [{"text": t, "entities": [list(s) for s in e]} for t, e in peoples_daily(300)]
    swap = {"PER": "LOC", "LOC": "ORG", "ORG": "PER"}
    for i in [i for i, r in enumerate(rows) if r["entities"]][3::15]:
        rows[i]["entities"][0][2] = swap[rows[i]["entities"][0][2]]
    ds = api.import_dataset(write_jsonl(tmp_path / "noisy.jsonl", rows), name="noisy")
    report = api.dataset_issues(ds, folds=3, hard=0, network=False)
    merged = [i for i in report["label_issues"] if i["relabel_entities"] is not None]
    refused = [i for i in report["label_issues"] if i["relabel_refused"]]
    assert merged and refused and len(merged) + len(refused) == len(report["label_issues"])
    missed = [  # given entities the CRF did not find, in texts whose relabel keeps them
        (i["row"], s)
        for i in merged
        for s in i["entities"]
        if s not in i["suggested_entities"] and s in i["relabel_entities"]
    ]
    assert missed, "no flagged text has an entity that only the merge keeps"

    child = api.fix_dataset(ds, report, relabel=True, rows=[i["row"] for i in merged], name="noisy-fixed")
    by_row = {i["row"]: i for i in merged}
    changes = [json.loads(line) for line in (child.path / CHANGES_FILE).read_text().splitlines()]
    assert {c["parent_row"] for c in changes} == set(by_row)
    for change in changes:
        issue = by_row[change["parent_row"]]
        assert change["new_label"] == issue["relabel_entities"]
        assert (
            change["reason"].startswith("label issue: retagged ")
            and issue["relabel_changes"][0] in change["reason"]
        )
    texts = {r["text"]: r["label"] for r in child.rows()}
    for row, span in missed:
        assert span in texts[ds.rows()[row]["text"]]

    with pytest.raises(ConfigError, match=f"row\\(s\\) \\[{refused[0]['row']}\\] .* cannot be relabelled"):
        api.fix_dataset(ds, report, relabel=True, rows=[refused[0]["row"]])
    dropped = api.fix_dataset(ds, report, drop=True, rows=[refused[0]["row"]], name="noisy-dropped")
    assert dropped.manifest["changes"]["dropped"] == 1  # a person's call: drop it, or correct it by hand


def test_a_short_text_with_one_date_character_changed_is_a_near_copy():
    """``１２月３０日`` for ``１２月３１日`` in a 46-character sentence: 0.94 in the character n-grams as
    written, a near copy once digits (ASCII or full-width) read alike."""
    data = peoples_daily(120)
    rows = [
        {"text": t, "label": e, "split": "test" if n % 6 == 0 else "train"} for n, (t, e) in enumerate(data)
    ]
    original = rows[3]["text"]
    assert original.startswith("１２月３１日，中共中央总书记") and rows[3]["split"] == "train"
    rows.append({"text": original.replace("３１日", "３０日"), "label": rows[3]["label"], "split": "test"})
    found = near_copies(rows, threshold=0.95)
    assert [(d["row"], d["match_row"]) for d in found] == [(len(rows) - 1, 3)]
    assert near_copies(rows[:-1], threshold=0.95) == []  # no other test text is taken for a copy
