"""A language-model fine-tune (``text-generation``) exported for other runtimes, its LoRA adapter
merged into the base weights (``W + B A * alpha / r``, the sum the served adapter computes):

* ``safetensors``: a transformers folder (``config.json``, ``model.safetensors``, the tokenizer with
  its chat template, ``generation_config.json``) that ``AutoModelForCausalLM.from_pretrained``,
  vLLM and TGI load as any Hub model, plus a ``predict.py`` (torch + transformers).
* ``gguf`` / ``gguf-f16``: one ``model.gguf`` for llama.cpp, ollama and LM Studio, plus an ollama
  ``Modelfile``. It is the base's own GGUF (metadata, tokenizer, chat template and every untouched
  tensor copied byte for byte) with each LoRA-trained projection replaced by its merged weight, in
  ``q8_0`` (``gguf``) or ``f16`` (``gguf-f16``): a 4-bit base cannot hold a small LoRA update.
  Only a backbone that ships as a GGUF (``smollm2-135m``) has one to start from; a Hub model is
  refused with the way to convert the ``safetensors`` export with llama.cpp's own converter.

Either folder is checked when written and teacher-forced on a few prompts with aimass's own greedy
answers; ``export.json`` records the largest logit difference and how often the exported model
picks aimass's next token. The transformers folder is loaded back by transformers. The GGUF is read
back from disk with gguf's reader: every tensor but the trained projections must be the base's
bytes, and the base transformers model (the base GGUF dequantised, which aimass caches) takes each
projection as the file holds it, dequantised and its rows put back in transformers' order. That row
order is checked against the base itself (its layer-0 q and k in the GGUF, put back, equal the
cached weights exactly), so a permutation and its inverse cannot be wrong together. A full load
through transformers' GGUF reader gives the same model in about 30 s more (llama.cpp itself:
``bench/llm_export.py``).
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import numpy as np

from aimass.errors import ConfigError
from aimass.exporters.folder import write_requirements
from aimass.exporters.table import register_export
from aimass.tasks.recipe import Recipe

TASK = "text-generation"
PROMPTS = (
    "Write a one-line headline for: The central bank left interest rates unchanged on Thursday.",
    "What is the capital of France?",
    "Summarise in five words: the football club announced a new manager after a poor season.",
)
ANSWER_TOKENS = 16
# the GGUF name of each LoRA target (llama.cpp's tensor map for llama-style models)
GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$")


# ------------------------------------------------------------------ merging
def deltas(model) -> dict[str, np.ndarray]:
    """Module name (``model.layers.0.self_attn.q_proj``) -> its LoRA update ``B A * scale``, float32."""
    from aimass.llm.lora import PEFT_KEY

    lora = model.lora_
    r = int(lora["r"])
    alpha = float(lora.get("lora_alpha", r))
    scale = alpha / (r**0.5) if lora.get("use_rslora") else alpha / r
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in model.adapter_state().items():
        match = PEFT_KEY.match(key)
        if match is None:
            raise ConfigError(f"The adapter weight {key!r} is not a LoRA matrix; it cannot be merged.")
        parts.setdefault(match["module"], {})[match["part"]] = tensor.detach().float().numpy()
    return {name: (ab["B"] @ ab["A"]) * scale for name, ab in parts.items()}


def merged(model):
    """(tokenizer, a fresh transformers model with the adapter merged into its weights)."""
    import torch

    from aimass.llm.backbone import get_llm_backbone

    tokenizer, network = get_llm_backbone(model.backbone_).load()
    with torch.no_grad():
        for name, delta in deltas(model).items():
            network.get_submodule(name).weight += torch.from_numpy(delta)
    return tokenizer, network


# --------------------------------------------------------------- safetensors
def write_transformers(model, folder: Path) -> dict:
    tokenizer, network = merged(model)
    network.config.architectures = [type(network).__name__]
    network.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    (folder / "predict.py").write_text(PREDICT_PY, encoding="utf-8")
    write_requirements(folder, ("torch", "transformers"))
    check = _check(model, _load_transformers(folder))
    (folder / "README.md").write_text(_readme_transformers(model, check))
    return check


def _load_transformers(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True).eval()


# ------------------------------------------------------------------- GGUF
def write_gguf(model, folder: Path, quant: str) -> dict:
    """``model.gguf``: the base GGUF with the merged projections in ``quant`` (``q8_0``/``f16``)."""
    import gguf

    from aimass.llm.backbone import get_llm_backbone

    source = get_llm_backbone(model.backbone_).gguf
    if source is None:
        raise ConfigError(
            f"The base model '{model.backbone_}' has no GGUF file to start from.",
            hint="Export it with --format safetensors, then convert that folder with llama.cpp's "
            "convert_hf_to_gguf.py.",
        )
    reader = gguf.GGUFReader(str(source()))
    arch = str(reader.fields["general.architecture"].contents())
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_heads = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    updates, targets = {}, {}
    for name, delta in deltas(model).items():
        match = LAYER.search(name)
        if match is None or match[2] not in GGUF_NAMES:
            raise ConfigError(f"The adapter trains {name}, which has no GGUF tensor name here.")
        if match[2] in ("q_proj", "k_proj"):  # llama.cpp stores q and k rows in its rotary order
            delta = _permute(delta, heads if match[2] == "q_proj" else kv_heads)
        key = f"blk.{match[1]}.{GGUF_NAMES[match[2]]}.weight"
        updates[key], targets[key] = delta, name
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "f16": gguf.GGMLQuantizationType.F16}[quant]
    writer = gguf.GGUFWriter(str(folder / "model.gguf"), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
    for tensor in reader.tensors:
        delta = updates.pop(tensor.name, None)
        if delta is None:  # untouched: the base's own bytes
            writer.add_tensor(
                tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type
            )
            continue
        weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32) + delta
        if qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(tensor.name, weight.astype(np.float16))
        else:
            data = gguf.quants.quantize(weight, qtype)
            writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=qtype)
    if updates:
        raise ConfigError(f"The base GGUF has no tensor for {sorted(updates)[0]}; it cannot be merged.")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (folder / "Modelfile").write_text(MODELFILE)
    check = _check(model, _read_back(model, folder / "model.gguf", reader, targets, (heads, kv_heads)))
    check["quant"] = quant
    (folder / "README.md").write_text(_readme_gguf(model, check))
    return check


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a q or k projection in llama.cpp's order (its converter's ``permute``)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a q or k projection back in transformers' order (the inverse of :func:`_permute`)."""
    return (
        weight.reshape(heads, weight.shape[0] // heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _read_back(model, path: Path, base, targets: dict[str, str], heads: tuple[int, int]):
    """The base transformers model with each projection as the GGUF at ``path`` holds it (read
    from disk). Refuses a file whose other tensors are not the ``base`` reader's bytes, or a row
    order that does not map the base's own GGUF q and k onto the cached transformers weights."""
    import gguf
    import torch

    from aimass.llm.backbone import get_llm_backbone

    _, network = get_llm_backbone(model.backbone_).load()
    theirs = {t.name: t for t in base.tensors}

    def weight(tensor) -> torch.Tensor:
        name = targets[tensor.name]
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if name.endswith(("q_proj", "k_proj")):
            values = _unpermute(values, heads[0] if name.endswith("q_proj") else heads[1])
        return torch.from_numpy(np.ascontiguousarray(values))

    with torch.no_grad():
        for gguf_name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight"):
            if gguf_name in targets and gguf_name in theirs:
                cached = network.get_submodule(targets[gguf_name]).weight
                if not torch.equal(weight(theirs[gguf_name]), cached):
                    raise ConfigError(
                        f"The base GGUF's {gguf_name} is not the cached base weight in "
                        "any row order this exporter knows; it cannot be merged."
                    )
        replaced = 0
        for tensor in gguf.GGUFReader(str(path)).tensors:
            before = theirs.get(tensor.name)
            if tensor.name not in targets:
                same = before is not None and tensor.tensor_type == before.tensor_type
                if not (same and np.array_equal(tensor.data, before.data)):
                    raise ConfigError(f"The written GGUF's {tensor.name} is not the base's; export again.")
                continue
            network.get_submodule(targets[tensor.name]).weight.copy_(weight(tensor))
            replaced += 1
    if replaced != len(targets):
        raise ConfigError(f"The written GGUF holds {replaced} of {len(targets)} projections; export again.")
    return network.eval()


# ------------------------------------------------------------------ checking
def _check(model, exported) -> dict:
    """Teacher-force ``exported`` on each prompt plus aimass's greedy answer to it: the largest
    logit difference and how often its next token is aimass's."""
    import torch

    from aimass.llm import decode

    tokenizer, diffs, same, positions, answers = model.base_.tokenizer, [], 0, 0, []
    for prompt in PROMPTS:
        answer = model.generate(prompt, max_tokens=ANSWER_TOKENS, temperature=0.0).choices[0]
        prompt_ids = decode.chat_ids(tokenizer, [{"role": "user", "content": prompt}])
        answer_ids = list(answer.token_ids)
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.inference_mode():
            with model.base_.using(model.adapter_) as ours:
                want = ours(input_ids=ids).logits[0, len(prompt_ids) - 1 :].float()
            got = exported(input_ids=ids).logits[0, len(prompt_ids) - 1 :].float()
        diffs.append(float((got - want).abs().max()))
        same += int((got.argmax(-1) == want.argmax(-1)).sum())
        positions += want.shape[0]
        answers.append({"prompt": prompt, "answer": answer.text})
    return {
        "check_inputs": len(PROMPTS),
        "max_abs_diff_logits": round(max(diffs), 6),
        "next_token_agreement": round(same / positions, 4),
        "positions": positions,
        "answers": answers,
    }


def _closeness(check: dict, loader: str) -> str:
    return (
        f"When this folder was written it was loaded back with {loader} and teacher-forced on "
        f"{check['check_inputs']} prompts with aimass's greedy answers: its next token was aimass's at "
        f"{check['next_token_agreement']:.1%} of {check['positions']} positions, and its logits differed "
        f"by at most {check['max_abs_diff_logits']:.2g}."
    )


def _readme_transformers(model, check: dict) -> str:
    example = check["answers"][0]
    return f"""# A fine-tuned language model ({model.backbone_} + LoRA, merged)

A transformers folder: the LoRA adapter that aimass trained is merged into the base weights, so any
runtime that loads a Hugging Face causal LM serves it as it is.

```bash
pip install -r requirements.txt
python predict.py {json.dumps(example["prompt"])}
# {example["answer"]}
```

From Python, `AutoModelForCausalLM.from_pretrained(".")` and `AutoTokenizer.from_pretrained(".")`
(ask through the tokenizer's chat template, as `predict.py` does). vLLM: `vllm serve .`.

{_closeness(check, "transformers")}
"""


def _readme_gguf(model, check: dict) -> str:
    example = check["answers"][0]
    return f"""# A fine-tuned language model ({model.backbone_} + LoRA, merged) as GGUF

`model.gguf` holds the base model's GGUF (tokenizer and chat template included) with every
projection the adapter trained replaced by its merged weight in {check["quant"]}; the other tensors
are the base's own.

```bash
llama-server -m model.gguf --port 8080          # llama.cpp: an OpenAI-compatible server
llama-cli -m model.gguf -cnv -p {json.dumps(example["prompt"])}
ollama create my-model -f Modelfile && ollama run my-model
```

aimass answered {json.dumps(example["prompt"])} with {json.dumps(example["answer"])}.

{_closeness(check, "gguf's reader over the base model")}
"""


PREDICT_PY = '''"""Answer with this model: python predict.py "a prompt" (needs torch, transformers)."""

import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).resolve().parent


def answer(prompt: str, max_new_tokens: int = 64) -> str:
    tokenizer = AutoTokenizer.from_pretrained(HERE)
    model = AutoModelForCausalLM.from_pretrained(HERE).eval()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


if __name__ == "__main__":
    print(answer(" ".join(sys.argv[1:]) or "Hello!"))
'''

MODELFILE = """FROM ./model.gguf
PARAMETER temperature 0
"""


def _recipe(write, packages: tuple[str, ...], how: str) -> Recipe:
    return Recipe(
        write=None,
        script=None,
        runner="",
        packages=packages,
        samples=lambda: list(PROMPTS),
        unit="prompt",
        example=PROMPTS[:1],
        how=how,
        folder=write,
    )


TRANSFORMERS = register_export(
    TASK,
    "safetensors",
    _recipe(write_transformers, ("torch", "transformers"), "transformers folder, LoRA merged"),
)
GGUF = register_export(
    TASK, "gguf", _recipe(partial(write_gguf, quant="q8_0"), (), "GGUF, merged projections q8_0")
)
GGUF_F16 = register_export(
    TASK, "gguf-f16", _recipe(partial(write_gguf, quant="f16"), (), "GGUF, merged projections f16")
)
