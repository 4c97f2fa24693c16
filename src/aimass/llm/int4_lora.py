"""LoRA on the int4 graph: one base graph in memory, each fine-tune's adapter fed to it per row.

``add_inputs`` writes a second graph beside the built one (``model_lora.onnx``, same weights
file): after every projection's ``MatMulNBits`` it adds ``(x @ A) @ B``, where ``A`` [rows, K, r]
and ``B`` [rows, r, N] are graph inputs. A batch row running the base gets zeros; rows of
different fine-tunes get their own ``A``/``B`` stacked along the first axis, so one decode step
serves several fine-tunes (as the fp32 path's mixed batches do). The base weights stay the GGUF's
exact blocks (:mod:`aimass.llm.exact_blocks`), and the LoRA product runs in fp32, so a served
fine-tune answers as its fp32 LoRA does up to the int8 activations.

Q, K and V are one packed projection in the graph: their adapters become one ``A`` (their ``A``
matrices side by side) and a block-diagonal ``B``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GRAPH = "model_lora.onnx"
PARTS = {  # the graph's projection -> the transformers modules it packs, in order
    "attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.o_proj": ("self_attn.o_proj",),
    "mlp.gate_proj": ("mlp.gate_proj",),
    "mlp.up_proj": ("mlp.up_proj",),
    "mlp.down_proj": ("mlp.down_proj",),
}


def add_inputs(model_path: Path) -> Path:
    """Write ``model_lora.onnx`` beside ``model_path``: its graph plus a LoRA input pair for every
    projection (not the LM head). Both graphs read the same weights file."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    deltas: dict[str, tuple[list, str]] = {}  # projection output -> (LoRA nodes, their result)
    for node in graph.node:
        if node.op_type != "MatMulNBits" or node.input[1].startswith("lm_head"):
            continue
        key = node.input[1].rsplit(".MatMul.", 1)[0]
        attrs = {a.name: a.i for a in node.attribute}
        a_in, b_in = f"lora.{key}.A", f"lora.{key}.B"
        graph.input.append(helper.make_tensor_value_info(a_in, TensorProto.FLOAT, ["rows", attrs["K"], "r"]))
        graph.input.append(helper.make_tensor_value_info(b_in, TensorProto.FLOAT, ["rows", "r", attrs["N"]]))
        low, delta = f"{node.name}/lora_A", f"{node.name}/lora_B"
        nodes = [
            helper.make_node("MatMul", [node.input[0], a_in], [low], name=low),
            helper.make_node("MatMul", [low, b_in], [delta], name=delta),
        ]
        deltas[node.output[0].removesuffix("/nbits")] = (nodes, delta)  # after any exact offset
    ordered = []
    for node in graph.node:
        ordered.append(node)
        for i, out in enumerate(node.output):
            if out in deltas:
                nodes, delta = deltas[out]
                node.output[i] = f"{out}/before_lora"
                ordered.extend(nodes)
                add = helper.make_node("Add", [node.output[i], delta], [out], name=f"{out}/lora_add")
                ordered.append(add)
    del graph.node[:]
    graph.node.extend(ordered)
    dest = model_path.with_name(GRAPH)
    onnx.save(model, str(dest))
    return dest


def arrays(model, adapter: str, shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """The graph inputs of ``adapter`` (loaded on ``model``'s :class:`aimass.llm.lora.LoraLinear`
    projections): ``lora.<projection>.A`` [1, K, r] and ``.B`` [1, r, N] (scale folded into B).
    ``shapes`` maps each projection to its (K, N); one without this adapter gets rank-1 zeros."""
    from aimass.llm.lora import LoraLinear

    modules = {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}
    out = {}
    for key, (k, n) in shapes.items():
        layer, kind = key.split(".", 3)[:3], key.split(".", 3)[3]
        parts = [modules.get(".".join(layer + [p])) for p in PARTS[kind]]
        a_cols, b_blocks, offset = [], [], 0
        for part, module in zip(PARTS[kind], parts, strict=True):
            if module is None:  # the hub wraps every projection; without it the offsets are unknown
                raise ValueError(f"{'.'.join(layer + [part])} is not a LoRA-ready projection")
            width = module.base.weight.shape[0]
            if adapter in module.adapters:
                a_t, b_t, scale = module.adapters[adapter]
                a, b = a_t.detach().float().numpy(), b_t.detach().float().numpy()
                block = np.zeros((a.shape[0], n), np.float32)
                block[:, offset : offset + width] = (b * scale).T
                a_cols.append(a.T)
                b_blocks.append(block)
            offset += width
        if not a_cols:
            a_cols, b_blocks = [np.zeros((k, 1), np.float32)], [np.zeros((1, n), np.float32)]
        out[f"lora.{key}.A"] = np.ascontiguousarray(np.concatenate(a_cols, 1)[None], np.float32)
        out[f"lora.{key}.B"] = np.ascontiguousarray(np.concatenate(b_blocks, 0)[None], np.float32)
    return out


def zeros(shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Rank-1 zero inputs: a row decoding the base alone."""
    out = {}
    for key, (k, n) in shapes.items():
        out[f"lora.{key}.A"] = np.zeros((1, k, 1), np.float32)
        out[f"lora.{key}.B"] = np.zeros((1, 1, n), np.float32)
    return out


def stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-row inputs stacked along the first axis, each padded to the rows' largest rank."""
    out = {}
    for name in rows[0]:
        arrays_ = [r[name] for r in rows]
        axis = 2 if name.endswith(".A") else 1
        rank = max(a.shape[axis] for a in arrays_)
        padded = []
        for a in arrays_:
            width = [(0, 0)] * 3
            width[axis] = (0, rank - a.shape[axis])
            padded.append(np.pad(a, width))
        out[name] = np.ascontiguousarray(np.concatenate(padded, 0))
    return out
