"""``aimass data issues`` and ``aimass data fix`` as a user runs them, on a slice of BBC News with
four labels flipped and one test article that is a near-copy of a training article."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import bbc_sample

FLIPPED = (5, 21, 40, 66)  # row numbers in the CSV, given the next topic's label


def aimass(env, *args, ok=True):
    result = subprocess.run(
        [sys.executable, "-m", "aimass", *args], env=env, capture_output=True, text=True, timeout=600
    )
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("issues-home")
    return {**os.environ, "AIMASS_HOME": str(home), "COLUMNS": "200"}


@pytest.fixture(scope="module")
def noisy_csv(tmp_path_factory) -> Path:
    texts, labels = bbc_sample()
    topics = sorted(set(labels))
    for i in FLIPPED:
        labels[i] = topics[(topics.index(labels[i]) + 1) % len(topics)]
    splits = ["train" if i % 10 < 7 else ("valid" if i % 10 == 7 else "test") for i in range(len(texts))]
    texts.append(texts[0].replace(".", ";", 1))  # a near-copy of a training article, in test
    labels.append(labels[0])
    splits.append("test")
    path = tmp_path_factory.mktemp("issues-data") / "news.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "split"])
        writer.writerows(zip(texts, labels, splits))
    return path


@pytest.fixture(scope="module")
def found(env, noisy_csv, tmp_path_factory):
    imported = json.loads(aimass(env, "data", "import", str(noisy_csv), "--name", "news", "--json").stdout)
    out = tmp_path_factory.mktemp("issues-report")
    report = json.loads(aimass(env, "data", "issues", "news", "--out", str(out), "--json").stdout)
    return imported, report


def test_issues_finds_the_flipped_labels_and_the_near_copy(found, noisy_csv):
    imported, report = found
    assert report["dataset"]["id"] == imported["id"] and report["counts"]["rows"] == 81
    texts = [row[0] for row in csv.reader(noisy_csv.open(encoding="utf-8"))][1:]
    flagged = {issue["item"][:100] for issue in report["label_issues"]}
    hits = sum(texts[i][:100] in flagged for i in FLIPPED)
    assert hits >= 3 and report["counts"]["label_issues"] <= 8, report["label_issues"]
    dup = [d for d in report["near_duplicates"] if d["split"] == "test" and d["similarity"] >= 0.99]
    assert dup and dup[0]["match_item"][:100] == texts[0][:100]
    assert report["hard_examples"] and report["method"]["probabilities"] == "cross-validation"
    assert Path(report["files"]["csv"]).read_text().startswith("issue,row,split,label,suggested,score,item")
    assert json.loads(Path(report["files"]["json"]).read_text())["counts"] == report["counts"]


def test_issues_prints_tables_and_the_next_command(env, found):
    printed = aimass(env, "data", "issues", "news", "--top", "3").stdout
    assert "label issues" in printed and "near duplicates" in printed and "Report:" in printed
    assert "aimass data fix" in printed


def test_fix_makes_a_new_version_that_names_its_parent(env, found):
    imported, report = found
    args = ("data", "fix", "news", report["files"]["json"], "--relabel", "--duplicates", "--json")
    child = json.loads(aimass(env, *args).stdout)
    assert child["id"] != imported["id"]
    assert child["parent"]["id"] == imported["id"]
    assert child["changes"]["relabelled"] == report["counts"]["label_issues"]
    assert child["changes"]["dropped"] == report["counts"]["near_duplicates"]
    changes = [json.loads(line) for line in (Path(child["path"]) / "changes.jsonl").read_text().splitlines()]
    assert {c["parent_row"] for c in changes if c["action"] == "relabel"} == {
        i["row"] for i in report["label_issues"]
    }
    shown = json.loads(aimass(env, "data", "show", "news", "--json").stdout)
    assert shown["id"] == child["id"]  # the name now loads the newest version
    assert json.loads(aimass(env, "data", "show", imported["id"], "--json").stdout)["rows"] == 81
    again = aimass(env, "data", "fix", "news", report["files"]["json"], "--drop", ok=False)
    assert again.returncode == 2 and "was made for dataset" in again.stderr and "Hint" in again.stderr
