"""``echo`` on the legacy ``POST /v1/completions`` route, through the official ``openai`` client, as
lm-evaluation-harness's ``local-completions`` model scores log-likelihoods: the prompt comes back
with each of its tokens' log-probabilities (the first one null), ``max_tokens`` 0 only scores."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import openai
import pytest
import torch
from tests.conftest import live_server

import aimass
from aimass.llm import decode
from aimass.llm.hub import HUB
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.serve.openai_errors import OpenAIError
from aimass.serve.openai_routes import _Target

BASE = "smollm2-135m"
PROMPT = "The capital of France is Paris, and the capital of Italy is Rome."


@pytest.fixture(scope="module")
def srv(headlines_model):
    _, key = auth.create_key("llm-echo", ["predict"])
    with live_server(create_app([headlines_model["model"]])) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
        yield SimpleNamespace(base=base, key=key, client=client, model=headlines_model["model"])


def _forward(ids: list[int], adapter: str | None = None) -> list[float]:
    """Each token's log-probability after the ones before it, from a direct forward pass."""
    base = HUB.base(BASE)
    with base.using(adapter) as model, torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def _scored(srv, prompt, model: str = BASE, **extra):
    return srv.client.completions.create(
        model=model, prompt=prompt, max_tokens=0, echo=True, logprobs=1, temperature=0, seed=1234, **extra
    )


def test_echo_scores_the_prompt_as_a_forward_pass_does(srv):
    answer = _scored(srv, PROMPT)
    (choice,) = answer.choices
    ids = decode.text_ids(HUB.base(BASE).tokenizer, PROMPT)
    lp = choice.logprobs
    assert choice.text == PROMPT and choice.finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (len(ids), 0)
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids)
    assert "".join(lp.tokens) == PROMPT
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(ids))]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # as OpenAI: nothing before it
    assert lp.token_logprobs[1:] == pytest.approx(_forward(ids), abs=1e-4)
    for logprob, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True):
        assert len(top) == 1 and max(top.values()) >= logprob - 1e-6


def test_the_sum_over_a_continuation_ranks_a_sensible_one_first(srv):
    """lm-eval's log-likelihood: context + continuation sent as token ids, the continuation's sum."""
    tokenizer = HUB.base(BASE).tokenizer
    context = tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]
    endings = [" Paris.", " purple elephant."]
    prompts = [context + tokenizer(e, add_special_tokens=False)["input_ids"] for e in endings]
    answer = _scored(srv, prompts)
    assert [c.text for c in answer.choices] == [tokenizer.decode(p) for p in prompts]
    sums = [sum(c.logprobs.token_logprobs[len(context) :]) for c in answer.choices]
    assert sums[0] > sums[1] + 2


def test_echo_with_a_completion_lists_the_prompt_then_the_answer(srv):
    plain = srv.client.completions.create(
        model=BASE, prompt="1, 2, 3,", max_tokens=3, temperature=0, logprobs=2
    )
    echoed = srv.client.completions.create(
        model=BASE, prompt="1, 2, 3,", max_tokens=3, temperature=0, logprobs=2, echo=True, n=2
    )
    assert [c.index for c in echoed.choices] == [0, 1]
    (want,), got = plain.choices, echoed.choices[1]
    assert got.text == "1, 2, 3," + want.text and got.finish_reason == want.finish_reason
    count = len(decode.text_ids(HUB.base(BASE).tokenizer, "1, 2, 3,"))
    assert got.logprobs.tokens[count:] == want.logprobs.tokens
    assert got.logprobs.text_offset[count:] == want.logprobs.text_offset  # from the prompt's start
    assert got.logprobs.token_logprobs[count:] == pytest.approx(want.logprobs.token_logprobs, abs=1e-4)
    assert echoed.usage.prompt_tokens == plain.usage.prompt_tokens  # the prompt counted once
    assert echoed.usage.completion_tokens == 2 * plain.usage.completion_tokens
    bare = srv.client.completions.create(model=BASE, prompt="Hi", max_tokens=2, temperature=0, echo=True)
    assert bare.choices[0].text.startswith("Hi") and bare.choices[0].logprobs is None


def test_a_fine_tune_scores_through_its_adapter(srv):
    model = aimass.load(srv.model)
    ids = decode.text_ids(model.base_.tokenizer, PROMPT)
    tuned = _scored(srv, PROMPT, model=srv.model).choices[0].logprobs.token_logprobs[1:]
    assert tuned == pytest.approx(_forward(ids, model.adapter_), abs=1e-4)
    assert tuned != pytest.approx(_forward(ids), abs=1e-4)  # not the base's numbers


def _refused(srv, **body) -> dict:
    said = httpx.post(
        srv.base + "/v1/completions",
        json={"model": BASE, "prompt": "Hi", **body},
        headers={"Authorization": f"Bearer {srv.key}"},
        timeout=60,
    )
    assert said.status_code == 400, said.text
    return said.json()["error"]


def test_what_echo_cannot_do_is_a_400_naming_the_field(srv):
    streamed = _refused(srv, echo=True, stream=True, logprobs=1)
    assert (streamed["param"], streamed["code"]) == ("stream", "unsupported_parameter")
    assert _refused(srv, suffix="!")["code"] == "unsupported_parameter"
    assert _refused(srv, max_tokens=0)["param"] == "max_tokens"  # nothing to answer without echo
    int4 = _Target(BASE, base=SimpleNamespace(int4=object()))  # an int4 graph gives last-position logits only
    with pytest.raises(OpenAIError) as refused:
        int4.check_scoring()
    assert refused.value.param == "echo"
