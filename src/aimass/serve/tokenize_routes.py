"""vLLM's ``POST /tokenize`` and ``POST /detokenize`` (llama.cpp's server has them too): a
language model's token ids for a prompt, or a chat's messages in its template, and the text of
token ids. Clients count tokens with them before they send a request (context and quotas)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aimass.llm.hub import context_limit
from aimass.serve.openai_errors import bad_param, json_body, parse_body
from aimass.serve.openai_requests import Message

MAX_TOKENS = 1_000_000


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=200)
    prompt: str | None = Field(None, description="a completion's prompt, as /v1/completions reads it")
    messages: list[Message] | None = Field(
        None, max_length=4096, description="a chat, in the model's template"
    )
    add_generation_prompt: bool = Field(True, description="end the chat where the assistant's answer starts")

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=200)
    tokens: list[int] = Field(max_length=MAX_TOKENS)


def tokenize(target, req: TokenizeRequest) -> dict:
    from aimass.llm import decode  # torch: loaded with the language model

    tokenizer = target.base.tokenizer
    if req.prompt is not None:
        ids = decode.text_ids(tokenizer, req.prompt)
    else:
        turns = [m.turn() for m in req.messages]
        text = tokenizer.apply_chat_template(
            turns, add_generation_prompt=req.add_generation_prompt, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return {"count": len(ids), "max_model_len": context_limit(target.base.model), "tokens": ids}


def detokenize(target, req: DetokenizeRequest) -> dict:
    tokenizer = target.base.tokenizer
    size = len(tokenizer)
    for i, token in enumerate(req.tokens):
        if not 0 <= token < size:
            raise bad_param(f"tokens[{i}]", f"tokens[{i}] is {token}; this model's ids are 0 to {size - 1}.")
    return {"prompt": tokenizer.decode(req.tokens)}


def add_tokenize_routes(app: FastAPI, allow, resolve) -> None:
    """``resolve(name)``: the generation target a model name means (404 as the chat route's)."""

    @app.post("/tokenize", tags=["openai"])
    async def tokenize_route(request: Request, caller=allow("predict")):
        """vLLM's: ``{"count", "max_model_len", "tokens"}`` of a prompt or a chat's messages."""
        req = parse_body(TokenizeRequest, await json_body(request))
        target = await asyncio.to_thread(resolve, req.model)
        return await asyncio.to_thread(tokenize, target, req)

    @app.post("/detokenize", tags=["openai"])
    async def detokenize_route(request: Request, caller=allow("predict")):
        """vLLM's: ``{"prompt"}``, the text of ``tokens``."""
        req = parse_body(DetokenizeRequest, await json_body(request))
        target = await asyncio.to_thread(resolve, req.model)
        return await asyncio.to_thread(detokenize, target, req)
