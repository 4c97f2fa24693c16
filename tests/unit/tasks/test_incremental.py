"""Incremental training: ``aimass train --from NAME:VERSION --data NEW`` continues a registered
text classifier on new data with a class it never saw, replaying a sample of its old data.

One parent (four BBC topics) and one child (``tech`` arrives, plus more of the old topics) are
trained once for the module, the child through the CLI; the tests read what they registered.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.conftest import bbc_sample, write_csv
from typer.testing import CliRunner

from aimass import api, jobs
from aimass.cli import app
from aimass.errors import ConfigError, NotFoundError
from aimass.store.db import ModelVersionRecord, session

FAST = {"backbone": "minilm-l6", "max_length": 32, "unfreeze": 0, "baselines": False, "time_budget": 60}
SEEN, LATER = 16, 8  # articles per topic in the old data, and more of each in the new
REPLAY = 5


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """(parent summary, child summary from the CLI, old dataset, new dataset)."""
    texts, labels = bbc_sample(per_class=SEEN + LATER, chars=500)
    rows = list(zip(texts, labels))
    first = [r for i, r in enumerate(rows) if r[1] != "tech" and i % (SEEN + LATER) < SEEN]
    second = [r for i, r in enumerate(rows) if r[1] == "tech" or i % (SEEN + LATER) >= SEEN]
    folder = tmp_path_factory.mktemp("incremental")
    old = api.import_dataset(write_csv(folder / "old.csv", first), name="incr-old")
    new = api.import_dataset(write_csv(folder / "new.csv", second), name="incr-new")
    parent = api.train_model("text-classification", old.id, name="incr", progress=False, **FAST)
    args = ["train", "--from", parent["model"], "--data", new.id, "--replay", str(REPLAY), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:]
    return parent, json.loads(result.stdout), old, new


def test_the_cli_registers_a_child_that_names_its_parent_and_its_scores(lineage):
    parent, child, old, new = lineage
    assert child["model"] == "incr:2" and child["parent"] == parent["model"] == "incr:1"
    shown = api.show_model(child["model"])
    assert shown["parent"] == "incr:1" and shown["dataset_digest"] == new.digest
    metrics, report = shown["metrics"], shown["evaluation"]
    for scores in (metrics, report, child):
        assert scores["replay"]["per_class"] == REPLAY
        assert scores["replay"]["rows"] == REPLAY * 4  # every old topic has more than REPLAY rows
        assert scores["old_test"]["n"] == len(old.labels("test"))
        assert scores["new_test"]["n"] == len(new.labels("test")) == metrics["n"]
        assert scores["all_test"]["n"] == scores["old_test"]["n"] + scores["new_test"]["n"]
    old_test = metrics["old_test"]
    assert metrics["forgetting"] == pytest.approx(100 * (old_test["parent"] - old_test["child"]), abs=0.01)
    assert old_test["parent"] == pytest.approx(api.evaluate("incr:1", old.id)["accuracy"])
    assert old_test["child"] == pytest.approx(api.evaluate("incr:2", old.id)["accuracy"])
    assert metrics["new_test"]["child"] == metrics["accuracy"]
    assert child["stages"]["continue"]["epochs"] >= 1


def test_the_head_grows_for_the_new_class_and_keeps_the_old_ones(lineage):
    parent, child, old, new = lineage
    before, after = api.load(parent["model"]), api.load(child["model"])
    assert after.classes_ == [*before.classes_, "tech"]
    assert after.net_.head.dense.weight.shape[0] == 5
    old_vocab, vocab = before.lexical_.vectorizer.vocabulary_, after.lexical_.vectorizer.vocabulary_
    assert len(vocab) > len(old_vocab) and all(vocab[t] == i for t, i in old_vocab.items())
    # the old topics: the child agrees with its parent on the parent's own training texts
    seen = old.texts("train")
    agree = np.mean([a == b for a, b in zip(before.predict(seen), after.predict(seen))])
    assert agree >= 0.9, agree
    # the new topic: the child names it; the parent could not
    tech = [t for t, label in zip(new.texts("test"), new.labels("test")) if label == "tech"]
    assert tech and np.mean([p == "tech" for p in after.predict(tech)]) >= 0.5


def test_bad_continuations_are_clear_errors(lineage):
    parent, _, _, new = lineage
    with pytest.raises(NotFoundError, match="No model 'incr:99'"):
        api.train_model(None, new.id, continue_from="incr:99")
    with pytest.raises(ConfigError, match="cannot continue from it"):
        api.train_model("text-generation", new.id, continue_from=parent["model"])
    with pytest.raises(ConfigError, match="--resume"):
        api.train_model(None, new.id, continue_from=parent["model"], resume=True)
    with pytest.raises(ConfigError, match="--replay only applies"):
        api.train_model("text-classification", new.id, replay=10)
    with pytest.raises(ConfigError, match="replay must be a whole number"):
        api.train_model(None, new.id, continue_from=parent["model"], replay=-1)
    with session() as s, s.begin():  # an image model's record: refused before anything loads
        s.add(ModelVersionRecord(name="incr-img", version=1, task="image-classification", path="/nowhere"))
    with pytest.raises(ConfigError, match="Continuing is supported for text-classification"):
        api.train_model(None, new.id, continue_from="incr-img:1")
    with pytest.raises(NotFoundError):  # a train job is checked before it queues
        jobs.submit("train", {"data": new.id, "from": "incr:99"})
    cli = CliRunner().invoke(app, ["train", "--from", "incr:99", "--data", new.id, "--json"])
    assert cli.exit_code == 2 and json.loads(cli.stdout)["error"]["code"] == "not_found"


def test_the_console_continues_a_version_on_a_dataset_it_picks(lineage):
    """The model page offers the stored text datasets; the form queues a train job with ``from``,
    and the job's page shows what the child kept on the parent's test split and learned."""
    import re

    from fastapi.testclient import TestClient

    from aimass.serve import auth
    from aimass.serve.app import create_app

    parent, _, old, new = lineage
    with TestClient(create_app(refs=[])) as client:
        form = client.get("/console/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        client.post("/console/signin", data={"csrf": csrf, "key": auth.admin_token()})
        page = client.get(f"/console/models/{parent['model']}").text
        assert "Continue training" in page and f'<option value="{new.id}">' in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        action = f"/console/models/{parent['model']}/continue"
        bad = client.post(action, data={"csrf": csrf, "data": new.id, "replay": "lots"})
        assert bad.status_code == 422 and "whole number" in bad.text
        asked = client.post(
            action, data={"csrf": csrf, "data": new.id, "replay": "3"}, follow_redirects=False
        )
        assert asked.status_code == 303, asked.text[-300:]
        job_id = asked.headers["location"].rsplit("/", 1)[1]
        done = jobs.run_foreground(job_id)
        assert done["status"] == "succeeded", done.get("error")
        assert done["result"]["parent"] == parent["model"] and done["result"]["replay"]["per_class"] == 3
        shown = client.get(f"/console/jobs/{job_id}").text
        assert "Kept and learned" in shown and f"forgetting {done['result']['forgetting']} points" in shown
