"""Named entities: import (spans, tokens and tags, CoNLL) with every bad row rejected by line, the CRF
tagger against its lexical baseline, evaluation, the CLI, bulk tagging, REST and the console."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aimass import api
from aimass.cli.main import app
from aimass.data.bundled import peoples_daily
from aimass.errors import ConfigError, DataError
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.tasks import sequence as seq
from aimass.tasks.token_classification import EntityTagger, entity_scores

SENTENCE = "新华社北京一月一日电，江泽民在人民大会堂发表讲话。"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def rejects_of(ds) -> dict[int, dict]:
    return {r["line"]: r for r in map(json.loads, ds.rejects_path.read_text().splitlines())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """600 sentences of the People's Daily (PER, LOC, ORG) imported and trained once: the path
    ``aimass train --data news.jsonl`` takes, the task picked from the data."""
    root = tmp_path_factory.mktemp("ner")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIMASS_HOME", str(root / "home"))
        rows = [{"text": t, "entities": e} for t, e in peoples_daily(600)]
        ds = api.import_dataset(write_jsonl(root / "news.jsonl", rows), name="news")
        result = api.train_model(None, ds.id)
    return root, ds, result


def test_span_rows_import_and_every_bad_row_is_rejected_with_its_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    good = [{"text": t, "entities": e} for t, e in peoples_daily(40)]
    bad = [
        {"text": "江泽民", "entities": [[0, 9, "PER"]]},  # line 41: outside the text
        {"text": "江泽民在北京", "entities": [[0, 3, "PER"], [2, 4, "LOC"]]},  # 42: overlapping
        {"text": "江泽民", "entities": [[0, 3, ""]]},  # 43: no label
        {"text": "", "entities": []},  # 44: no text
        {"tokens": ["Li", "Na"], "tags": ["B-PER"]},  # 45: lengths differ
        {"tokens": ["Li", "Na"], "tags": ["B-PER", "PERSON"]},  # 46: not a tag
        {"text": "江泽民", "entities": [[0, 3, "PER"]], "split": "holdout"},  # 47: unknown split
        {"text": "江泽民", "entities": [["0", 3, "PER"]]},  # 48: start is not a number
        good[0],  # 49: a duplicate of line 1
        {"text": good[1]["text"], "entities": []},  # 50: line 2's text with other entities: both rejected
        {"text": "Carol  met Dave", "entities": [[5, 7, "PER"]]},  # 51: spaces only (not dropped unseen)
        {"text": "Erin met Frank", "entities": [[4, 4, "PER"]]},  # 52: an empty span
    ]
    edges = [{"text": "Mr Li Na spoke", "entities": [{"start": 2, "end": 8, "label": "PER"}]}]  # " Li Na"
    inside = [{"text": "Londoners cheered", "entities": [[0, 6, "LOC"]]}]  # "London" inside a word
    ds = api.import_dataset(write_jsonl(tmp_path / "news.jsonl", good + bad + edges + inside))
    assert ds.kind == "entities" and ds.classes == ["LOC", "ORG", "PER"]
    rejects = rejects_of(ds)
    assert sorted(rejects) == [2, *range(41, 53)]
    assert rejects[49]["reason"] == "duplicate of line 1" and rejects[49]["kind"] == "duplicate"
    assert rejects[2]["reason"].endswith("other entities at line 50") and "line 2" in rejects[50]["reason"]
    assert "outside the text (3 characters)" in rejects[41]["reason"]
    assert "overlapping entities [0, 3, 'PER'] and [2, 4, 'LOC']" in rejects[42]["reason"]
    assert "no label" in rejects[43]["reason"] and "no text" in rejects[44]["reason"]
    assert rejects[45]["reason"] == "2 tokens but 1 tags"
    assert "tags[1] is 'PERSON'" in rejects[46]["reason"]
    assert "split 'holdout'" in rejects[47]["reason"] and "not whole numbers" in rejects[48]["reason"]
    assert rejects[51]["reason"] == "entities[0] [5, 7] holds only spaces ('  '): it marks no word"
    assert (
        rejects[52]["reason"] == "entities[0] [4, 4] is an empty span (start == end): it marks no character"
    )
    assert len(ds.rows()) + len(rejects) == len(good + bad + edges + inside)  # nothing dropped unreported
    stored = {r["text"]: r["label"] for r in ds.rows()}
    assert stored["Mr Li Na spoke"] == [[3, 8, "PER"]]  # trimmed, and said so
    warnings = " ".join(ds.manifest["warnings"])
    assert "1 entity span(s) had spaces at an edge" in warnings
    assert "1 entity span(s) start or end inside a word" in warnings
    only_train = [{**row, "split": "train"} for row in good]
    with pytest.raises(DataError, match="every row names its split, and none is test"):
        api.import_dataset(write_jsonl(tmp_path / "train_only.jsonl", only_train))
    with pytest.raises(ConfigError, match="apply to text tables, not to entity rows"):
        api.import_dataset(tmp_path / "news.jsonl", text_col="text")


def test_tokens_and_tags_in_every_scheme_and_conll_files_read_as_the_same_spans(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    schemes = {
        "BIO": ["B-PER", "I-PER", "O", "B-LOC", "O"],
        "IOB1": ["I-PER", "I-PER", "O", "I-LOC", "O"],
        "BIOES": ["B-PER", "E-PER", "O", "S-LOC", "O"],
        "BILOU": ["B-PER", "L-PER", "O", "U-LOC", "O"],
    }
    tokens = ["Li", "Na", "visited", "Paris", "on", "day"]  # and a number: 12 different rows
    for name, tags in schemes.items():
        rows = [{"tokens": [*tokens, str(i)], "tags": [*tags, "O", "O"]} for i in range(12)]
        ds = api.import_dataset(write_jsonl(tmp_path / f"{name}.jsonl", rows), name=name)
        assert ds.rows()[0]["text"] == "Li Na visited Paris on day 0"
        assert ds.rows()[0]["label"] == [[0, 5, "PER"], [14, 19, "LOC"]], name
    chinese = [
        {"tokens": ["江", "泽民", "在", "北京", str(i)], "ner_tags": ["B-PER", "I-PER", "O", "B-LOC", "O"]}
        for i in range(12)
    ]
    ds = api.import_dataset(write_jsonl(tmp_path / "zh.jsonl", chinese))
    assert ds.rows()[0]["text"] == "江泽民在北京 0" and ds.rows()[0]["label"] == [
        [0, 3, "PER"],
        [4, 6, "LOC"],
    ]

    head = "-DOCSTART- -X- O O\n\n"
    sentences = "".join(
        f"Li NNP B-PER\nNa NNP I-PER\nvisited VBD O\nParis NNP B-LOC\n{i} CD O\n\n" for i in range(12)
    )
    broken = "Oops\nParis NNP B-LOC\n\n"  # line 1 of the sentence starting at line 75
    conll = tmp_path / "train.conll"
    conll.write_text(head + sentences + broken, encoding="utf-8")
    ds = api.import_dataset(conll)
    assert ds.kind == "entities" and ds.manifest["format"] == "conll"
    assert len(ds.rows()) == 12 and ds.rows()[0]["label"] == [[0, 5, "PER"], [14, 19, "LOC"]]
    [reject] = rejects_of(ds).values()
    assert reject == {**reject, "line": 75, "reason": "line 75 has no tag column", "kind": "malformed"}
    with pytest.raises(DataError, match="at least 10 rows and one entity"):
        none = [{"tokens": ["a", str(i)], "tags": ["O", "O"]} for i in range(12)]
        api.import_dataset(write_jsonl(tmp_path / "none.jsonl", none))


def test_the_numpy_decoder_agrees_with_crfsuites_own_tagger(tmp_path):
    """The weights read back from crfsuite, decoded here (Viterbi), tag as crfsuite's tagger does;
    the marginals are probabilities."""
    pycrfsuite = pytest.importorskip("pycrfsuite")
    data = peoples_daily(150)
    rows = [(seq.lexical(t), None, seq.bio_tags(t, e)) for t, e in data[:100]]
    weights = seq.train_crf(rows, c1=0.1, c2=0.1, max_iterations=30)
    trainer = pycrfsuite.Trainer(verbose=False)
    for lex, _, tags in rows:
        trainer.append(pycrfsuite.ItemSequence([{f"h{k}": 1.0 for k in ids.tolist()} for ids in lex]), tags)
    trainer.set_params({"c1": 0.1, "c2": 0.1, "max_iterations": 30})
    trainer.train(str(tmp_path / "m.crfsuite"))
    tagger = pycrfsuite.Tagger()
    tagger.open(str(tmp_path / "m.crfsuite"))
    for text, _ in data[100:]:
        lex = seq.lexical(text)
        emissions = weights.emissions(lex, None)
        ours = [weights.tags[k] for k in seq.viterbi(emissions, weights.transitions)]
        items = pycrfsuite.ItemSequence([{f"h{k}": 1.0 for k in ids.tolist()} for ids in lex])
        assert ours == tagger.tag(items), text
        probs = seq.marginals(emissions, weights.transitions)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_entity_scores_count_exact_spans_only():
    truth = [[[0, 3, "PER"], [4, 6, "LOC"]], [[0, 2, "ORG"]]]
    predicted = [[[0, 3, "PER"], [4, 7, "LOC"]], [[0, 2, "ORG"], [3, 4, "LOC"]]]
    scores = entity_scores(truth, predicted, ["LOC", "ORG", "PER"])
    assert scores["precision"] == pytest.approx(2 / 4) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["per_class"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_training_picks_the_better_candidate_and_the_model_finds_entities(trained, monkeypatch):
    root, ds, result = trained
    monkeypatch.setenv("AIMASS_HOME", str(root / "home"))
    assert api.load(result["model"]).task == "token-classification"
    metrics = result["metrics"]
    assert metrics["micro_f1"] >= 0.75, metrics  # measured 0.85 on these 120 test sentences
    candidates = result["portfolio"]["candidates"]
    assert set(candidates) == {"network", "crf-lexical"}
    best = max(candidates, key=lambda n: (candidates[n]["micro_f1"], n == "network"))
    assert result["portfolio"]["chosen"] == best
    model = api.load(result["model"])
    found = model.predict_entities([SENTENCE])[0]
    assert [(e["text"], e["label"]) for e in found] == [("新华社", "ORG"), ("北京", "LOC"), ("江泽民", "PER")]
    assert all(0.5 < e["score"] <= 1 and SENTENCE[e["start"] : e["end"]] == e["text"] for e in found)
    report = model.evaluate(api.load_dataset(ds.id), "test")
    assert report["micro_f1"] == pytest.approx(metrics["micro_f1"]) and report["n"] == len(ds.inputs("test"))
    assert set(report["per_class"]) == {"LOC", "ORG", "PER"}
    assert report["top_errors"] and {"missed", "wrong", "text"} <= set(report["top_errors"][0])
    folder = root / "saved"
    model.save(folder)
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pt", ".crfsuite")]
    texts = ds.inputs("test")[:20]
    assert EntityTagger.load(folder).predict(texts) == model.predict(texts)


def test_cli_rest_console_and_bulk_tagging_answer_the_same_entities(trained, tmp_path, monkeypatch):
    root, ds, result = trained
    monkeypatch.setenv("AIMASS_HOME", str(root / "home"))
    model = api.load(result["model"])
    want = model.predict_entities([SENTENCE, "今天天气很好。"])
    runner = CliRunner()
    out = runner.invoke(app, ["evaluate", result["model"]])
    assert out.exit_code == 0, out.output
    assert "entity micro-F1" in out.output and "crf-lexical" in out.output and "most errors" in out.output
    out = runner.invoke(app, ["predict", result["model"], SENTENCE, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["predictions"][0]["entities"] == want[0]
    (tmp_path / "speech.txt").write_text(SENTENCE, encoding="utf-8")  # a document stands for its text
    out = runner.invoke(app, ["predict", result["model"], str(tmp_path / "speech.txt"), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["predictions"][0]["entities"] == want[0], out.output
    held = [{"text": t, "entities": e} for t, e in peoples_daily(700)[600:]]  # sentences it never saw
    out = runner.invoke(
        app,
        ["evaluate", result["model"], "--data", str(write_jsonl(tmp_path / "held.jsonl", held)), "--json"],
    )
    assert out.exit_code == 0, out.output
    assert (
        json.loads(out.output)["n"] == len(held) and json.loads(out.output)["micro_f1"] > 0.3
    )  # 0.45: other articles

    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text(f"text\n{SENTENCE}\n今天天气很好。\n\n", encoding="utf-8")
    out = runner.invoke(
        app, ["predict", result["model"], "--file", str(unlabelled), "--output", str(tmp_path / "o.csv")]
    )
    assert out.exit_code == 0, out.output
    with open(tmp_path / "o.csv", encoding="utf-8") as fh:
        tagged = [json.loads(row["entities"]) for row in csv.DictReader(fh)]
    assert tagged == want

    with TestClient(create_app([result["model"]], open_predict=True)) as client:
        body = client.post("/v1/models/news/predict", json={"inputs": [SENTENCE, "今天天气很好。"]}).json()
        empty = client.post("/v1/models/news/predict", json={"inputs": [" "]})
        form = client.get("/console/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        client.post("/console/signin", data={"csrf": csrf, "key": auth.admin_token()})
        listed = client.get("/console/datasets").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/try/news").text).group(1)
        page = client.post("/console/try/news", data={"csrf": csrf, "text": SENTENCE}).text
    assert [p["entities"] for p in body["predictions"]] == want
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "config_error"
    assert re.search(rf"<code>{ds.id[:16]}</code></td><td>named entities</td>", listed)
    assert '<mark title="PER ' in page and "江泽民 <small>PER</small></mark>" in page


def test_a_tagger_exports_as_onnx_and_its_predict_py_finds_the_same_entities(trained, tmp_path, monkeypatch):
    """``aimass export --format onnx``: the encoder as ONNX beside the CRF's arrays; predict.py, run in
    a fresh interpreter with aimass out of reach, finds what aimass finds."""
    root, ds, result = trained
    monkeypatch.setenv("AIMASS_HOME", str(root / "home"))
    model = api.load(result["model"])
    out = CliRunner().invoke(
        app, ["export", result["model"], "--format", "onnx", "--out", str(tmp_path / "ner")]
    )
    assert out.exit_code == 0, out.output
    folder = tmp_path / "ner"
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["check"]["predict_py_same_entities"] == 1.0 and manifest["check"]["entities_found"] >= 3
    assert manifest["check"]["max_abs_diff_score"] < 1e-3
    network = model.chosen_ == "network"
    assert (folder / "model.onnx").is_file() == network and (folder / "tokenizer.json").is_file() == network
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pt", ".crfsuite", ".safetensors")]
    texts = ds.inputs("test")[:30]
    alone = tmp_path / "alone"  # the folder copied where nothing of aimass is importable
    shutil.copytree(folder, alone)
    (alone / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run(
        [sys.executable, "-I", "predict.py", "--file", "texts.json"],
        cwd=alone,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "aimass" not in (alone / "predict.py").read_text().split("# from units.py")[0].split('"""')[-1]
    lines = [json.loads(line) for line in ran.stdout.splitlines()]
    assert [line["input"] for line in lines] == texts
    assert [[(e["start"], e["end"], e["label"]) for e in line["entities"]] for line in lines] == [
        [tuple(x) for x in found] for found in model.predict(texts)
    ]


def test_auto_takes_entity_data_from_file_to_a_registered_tagger(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    from aimass.autolearn import auto
    from aimass.autolearn.run import detect_task

    rows = [  # the units a Chinese tagger sees: characters, runs of digits, punctuation
        {"tokens": [t[a:b] for a, b in seq.units(t)], "tags": seq.bio_tags(t, e)}
        for t, e in peoples_daily(150)
    ]
    path = write_jsonl(tmp_path / "tagged.jsonl", rows)
    task, why = detect_task(path)
    assert task == "token-classification" and "tokens and tags" in why
    report = auto(path, time_budget="5m", progress=False)
    assert report["dataset"]["rejects"] == 0
    assert report["task"] == "token-classification" and report["metrics"]["micro_f1"] > 0.3
    assert {"precision", "recall"} <= set(report["metrics"])
    assert report["compression"]["method"] is None and "serves as it is" in report["compression"]["reason"]
    final = next(c for c in report["choices"] if c["what"] == "final fit")
    assert final["value"]["chosen"] in ("network", "crf-lexical") and "entity micro-F1" in final["why"]


def test_the_console_start_page_takes_a_conll_upload_to_the_entity_task(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    conll = "".join(
        "".join(f"{t[a:b]} {tag}\n" for (a, b), tag in zip(seq.units(t), seq.bio_tags(t, e))) + "\n"
        for t, e in peoples_daily(30)
    )
    with TestClient(create_app([])) as client:
        form = client.get("/console/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        client.post("/console/signin", data={"csrf": csrf, "key": auth.admin_token()})
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/").text).group(1)
        upload = {"file": ("news.conll", conll.encode(), "text/plain")}
        page = client.post("/console/start/upload", data={"csrf": csrf}, files=upload)
    assert page.status_code == 200 and "/console/start/" in str(page.url)
    text = re.sub(r"\s+", " ", re.sub("<[^>]+>", " ", page.text))
    assert "30 rows kept, 0 rejected" in text and "Task: token-classification" in text
    assert "texts with named entities" in text and "no int8 copy" in text


def test_annotation_errors_are_found_out_of_fold_and_fixed_as_a_new_version(tmp_path, monkeypatch):
    """400 People's Daily sentences, 12 of them with an entity given the wrong type: ``data issues``
    flags most of them (a CRF cross-validated on the other texts doubts their tags), shows the
    entities it would give, and ``data fix --relabel`` stores a child version with the given entities
    whose doubted units are retagged."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    rows = [{"text": t, "entities": [list(s) for s in e]} for t, e in peoples_daily(400)]
    swap = {"PER": "LOC", "LOC": "ORG", "ORG": "PER"}
    wrong = [i for i, r in enumerate(rows) if r["entities"]][3::20][:12]
    truth = {i: [list(s) for s in rows[i]["entities"]] for i in wrong}
    for i in wrong:
        rows[i]["entities"][0][2] = swap[rows[i]["entities"][0][2]]
    ds = api.import_dataset(write_jsonl(tmp_path / "noisy.jsonl", rows), name="noisy-ner")
    stored = {r["text"]: n for n, r in enumerate(ds.rows())}
    changed = {stored[rows[i]["text"]]: truth[i] for i in wrong}

    table = CliRunner().invoke(app, ["data", "issues", ds.id, "--top", "3", "--no-network"])
    assert table.exit_code == 0, table.output[-2000:]
    printed = " ".join(table.output.split())  # the terminal's width wraps lines anywhere
    assert "label issues (first 3 of" in printed and "Act on it: aimass data fix" in printed
    assert "out-of-fold tag accuracy" in printed and "entity micro-F1" in printed
    lexical = int(re.search(r"(\d+) likely label", printed).group(1))
    out = CliRunner().invoke(app, ["data", "issues", ds.id, "--json"])  # the encoder's vectors too
    assert out.exit_code == 0, out.output[-2000:]
    report = json.loads(out.stdout)
    assert report["method"]["network"] and "multilingual-e5-small" in report["method"]["probabilities"]
    assert report["dataset"]["kind"] == "entities" and "BIO tag" in report["method"]["detector"]
    flagged = {i["row"]: i for i in report["label_issues"]}
    found = sorted(set(changed) & set(flagged))
    assert len(found) >= 9 and len(flagged) <= 60, (len(found), len(flagged))  # 11 of 12 among 36
    assert len(flagged) < lexical  # the lexical CRF alone: 45 flagged
    restored = [r for r in found if sorted(flagged[r]["relabel_entities"] or []) == sorted(changed[r])]
    assert len(restored) >= 6, restored  # 9: the other flagged ones' suggestions differ elsewhere too
    one = flagged[found[0]]
    assert one["units"] and all(u["given"] != u["suggested"] for u in one["units"])
    assert "/" in one["label"] and one["item"] == ds.rows()[found[0]]["text"][:200]
    qualities = [i["self_confidence"] for i in report["label_issues"]]
    assert qualities == sorted(qualities)  # the least likely tag first
    assert report["hard_examples"] and not set(h["row"] for h in report["hard_examples"]) & set(flagged)
    assert 0.9 < report["accuracy"] <= 1
    listed = list(csv.reader(Path(report["files"]["csv"]).read_text(encoding="utf-8").splitlines()))
    assert sum(r[0] == "label" for r in listed) == len(flagged)

    fixed = CliRunner().invoke(
        app, ["data", "fix", ds.id, report["files"]["json"], "--relabel", *(f"--row={r}" for r in restored)]
    )
    assert fixed.exit_code == 0, fixed.output[-2000:]
    child = api.load_dataset("noisy-ner")
    assert child.manifest["parent"]["id"] == ds.id and child.manifest["changes"]["relabelled"] == len(
        restored
    )
    assert all(child.rows()[r]["label"] == changed[r] for r in restored)  # each got its true types back
    assert child.manifest["counts"]["total"] == ds.manifest["counts"]["total"]
    dropped = api.fix_dataset(ds, report, drop=True, name="noisy-ner-dropped")
    assert dropped.manifest["counts"]["total"] == len(ds.rows()) - len(flagged)

    from aimass.data.revise import revise_dataset

    for bad, message in (
        ([[0, 999, "PER"]], "outside the text"),
        ([[0, 2, "PER"], [1, 3, "LOC"]], "overlapping"),
        ([[0, 2, "DRUG"]], "unknown label"),
    ):
        with pytest.raises(ConfigError, match=message):
            revise_dataset(ds, relabel={found[0]: (bad, "by hand")})
    with pytest.raises(ConfigError, match="--model is not used"):
        api.dataset_issues(ds, model="news:1")

    client = TestClient(create_app([]))
    rest = client.get(
        f"/v1/datasets/{ds.id}/issues", headers={"Authorization": f"Bearer {auth.admin_token()}"}
    )
    assert rest.status_code == 200 and rest.json()["counts"]["label_issues"] == len(flagged)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/signin").text).group(1)
    client.post("/console/signin", data={"csrf": csrf, "key": auth.admin_token()})
    page = client.get(f"/console/datasets/{ds.id}").text
    assert "Likely label errors" in page and f'name="row" value="{found[0]}"' in page
    assert f"entity micro-F1 {report['micro_f1']}" in page
    assert one["suggested"] in page  # the entities found, as a reviewer reads them


def test_a_version_continues_on_new_texts_with_a_new_label(tmp_path, monkeypatch):
    """The parent never saw ORG; ``train --from`` refits on the new texts (which have it) plus a
    replay of the old ones, and reports the child on the old test split beside the parent."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    data = peoples_daily(900)
    old = [{"text": t, "entities": [s for s in e if s[2] != "ORG"]} for t, e in data[:450]]
    new = [{"text": t, "entities": e} for t, e in data[450:]]
    old_ds = api.import_dataset(write_jsonl(tmp_path / "old.jsonl", old), name="pd-old")
    new_ds = api.import_dataset(write_jsonl(tmp_path / "new.jsonl", new), name="pd-new")
    parent = api.train_model(None, old_ds.id, name="pd", dims=0)
    out = CliRunner().invoke(
        app, ["train", "--from", parent["model"], "--data", new_ds.id, "--replay", "80", "--json"]
    )
    assert out.exit_code == 0, out.output[-2000:]
    child = json.loads(out.stdout)
    assert child["model"] == "pd:2" and child["parent"] == "pd:1"
    assert child["replay"]["per_class"] == 80 and 80 <= child["replay"]["rows"] <= 240
    assert "ORG" in child["metrics"]["per_class"] and "ORG" not in parent["metrics"]["per_class"]
    assert child["old_test"]["metric"] == "micro_f1" and child["old_test"]["n"] == len(old_ds.labels("test"))
    assert child["old_test"]["parent"] == parent["metrics"]["micro_f1"]
    assert child["forgetting"] <= 5, child["old_test"]  # 0.82 -> 0.86: more texts of the same kinds
    model = api.load("pd:2")
    assert model.get_params()["dims"] == 0 and model.labels_ == ["LOC", "ORG", "PER"]
    texts = [r["text"] for r in new_ds.rows("train") if any(s[2] == "ORG" for s in r["label"])]
    assert (
        sum(e["label"] == "ORG" for found in model.predict_entities(texts) for e in found) >= len(texts) // 2
    )

    alone = api.continue_model(parent["model"], new_ds.id, replay=0)
    assert alone["replay"]["rows"] == 0 and alone["model"] == "pd:3"
    again = api.continue_model(parent["model"], old_ds.id, replay=80)  # its own texts: none twice
    assert again["replay"]["rows"] == 0 and again["replay"]["valid_rows"] == 0


def test_a_test_text_that_nearly_copies_a_training_text_is_reported_and_dropped(tmp_path, monkeypatch):
    """Exact repeats are rejected at import; a near copy (one character added) across splits is
    what ``data issues`` reports, and ``data fix --duplicates`` drops it."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    data = [(t, e) for t, e in peoples_daily(300) if len(t) > 30][:60]
    rows = [{"text": t, "entities": e, "split": "train"} for t, e in data[:50]]
    rows += [{"text": t, "entities": e, "split": "test"} for t, e in data[50:]]
    copied = data[7][0] + "啊"
    rows.append({"text": copied, "entities": data[7][1], "split": "test"})
    ds = api.import_dataset(write_jsonl(tmp_path / "near.jsonl", rows), name="near")
    report = api.dataset_issues(ds, folds=3, hard=0, network=False)
    stored = {r["text"]: i for i, r in enumerate(ds.rows())}
    (dup,) = report["near_duplicates"]
    assert (dup["row"], dup["match_row"]) == (stored[copied], stored[data[7][0]])
    assert dup["split"] == "test" and dup["similarity"] >= 0.95 and "/" in dup["label"]
    assert report["counts"]["near_duplicates"] == 1 and "TF-IDF" in report["method"]["near_duplicates"]
    fixed = api.fix_dataset(ds, report, duplicates=True)
    assert copied not in fixed.inputs() and fixed.manifest["changes"]["dropped"] == 1


def test_the_encoder_units_are_embedded_once_per_data(tmp_path, monkeypatch):
    """A fit and an issues run read the units' vectors from the feature cache the first one wrote:
    a second run on the same texts does not run the encoder again (prediction never writes there)."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    texts = [t for t, _ in peoples_daily(12)]
    first = EntityTagger().unit_features(texts)
    embedded = []
    real = EntityTagger._embed_units
    monkeypatch.setattr(
        EntityTagger, "_embed_units", lambda self, *a: embedded.append(len(a[0])) or real(self, *a)
    )
    again = EntityTagger().unit_features(texts)
    assert embedded == [] and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    EntityTagger().unit_features(texts[:5])  # other texts: embedded
    assert embedded == [5]


def test_a_time_budget_skips_the_baseline_once_spent(tmp_path, monkeypatch):
    """``aimass train --time-budget`` is taken (not "has no option 'time_budget'"): the network
    candidate is fitted whatever the budget, the lexical baseline only while some of it is left."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    rows = [{"text": t, "entities": e} for t, e in peoples_daily(120)]
    ds = api.import_dataset(write_jsonl(tmp_path / "news.jsonl", rows), name="news")
    out = CliRunner().invoke(app, ["train", "--data", ds.id, "--time-budget", "0.01s", "--json"])
    assert out.exit_code == 0, out.output[-2000:]
    result = json.loads(out.stdout)
    assert (
        list(result["portfolio"]["candidates"]) == ["network"] and result["portfolio"]["chosen"] == "network"
    )
    assert result["stages"]["crf-lexical"]["skipped"] == "time budget: 0.01s spent by the network candidate"
    lexical = api.train_model(None, ds.id, name="lexical", dims=0, time_budget="0.01s")
    assert list(lexical["portfolio"]["candidates"]) == ["crf-lexical"]  # the only candidate: always fitted


def test_a_held_out_entity_file_of_three_rows_is_read_not_stored(tmp_path, monkeypatch):
    """``aimass evaluate NER --data file.jsonl``: three rows are a test set (an import needs 10); a
    malformed line is left out; nothing is stored."""
    from aimass.data import list_datasets
    from aimass.tasks.token_classification import TokenClassification

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    rows = [
        {"text": "Alice went to Paris.", "entities": [[0, 5, "PER"], [14, 19, "LOC"]]},
        {"text": "Bob stayed home.", "entities": [[0, 3, "PER"]]},
        {"tokens": ["Carol", "met", "Dan"], "tags": ["B-PER", "O", "B-PER"]},
        {"text": "broken", "entities": [[0, 99, "PER"]]},
    ]
    path = tmp_path / "held_out.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    texts, spans = TokenClassification.eval_data(path, None)
    assert texts == ["Alice went to Paris.", "Bob stayed home.", "Carol met Dan"]
    assert [[tuple(s)[2] for s in row] for row in spans] == [["PER", "LOC"], ["PER"], ["PER", "PER"]]
    assert list_datasets() == []
    path.write_text(json.dumps(rows[-1]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="No usable row"):
        TokenClassification.eval_data(path, None)
