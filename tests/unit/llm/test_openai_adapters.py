"""Registered fine-tunes answer on the OpenAI routes by name, without a deployment: the adapter is
attached to the shared base on first use, kept for the next requests, and detached least recently
used first beyond the cap (never while it decodes)."""

from __future__ import annotations

import openai
import pytest
from tests.conftest import live_server, user_with_key
from tests.unit.llm.conftest import GEN_PARAMS

from aimass.access import directory
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.serve.llm_adapters import Adapters
from aimass.store import registry

ASK = [{"role": "user", "content": "Shares in the carmaker rose 5% after record quarterly profits."}]


@pytest.fixture(scope="module")
def second_model(headlines_jsonl):
    """Another fine-tune of the same base (a different seed): two adapters to keep apart."""
    import aimass

    ds = aimass.import_dataset(headlines_jsonl, name="headlines")
    params = {**GEN_PARAMS, "max_steps": 3}
    return aimass.train_model("text-generation", ds, name="headlines-b", progress=False, seed=7, **params)


def test_a_registered_fine_tune_answers_by_name_without_a_deployment(headlines_model):
    ref = headlines_model["model"]
    name = registry.get_version(ref).name
    _, key = auth.create_key("adapters", ["predict"])
    with live_server(create_app([])) as base:  # nothing deployed
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
        assert ref in [m.id for m in client.models.list().data]
        answer = client.chat.completions.create(model=name, messages=ASK, max_tokens=8, temperature=0)
        assert answer.model == ref and answer.choices[0].message.content
        again = client.chat.completions.create(model=ref, messages=ASK, max_tokens=8, temperature=0)
        assert again.choices[0].message.content == answer.choices[0].message.content  # greedy, one adapter
        streamed = client.chat.completions.create(
            model=f"{name}:{registry.get_version(ref).version}",
            messages=ASK,
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert text == answer.choices[0].message.content
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such-model", messages=ASK, max_tokens=4)
        assert missing.value.body["code"] == "model_not_found"
        # a user whose policies reach another project only: the fine-tune is not theirs to use
        directory.create_project("elsewhere")
        allow = {"Effect": "Allow", "Action": "model:*", "Resource": "aimass:project/elsewhere/*"}
        listing = {"Effect": "Allow", "Action": "model:List", "Resource": "aimass:project/*"}
        dave = user_with_key("dave", "ElsewhereModels", [allow, listing], scopes=("predict",))
        refused = openai.OpenAI(base_url=f"{base}/v1", api_key=dave, max_retries=0)
        with pytest.raises((openai.NotFoundError, openai.PermissionDeniedError)):
            refused.chat.completions.create(model=name, messages=ASK, max_tokens=4)
        assert ref not in [m.id for m in refused.models.list().data]


def test_beyond_the_cap_the_least_recently_used_idle_adapter_is_detached(headlines_model, second_model):
    """With room for one: the second fine-tune's adapter (attached by nobody else) stays while it
    decodes, goes when its lease ends and another is in use, and comes back when asked again."""
    first, second = headlines_model["model"], second_model["model"]
    adapters = Adapters(size=1)
    ref, model = adapters.find(second)
    assert ref == second and model.adapter_ in model.base_.adapters
    with adapters.lease(second) as held:  # decoding: not detached while the first one is attached
        _, other = adapters.find(first)
        assert held.adapter_ in held.base_.adapters and other.adapter_ in other.base_.adapters
        alone = held.generate(ASK, max_tokens=6).choices[0].text
    assert adapters.names() == [first]  # the second, idle now, went when its lease ended
    assert held.adapter_ not in held.base_.adapters
    with adapters.lease(second) as back:  # asked again: attached again, the same answer
        assert back.adapter_ in back.base_.adapters
        assert back.generate(ASK, max_tokens=6).choices[0].text == alone
    assert adapters.names() == [second] and adapters.find("no-such-model") is None
