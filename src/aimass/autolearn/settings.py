"""Constants shared by the auto-learning modules."""

from __future__ import annotations

METHOD = "onnx-int8"
MAX_DROP = 1.0
GENERIC_NAMES = {"data", "dataset", "datasets", "images", "files", "train", "corpus"}
TRIALS_WANTED = 6  # trials the search is sized for; fewer than MIN_TRIALS: no search
MIN_TRIALS = 3
LR_STEPS = 24  # steps of the learning-rate range test
DEPLOY_S = 30.0  # what starting (or reusing) a server and one prediction are given in the plan
