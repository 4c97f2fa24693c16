"""Peer (a): a bare FastAPI handler calling the same torch model, one request at a time.

python bench/peers/bare.py MODEL_DIR PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from aimass.tasks.text_classification import TextClassifier

model = TextClassifier.load(sys.argv[1])
app = FastAPI()


@app.get("/health")
def health():
    return {"ok": True}


@app.post("/predict")
def predict(body: dict):  # a plain def: FastAPI runs it in its thread pool
    proba = model.predict_proba(body["inputs"])
    return {
        "predictions": [{"label": model.classes_[int(p.argmax())], "score": float(p.max())} for p in proba]
    }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
