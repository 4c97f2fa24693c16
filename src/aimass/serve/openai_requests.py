"""The request bodies of the OpenAI-compatible routes, and what a chat request asks the decoder for:
text, JSON mode, a JSON Schema (``response_format`` or vLLM's ``guided_*``), or calls of its tools."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aimass.llm import tool_text
from aimass.serve import openai_tools
from aimass.serve.openai_errors import bad_param

MAX_TOKENS_CAP = 2048
DEFAULT_MAX_TOKENS = 128
MAX_LOGIT_BIAS = 300  # OpenAI's most entries of logit_bias
MAX_STOP_CHARS = 256  # a stop sequence: scanned for after every token, on the shared decode thread


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchema(BaseModel):
    """OpenAI's ``response_format.json_schema``: a named JSON Schema the answer must follow."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchema | None = None


def drop_nulls(data: Any) -> Any:
    """A body's top-level ``null`` values dropped, so each means "not given" (the default): the
    ``openai`` client sends ``"temperature": null`` for ``temperature=None``, which OpenAI takes."""
    return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


MAX_PROMPTS = 16  # a legacy completion's prompts at most (vLLM takes lists; each holds a slot)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return drop_nulls(data)

    model: str
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=8)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = Field(None, max_length=MAX_LOGIT_BIAS)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    # vLLM's guided decoding (``extra_body`` in the openai client); one at a time
    guided_json: dict[str, Any] | None = None
    guided_regex: str | None = Field(None, max_length=65536)
    guided_choice: list[str] | None = Field(None, min_length=1, max_length=256)

    def guided(self) -> tuple[str, Any] | None:
        """The one ``guided_*`` constraint asked for, as (kind, value), or None."""
        asked = [
            (k, v)
            for k, v in (
                ("json", self.guided_json),
                ("regex", self.guided_regex),
                ("choice", self.guided_choice),
            )
            if v is not None
        ]
        if len(asked) > 1:
            raise bad_param(
                f"guided_{asked[1][0]}", "Send one of guided_json, guided_regex and guided_choice."
            )
        return asked[0] if asked else None

    def biases(self, vocab: int) -> dict[int, float] | None:
        """``logit_bias`` as {token id: bias}; 400 for an id that is not a token of the model's
        ``vocab`` or a bias outside -100..100 (OpenAI's limits)."""
        if not self.logit_bias:
            return None
        out = {}
        for key, bias in self.logit_bias.items():
            if not key.isdigit() or int(key) >= vocab:
                raise bad_param("logit_bias", f"logit_bias keys are token ids 0..{vocab - 1}; got {key!r}.")
            if not -100 <= bias <= 100:
                raise bad_param("logit_bias", f"A logit_bias value is -100 to 100; got {bias} for {key}.")
            out[int(key)] = bias
        return out

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise bad_param("stop", f"Send at most 4 stop sequences; got {len(stops)}.")
        if any(len(s) > MAX_STOP_CHARS for s in stops):  # each is looked for after every token
            raise bad_param("stop", f"A stop sequence is at most {MAX_STOP_CHARS} characters.")
        return tuple(s for s in stops if s)


class CallFunction(BaseModel):
    name: str = Field(max_length=64)
    arguments: str = Field("{}", max_length=65536)


class ToolCall(BaseModel):
    """An assistant message's earlier call, as the answer gave it."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(None, max_length=128)
    type: Literal["function"] = "function"
    function: CallFunction


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=64)  # an assistant's earlier calls
    tool_call_id: str | None = None

    def turn(self) -> dict:
        """The message as the chat template takes it (:func:`aimass.llm.tool_text.turn`, which the
        fine-tuning import writes its conversations with too)."""
        calls = [c.model_dump() for c in self.tool_calls or []]
        return tool_text.turn(self.role, self.text(), calls)

    def text(self) -> str:
        try:
            return tool_text.content_text(self.content)
        except ValueError as e:  # a part that is not text
            raise bad_param("messages", str(e)) from None


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[openai_tools.Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def logprob_count(self) -> int | None:
        """None (no logprobs) or how many alternatives each token lists."""
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_param("top_logprobs", "top_logprobs needs logprobs: true; send both.")
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS_CAP)  # 0: only scores an echoed prompt
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    best_of: int | None = Field(None, ge=1, le=20)

    def logprob_count(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """The prompts, each a text or a list of token ids, as OpenAI takes them: a string, a list
        of strings, a list of token ids (one prompt) or a list of such lists. 400 for none, or more
        than :data:`MAX_PROMPTS` (each decodes on a generation slot of its own)."""
        prompt = self.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            prompts = [prompt]
        else:
            prompts = list(prompt)
        if not prompts:
            raise bad_param("prompt", "The prompt list is empty: send at least one prompt.")
        if len(prompts) > MAX_PROMPTS:
            raise bad_param(
                "prompt",
                f"{len(prompts)} prompts in one request; at most {MAX_PROMPTS} are taken at once.",
            )
        return prompts


def output_of(req: ChatRequest, messages: list[dict]) -> tuple[str, Any] | None:
    """What ``response_format`` (or a ``guided_*`` field) asks for: None (text), ``("json_object",
    None)``, ``("json", schema)``, ``("regex", pattern)`` or ``("choice", options)``. As OpenAI, JSON
    mode needs the word JSON (any case) in the messages, so that the model is told and does not fill
    its tokens with spaces; a schema needs ``json_schema`` with its ``name``."""
    fmt, guided = req.response_format, req.guided()
    if fmt is None or fmt.type == "text":
        return guided
    if guided is not None:
        raise bad_param(f"guided_{guided[0]}", "Send response_format or a guided_* field, not both.")
    if fmt.type == "json_schema":
        if fmt.json_schema is None:
            raise bad_param(
                "response_format.json_schema",
                "response_format of type 'json_schema' needs 'json_schema': {'name': ..., 'schema': {...}}.",
            )
        return "json", fmt.json_schema.schema_
    if not any("json" in m["content"].lower() for m in messages):
        raise bad_param(
            "messages",
            "'messages' must contain the word 'json' in some form to use 'response_format' of type "
            "'json_object'.",
        )
    return "json_object", None


def tools_of(req: ChatRequest) -> list | None:
    """The tools the model may call (None: none, or ``tool_choice: "none"``); 400 for a
    ``tool_choice`` without tools, or tools with ``response_format`` or a ``guided_*`` field."""
    if not req.tools:
        if req.tool_choice not in (None, "none"):
            raise bad_param("tool_choice", "tool_choice needs tools: send the functions in 'tools'.")
        return None
    if req.tool_choice == "none":
        return None
    if (req.response_format and req.response_format.type != "text") or req.guided():
        raise bad_param("tools", "Send tools or response_format (or a guided_* field), not both.")
    return req.tools


def unsupported(req) -> None:
    """400 for what a legacy completion cannot ask for: ``suffix``, ``best_of`` above 1, ``echo``
    with ``stream``, and ``max_tokens`` 0 without ``echo`` (nothing to answer)."""
    if isinstance(req, CompletionRequest) and req.suffix:
        raise bad_param("suffix", "suffix is not supported.", "unsupported_parameter")
    if isinstance(req, CompletionRequest) and req.echo and req.stream:
        raise bad_param(
            "stream",
            "echo is not supported with stream: send stream: false to get the prompt back.",
            "unsupported_parameter",
        )
    if isinstance(req, CompletionRequest) and req.max_tokens == 0 and not req.echo:
        raise bad_param(
            "max_tokens",
            "Invalid 'max_tokens': Input should be greater than or equal to 1 (0 only with echo: true, "
            "which scores the prompt).",
        )
    if isinstance(req, CompletionRequest) and req.best_of not in (None, 1):
        raise bad_param(
            "best_of",
            "best_of is not supported: send n for several completions and pick among them.",
            "unsupported_parameter",
        )
