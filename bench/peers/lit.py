"""Peer (b): LitServe with its own dynamic batching, serving the same torch model.

python bench/peers/lit.py MODEL_DIR PORT
"""

from __future__ import annotations

import sys

import litserve as ls

MAX_BATCH, BATCH_TIMEOUT_S = 32, 0.005


class TextAPI(ls.LitAPI):
    def setup(self, device):
        from aimass.tasks.text_classification import TextClassifier

        self.model = TextClassifier.load(sys.argv[1])

    def decode_request(self, request):
        return request["inputs"][0]

    def predict(self, texts):
        return self.model.predict_proba(texts)

    def encode_response(self, p):
        return {"predictions": [{"label": self.model.classes_[int(p.argmax())], "score": float(p.max())}]}


if __name__ == "__main__":
    api = TextAPI(max_batch_size=MAX_BATCH, batch_timeout=BATCH_TIMEOUT_S)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=30)
    server.run(port=int(sys.argv[2]), host="127.0.0.1", generate_client_file=False)
