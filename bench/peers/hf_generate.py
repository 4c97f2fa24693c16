"""Peer: a bare FastAPI + transformers ``generate`` server, one request at a time (issue 23's baseline).

python bench/peers/hf_generate.py PORT

The same SmolLM2-135M weights aimass serves (dequantised from the bundled GGUF), fp32, greedy, the
thread count from ``AIMASS_LLM_THREADS`` (1 by default). It answers ``POST /v1/chat/completions``
without streaming, with ``usage``, like the smallest OpenAI-compatible wrapper one would write.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import torch
import uvicorn
from fastapi import FastAPI

from aimass.llm.hub import HUB

torch.set_num_threads(int(os.environ.get("AIMASS_LLM_THREADS") or 1))
base = HUB.base("smollm2-135m")
lock = threading.Lock()
app = FastAPI()


@app.get("/health")
def health():
    return {"ok": True}


@app.post("/v1/chat/completions")
def chat(body: dict):  # a plain def: FastAPI runs it in its thread pool; the lock serialises it
    text = base.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
    x = torch.tensor([base.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with lock, torch.inference_mode(), base.using(None) as model:
        y = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=int(body.get("max_tokens", 64)),
            do_sample=False,
        )
    new = y[0, x.shape[1] :].tolist()
    answer = base.tokenizer.decode(new, skip_special_tokens=True)
    usage = {
        "prompt_tokens": x.shape[1],
        "completion_tokens": len(new),
        "total_tokens": x.shape[1] + len(new),
    }
    return {
        "id": f"chatcmpl-{time.time_ns()}",
        "object": "chat.completion",
        "model": body.get("model", "smollm2-135m"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "length"}
        ],
        "usage": usage,
    }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
