"""Shared fixtures: an isolated AIMASS_HOME and one small real model trained once per session."""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# a compression's throughput windows (1.5 s each by default): the suite checks the table, not the
# speeds (bench/ measures those), so shorter windows save about a minute of CI
os.environ.setdefault("AIMASS_MEASURE_SECONDS", "0.3")
# `make test`'s xdist workers share the cores: each process (and the CLI and job processes it starts)
# gets its share of OpenMP threads. Two workers of two threads each on two cores spin against each
# other: test_resume.py and test_jobs_crash.py side by side took 204 s, 88 s with one thread each.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    THREADS = max(1, len(os.sched_getaffinity(0)) // WORKERS)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(THREADS))
    if "torch" in sys.modules:  # imported before this file (a plugin): its pool is sized already
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
SESSION_HOME = Path(os.environ.get("AIMASS_TEST_HOME") or tempfile.mkdtemp(prefix="aimass-test-"))
os.environ["AIMASS_HOME"] = str(SESSION_HOME)
# `make test` runs two pytest-xdist workers, each with its own SESSION_HOME; the converted backbone
# copies (SmolLM2 30 s, multilingual-e5 15 s) are one cache for the whole run, in the first home
# (the controller's, which xdist's workers inherit through this variable; conversion takes a lock)
os.environ.setdefault("AIMASS_TEST_BACKBONES", str(SESSION_HOME / "backbones"))
BACKBONES = Path(os.environ["AIMASS_TEST_BACKBONES"])
BACKBONES.mkdir(parents=True, exist_ok=True)
if BACKBONES != SESSION_HOME / "backbones" and not (SESSION_HOME / "backbones").exists():
    (SESSION_HOME / "backbones").symlink_to(BACKBONES, target_is_directory=True)


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's AIMASS_HOME (about 1 GB of models and backbones) unless the caller
    chose it with AIMASS_TEST_HOME."""
    if not os.environ.get("AIMASS_TEST_HOME"):
        shutil.rmtree(SESSION_HOME, ignore_errors=True)


def bbc_sample(per_class: int = 16, chars: int = 600) -> tuple[list[str], list[str]]:
    """A small, real, balanced slice of BBC News (first ``per_class`` articles of each topic)."""
    from aimass.data import bbc_news_path

    texts, labels = [], []
    for folder in sorted(bbc_news_path().iterdir()):
        for path in sorted(folder.glob("*.txt"))[:per_class]:
            texts.append(path.read_text(encoding="latin-1")[:chars])
            labels.append(folder.name)
    return texts, labels


def user_with_key(user: str, policy: str, statements: list[dict], scopes: tuple = ("manage",)) -> str:
    """A new user with its own policy ``policy`` of ``statements`` attached, and a new key of
    ``scopes`` bound to it; returns the key."""
    from aimass.access import directory
    from aimass.serve import auth

    directory.create_user(user)
    directory.put_policy(policy, {"Statement": statements})
    directory.attach(policy, "user", user)
    record, key = auth.create_key(user, list(scopes))
    directory.bind_key(record.id, user=user)
    return key


def write_csv(path, rows) -> str:
    """``rows`` of (text, label) as a CSV with a ``text,label`` header at ``path``; its path."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


def bbc_held_out(seen: int = 16, extra: int = 8) -> tuple[list[str], list[str]]:
    """The ``extra`` articles per topic after the first ``seen`` (what ``small_model`` never saw)."""
    texts, labels = bbc_sample(per_class=seen + extra)
    keep = [i for i in range(len(texts)) if i % (seen + extra) >= seen]
    return [texts[i] for i in keep], [labels[i] for i in keep]


def weights_snapshot(model) -> dict:
    """A copy of a fitted model's network weights (to prove a method left it alone)."""
    return {k: v.clone() for k, v in model.net_.state_dict().items()}


@pytest.fixture(scope="session")
def bbc_csv(tmp_path_factory) -> Path:
    """The BBC slice as a CSV file with a header, as a user would hand it over."""
    texts, labels = bbc_sample()
    path = tmp_path_factory.mktemp("data") / "bbc_small.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return path


# contrastive steps for a few-shot fit whose test is not about that stage: 20 instead of the
# default 80 take 9 s instead of 34 and score the same on BBC's held-out articles (0.925 both)
PAIR_STEPS = 20


def shared_backbones(home: Path) -> Path:
    """Create AIMASS_HOME ``home`` with its converted backbone copies (multilingual-e5, SmolLM2,
    EfficientNet: 15-30 s each to convert) linked to the session's: a cache, not a user's state."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "backbones").symlink_to(BACKBONES, target_is_directory=True)
    return home


@pytest.fixture(scope="session")
def small_model():
    """A TextClassifier fitted on the BBC slice with both stages (about 15 s on 2 cores)."""
    from aimass.tasks.text_classification import TextClassifier

    texts, labels = bbc_sample()
    model = TextClassifier(
        backbone="minilm-l6", max_length=64, unfreeze=2, epochs_top=4, pair_steps=PAIR_STEPS, seed=0
    )
    return model.fit((texts, labels), progress=False)


@contextmanager
def live_server(app):
    """uvicorn on 127.0.0.1, a free port, in a thread; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and server.servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
