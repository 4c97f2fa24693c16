"""The cheap baselines the classification tasks declare (``Task.baselines``), the floor of their
portfolio (:mod:`aimass.tasks.portfolio`): logistic regression on raw pixels for images, on the
TF-IDF features of the text task's lexical branch for text.

Each one, when it wins, becomes the estimator's network, so nothing downstream needs to know:

* :class:`PixelLogReg` turns into a :class:`aimass.backbones.pixel_net.PixelNet` (the images'
  native size, at most ``MAX_SIDE`` px a side, grey when every image is grey);
* :class:`TfidfLogReg` turns into the text network's head with the encoder's weights at zero and
  the TF-IDF branch's weights from the regression: the logits are exactly the regression's. (The
  encoder still runs at inference; its contribution is the bias alone.)
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from aimass.backbones.image_net import pixels
from aimass.backbones.pixel_net import PixelNet, flat
from aimass.backbones.text_net import Head
from aimass.tasks.image_classification import median_side
from aimass.tasks.portfolio import Baseline
from aimass.tfidf import settings_for
from aimass.tfidf.branch import Lexical
from aimass.train.stages import softmax_rows

MAX_SIDE = 32  # features stay bounded: at most 32 x 32 x 3 = 3072 per image
MIN_SCALE = 0.02  # a pixel (nearly) constant in training is not blown up at inference


class PixelLogReg(Baseline):
    """Logistic regression on the standardised raw pixels at the images' native size (at most
    ``MAX_SIDE``), C picked on the validation split."""

    name = "pixels-logreg"
    C_GRID = (0.01, 0.1, 1.0)

    def fit(self, model, train: tuple, valid: tuple) -> PixelLogReg:
        self.side_ = int(min(MAX_SIDE, max(4, round(median_side(train[0], MAX_SIDE)))))
        raw = pixels(train[0], self.side_)
        self.grey_ = bool(torch.equal(raw[:, 0], raw[:, 1]) and torch.equal(raw[:, 1], raw[:, 2]))
        self.x_ = (self._flat(raw), self._flat(pixels(valid[0], self.side_)))
        self.y_ = (self.targets(model, train[1]), self.targets(model, valid[1]))
        mean, scale = standardiser(self.x_[0])
        self.select((self.x_[0] - mean) / scale, self.y_[0], (self.x_[1] - mean) / scale, self.y_[1])
        return self

    def _flat(self, raw: torch.Tensor) -> np.ndarray:
        return flat(raw.float() / 255.0, self.grey_).numpy()

    def install(self, model, train: tuple, valid: tuple) -> None:
        """Refit on train + valid; the estimator's network becomes the :class:`PixelNet`."""
        x, y = np.vstack(self.x_), np.concatenate(self.y_)
        x, y = x[y >= 0], y[y >= 0]
        mean, scale = standardiser(x)
        clf = self.regression_ = self.refit((x - mean) / scale, y)
        net = PixelNet(self.side_, self.grey_, len(model.classes_))
        model.net_ = net.set_weights(mean, scale, *softmax_rows(clf))
        model.image_size_ = model.resize_ = self.side_  # the squares are side x side: no crop
        model.unfrozen_ = 0
        self.x_ = self.y_ = None


class TfidfLogReg(Baseline):
    """Logistic regression on the TF-IDF features of the model's lexical branch (a new branch with
    the task's settings for the language when the model has none), C picked on the validation split."""

    name = "tfidf-logreg"
    C_GRID = (1.0, 10.0, 100.0)

    def fit(self, model, train: tuple, valid: tuple) -> TfidfLogReg:
        self.lexical_ = model.lexical_ or Lexical(settings_for(model.language_)).fit(train[0])
        transform = self.lexical_.vectorizer.transform
        self.x_ = (transform(train[0]), transform(valid[0]))
        self.y_ = (self.targets(model, train[1]), self.targets(model, valid[1]))
        self.select(self.x_[0], self.y_[0], self.x_[1], self.y_[1])
        return self

    def install(self, model, train: tuple, valid: tuple) -> None:
        """Refit on train + valid; the head becomes the regression (encoder weights at zero)."""
        x, y = sparse.vstack(self.x_).tocsr(), np.concatenate(self.y_)
        keep = np.flatnonzero(y >= 0)
        self.regression_ = self.refit(x[keep], y[keep])
        weight, bias = softmax_rows(self.regression_)
        head = Head(model.net_.encoder.config.hidden_size, len(model.classes_), self.lexical_.size)
        with torch.no_grad():
            head.dense.weight.zero_()
            head.dense.bias.copy_(bias)
            head.lexical.weight.copy_(weight)
        model.net_.head = head.eval()
        model.lexical_ = self.lexical_
        self.x_ = self.y_ = None


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), np.maximum(x.std(0), MIN_SCALE)
