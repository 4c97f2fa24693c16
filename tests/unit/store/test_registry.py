"""The model registry and its SQLite (WAL) database, on a throw-away AIMASS_HOME."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import aimass
from aimass.errors import ConfigError, IntegrityError, InUseError, NotFoundError
from aimass.store import registry
from aimass.store.db import ModelVersionRecord, RunRecord, session


@pytest.fixture
def home(tmp_path, monkeypatch):
    root = tmp_path / "home"
    monkeypatch.setenv("AIMASS_HOME", str(root))
    return root


class TinyEstimator:
    """A real (if trivial) estimator that follows the contract the registry relies on."""

    task = "text-classification"

    def __init__(self, epochs: int = 3, lr: float = 0.01):
        self.epochs, self.lr = epochs, lr
        self.backbone_ = "tiny/backbone"
        self.data_digest_ = "d" * 64

    def get_params(self) -> dict:
        return {"epochs": self.epochs, "lr": self.lr}

    def save(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "model.json").write_text(json.dumps({"params": self.get_params()}))


@dataclass
class TinyDataset:
    id: str = "ds0123456789"
    digest: str = "a" * 64
    name: str = "reviews"
    path: Path = Path("/nowhere")
    manifest: dict = field(default_factory=lambda: {"language": "en"})

    def summary(self) -> dict:
        return {"rows": 3}


# -- register / get_version ---------------------------------------------------------------------------


def test_register_twice_gives_versions_1_and_2(home):
    first = registry.register(TinyEstimator(epochs=1), "x", metrics={"macro_f1": 0.8})
    second = registry.register(TinyEstimator(epochs=2), "x", parent="x:1")
    assert (first.version, second.version) == (1, 2)
    assert (first.ref, second.ref) == ("x:1", "x:2")
    assert second.parent == "x:1"
    other = registry.register(TinyEstimator(), "y")
    assert other.version == 1  # versions count per name


def test_record_holds_lineage(home):
    record = registry.register(TinyEstimator(epochs=5, lr=0.1), "lineage", metrics={"macro_f1": 0.7})
    stored = registry.get_version("lineage:1").to_dict()
    assert stored["ref"] == "lineage:1" == record.ref
    assert stored["task"] == "text-classification"
    assert stored["backbone"] == "tiny/backbone"
    assert stored["dataset_digest"] == "d" * 64
    assert stored["params"] == {"epochs": 5, "lr": 0.1}
    assert stored["metrics"] == {"macro_f1": 0.7}
    assert stored["aimass_version"] == aimass.__version__
    assert stored["created"]


def test_artifact_folder_is_models_name_version(home):
    registry.register(TinyEstimator(), "reviews")
    record = registry.register(TinyEstimator(epochs=9), "reviews", extra_files={})
    folder = home / "models" / "reviews" / "v2"
    assert Path(record.path) == folder
    assert json.loads((folder / "model.json").read_text()) == {"params": {"epochs": 9, "lr": 0.01}}
    assert (home / "models" / "reviews" / "v1" / "model.json").exists()


def test_register_copies_extra_files(home, tmp_path):
    report = tmp_path / "report.json"
    report.write_text('{"ok": true}')
    record = registry.register(TinyEstimator(), "extras", extra_files={"report.json": report})
    assert (Path(record.path) / "report.json").read_text() == '{"ok": true}'


def test_register_replaces_stale_folder(home):
    stale = home / "models" / "stale" / "v1"
    stale.mkdir(parents=True)
    (stale / "leftover.bin").write_text("from a crashed run")
    record = registry.register(TinyEstimator(), "stale")
    assert sorted(p.name for p in Path(record.path).iterdir()) == ["SHA256SUMS", "model.json"]


class SlowEstimator(TinyEstimator):
    """Saves for a second, as a real model's weights take: long enough for two processes to overlap."""

    def __init__(self, who: str):
        super().__init__()
        self.who = who

    def get_params(self) -> dict:
        return {"who": self.who}

    def save(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        time.sleep(1.0)
        (Path(path) / "model.json").write_text(json.dumps({"who": self.who}))


def _register_at_once(who: str, barrier, results) -> None:
    barrier.wait(timeout=120)
    try:
        results.put((who, registry.register(SlowEstimator(who), "racey").ref))
    except Exception as exc:  # reported to the test, which names it
        results.put((who, f"{type(exc).__name__}: {exc}"))


def test_two_processes_registering_at_once_get_their_own_versions_and_files(home):
    """The version number was read outside the write lock, then the second save's rename deleted
    the first one's folder: racey:2 held A's params and B's files, and B died on a raw IntegrityError."""
    registry.register(SlowEstimator("seed"), "racey")  # creates the database before the race
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited sqlite connection
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_register_at_once, args=(who, barrier, results)) for who in "AB"]
    for w in workers:
        w.start()
    got = dict(results.get(timeout=180) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    assert sorted(got.values()) == ["racey:2", "racey:3"], got
    for record in registry.list_versions("racey"):
        assert json.loads((Path(record.path) / "model.json").read_text()) == record.params
        assert registry.artifacts.verify(Path(record.path)) == 1
    assert not [p.name for p in (home / "models" / "racey").iterdir() if p.name.startswith(".")]


def test_a_folder_a_record_owns_is_never_cleared(home):
    record = registry.register(TinyEstimator(), "owned")
    with session() as s, s.begin():  # a record pointing at the folder the next number would take
        s.get(ModelVersionRecord, record.id).path = str(home / "models" / "owned" / "v2")
    (home / "models" / "owned" / "v1").rename(home / "models" / "owned" / "v2")
    with pytest.raises(IntegrityError, match="belongs to owned:1"):
        registry.register(TinyEstimator(), "owned")
    assert (home / "models" / "owned" / "v2" / "model.json").exists()


def test_get_version_latest_and_pinned(home):
    registry.register(TinyEstimator(epochs=1), "x")
    registry.register(TinyEstimator(epochs=2), "x")
    assert registry.get_version("x").version == 2
    assert registry.get_version("x").params["epochs"] == 2
    assert registry.get_version("x:1").version == 1
    assert registry.get_version("x:1").params["epochs"] == 1
    assert registry.get_version("x:2").version == 2


def test_latest_skips_a_version_the_gate_rejected(home):
    """A rejected compressed child was "the latest": what a name alone loads, predicts and serves."""
    rejected = {"gate": {"status": "rejected", "reason": "accuracy drop 3.00 points > 1"}}
    registry.register(TinyEstimator(epochs=1), "news")
    registry.register(
        TinyEstimator(epochs=2), "news", metrics={"gate": {"status": "accepted"}}, parent="news:1"
    )
    registry.register(TinyEstimator(epochs=3), "news", metrics=rejected, parent="news:1")
    assert registry.get_version("news").ref == "news:2"
    assert registry.get_version("news:3").ref == "news:3"  # named, it still loads
    assert [r.ref for r in registry.latest_versions()] == ["news:2"]
    registry.register(TinyEstimator(), "only", metrics=rejected)
    with pytest.raises(NotFoundError, match="rejected by the compression gate") as info:
        registry.get_version("only")
    assert "only:VERSION" in info.value.hint
    assert registry.get_version("only:1").ref == "only:1"
    assert "only" not in {r.name for r in registry.latest_versions()}


def test_the_server_default_never_serves_a_rejected_version(home):
    from aimass.serve.app import default_refs

    rejected = {"gate": {"status": "rejected"}}
    registry.register(TinyEstimator(), "news")
    registry.register(TinyEstimator(), "news", metrics=rejected, parent="news:1")
    registry.register(TinyEstimator(), "forced", metrics=rejected)
    registry.register(TinyEstimator(), "orphan", metrics=rejected)
    registry.set_alias("forced:1", "production", force=True)
    assert default_refs() == ["forced:1", "news:1"]  # the alias wins; "orphan" has nothing to serve


def test_unknown_name_names_it_and_lists_nothing(home):
    """The message reaches REST callers and job results of any project: it names what was asked for
    and says where the caller's own versions are listed, never the versions of others."""
    registry.register(TinyEstimator(), "alpha")
    registry.register(TinyEstimator(), "beta")
    with pytest.raises(NotFoundError) as info:
        registry.get_version("gamma")
    message = str(info.value)
    assert "gamma" in message and "alpha" not in message and "beta" not in message
    assert info.value.code == "not_found" and "aimass models list" in info.value.hint


def test_unknown_version_raises_not_found(home):
    registry.register(TinyEstimator(), "x")
    with pytest.raises(NotFoundError, match="No model 'x:7'"):
        registry.get_version("x:7")
    with pytest.raises(NotFoundError):
        registry.get_version("x:0")  # 0 is a version number, not "latest"


@pytest.mark.parametrize("bad", ["../etc", "", "a b", "-lead", ".hidden", "a/b", "x" * 101, "abc\n", None])
def test_bad_names_raise_config_error(home, bad):
    with pytest.raises(ConfigError) as info:
        registry.check_name(bad)
    assert info.value.hint
    if bad is not None:
        with pytest.raises(ConfigError):
            registry.register(TinyEstimator(), bad)
    assert not (home / "models").exists() or not any((home / "models").iterdir())


@pytest.mark.parametrize("good", ["x", "reviews", "model-2.1_final", "A" * 100])
def test_good_names_pass(good):
    assert registry.check_name(good) == good


def test_parse_ref():
    assert registry.parse_ref("reviews") == ("reviews", None)
    assert registry.parse_ref("reviews:3") == ("reviews", 3)
    for bad in ("m:abc", "m:1.5", "m:-1", "m:1:2", ":3"):
        with pytest.raises(ConfigError):
            registry.parse_ref(bad)


def test_list_and_latest_versions_and_update_metrics(home):
    for name in ("b", "a", "b"):
        registry.register(TinyEstimator(), name)
    assert [r.ref for r in registry.list_versions()] == ["a:1", "b:1", "b:2"]
    assert [r.ref for r in registry.list_versions("b")] == ["b:1", "b:2"]
    assert sorted(r.ref for r in registry.latest_versions()) == ["a:1", "b:2"]
    registry.update_metrics("b:1", {"accuracy": 0.5})
    assert registry.get_version("b:1").metrics == {"accuracy": 0.5}
    assert registry.get_version("b:2").metrics == {}


# -- the database file --------------------------------------------------------------------------------


def test_database_is_wal_and_intact(home):
    registry.register(TinyEstimator(), "x")
    db = home / "aimass.db"
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"datasets", "runs", "model_versions"} <= tables


def test_each_home_gets_its_own_database(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "one"))
    registry.register(TinyEstimator(), "x")
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "two"))
    assert registry.list_versions() == []
    assert registry.register(TinyEstimator(), "x").version == 1


# -- runs ---------------------------------------------------------------------------------------------


def test_start_finish_find_run(home):
    params = {"epochs": 3, "lr": 0.01}
    done = registry.start_run("text-classification", params)
    registry.finish_run(done.id, "succeeded", timings={"fit": 1.5})
    assert registry.find_run("text-classification", params, None) is None  # a succeeded run is not resumed

    failed = registry.start_run("text-classification", params)
    registry.finish_run(failed.id, "failed", error="boom")
    found = registry.find_run("text-classification", params, None)
    assert found is not None and found.id == failed.id

    with session() as s:
        row = s.get(RunRecord, done.id)
        assert (row.status, row.timings, row.error) == ("succeeded", {"fit": 1.5}, None)
        assert row.finished and row.started
        assert s.get(RunRecord, failed.id).error == "boom"


def test_find_run_returns_unfinished_run_with_identical_params(home):
    params = {"epochs": 3, "lr": 0.01}
    running = registry.start_run("text-classification", params)
    assert running.status == "running"
    registry.start_run("text-classification", {"epochs": 4, "lr": 0.01})

    found = registry.find_run("text-classification", dict(params), None)
    assert found is not None and found.id == running.id and found.params == params
    assert registry.find_run("text-classification", {"epochs": 3}, None) is None
    assert registry.find_run("other-task", params, None) is None
    assert registry.find_run("text-classification", params, "some-dataset") is None


def test_find_run_matches_dataset(home):
    dataset = TinyDataset()
    registry.record_dataset(dataset)
    registry.record_dataset(dataset)  # recording again is a no-op merge
    params = {"epochs": 1}
    with_data = registry.start_run("text-classification", params, dataset_id=dataset.id)
    registry.start_run("text-classification", params)  # same params, no dataset
    found = registry.find_run("text-classification", params, dataset.id)
    assert found is not None and found.id == with_data.id and found.dataset_id == dataset.id


# -- delete_version ------------------------------------------------------------------------------------


def test_delete_removes_the_record_its_folder_and_never_reuses_the_number(home):
    registry.register(TinyEstimator(epochs=1), "gone")
    second = registry.register(TinyEstimator(epochs=2), "gone", parent="gone:1")
    child = registry.register(TinyEstimator(epochs=3), "gone", parent="gone:2")
    done = registry.delete_version("gone:2")
    assert done == {"ref": "gone:2", "aliases_removed": [], "children": ["gone:3"]}
    assert not Path(second.path).exists()
    assert not [p for p in Path(second.path).parent.iterdir() if p.name.startswith(".deleted")]
    with pytest.raises(NotFoundError, match="gone:2 was deleted on") as err:
        registry.get_version("gone:2")
    assert "children keep their lineage" in err.value.hint
    assert registry.get_version(child.ref).parent == "gone:2"  # the child's lineage is kept as written
    assert registry.deleted_on("gone:2") and registry.deleted_on("gone:3") is None
    assert registry.register(TinyEstimator(), "gone").version == 4  # not 2 again, and not 3
    registry.delete_version("gone:4")
    assert registry.register(TinyEstimator(), "gone").version == 5  # the latest deleted counts too


def test_delete_refuses_a_served_version_and_an_aliased_one_unless_forced(home):
    registry.register(TinyEstimator(), "kept")
    registry.set_alias("kept:1", "production")
    with pytest.raises(InUseError, match="served by reviews-svc") as served:
        registry.delete_version("kept:1", served={"kept:1": ["reviews-svc"]}, force=True)
    assert served.value.http_status == 409 and "Undeploy it first" in served.value.hint
    with pytest.raises(InUseError, match="kept@production") as aliased:
        registry.delete_version("kept:1")
    assert "aimass models alias kept:VERSION production" in aliased.value.hint
    assert registry.get_version("kept:1")  # nothing was removed
    done = registry.delete_version("kept@production", force=True)
    assert done["aliases_removed"] == ["production"] and registry.aliases("kept") == {}
