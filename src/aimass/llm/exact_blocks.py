"""Write a GGUF model's own quantised blocks into its int4 graph, so int4 serves the exact weights.

The shipped SmolLM2 is a Q4_1 GGUF: every projection weight is, per block of 32 inputs,
``d * q + m`` with ``q`` in 0..15, and the tied embedding / LM head is Q8_0 (``d * q``, ``q`` in
-127..127). The fp32 folder aimass serves holds those values dequantised, exactly. The model
builder re-quantises them by round-to-nearest onto its own 4-bit grid, which loses much of what
the GGUF kept (next-token agreement with fp32 0.60, held-out NLL 3.57 against 3.25).

This module recovers each block's codes from the fp32 values (a block is taken only if its codes
rebuild it exactly) and writes them into the built graph:

- a Q4_1 projection becomes ``MatMulNBits`` with the codes, scale ``d`` and the default zero point
  8, plus ``blocksum(x) @ C`` with ``C = m + 8 d`` per block (``MatMulNBits`` zero points are
  integers; a float zero point sends ONNX Runtime to a path 20x slower);
- a Q8_0 LM head (and the embedding gather that shares it) becomes 8-bit with the GGUF's codes.

A weight that is not exactly one of these (a fine-tune with its LoRA merged, a model that was never
quantised) keeps the builder's quantisation, so this is safe to run on any built graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_BLOCK = 32


def q4_1(weight: np.ndarray):
    """(codes uint8 [N, K/32, 32], d [N, K/32], m [N, K/32]) if every block of ``weight`` [N, K]
    is exactly ``d * q + m`` with ``q`` in 0..15, else None. (In float32, as the GGUF reader
    dequantised them.)"""
    n, k = weight.shape
    if k % _BLOCK:
        return None
    blocks = weight.reshape(n, k // _BLOCK, _BLOCK).astype(np.float32, copy=False)
    low, high = blocks.min(-1), blocks.max(-1)
    d = ((high.astype(np.float64) - low) / 15).astype(np.float32)
    safe = np.where(d == 0, np.float32(1), d)
    codes = np.rint((blocks - low[..., None]) / safe[..., None])
    if not np.array_equal(codes * d[..., None] + low[..., None], blocks):
        return None
    return codes.astype(np.uint8), d, low


def q8_0(weight: np.ndarray):
    """(codes int [N, K/32, 32], d [N, K/32]) if every block is exactly ``d * q``, ``|q| <= 127``."""
    n, k = weight.shape
    if k % _BLOCK:
        return None
    blocks = weight.reshape(n, k // _BLOCK, _BLOCK).astype(np.float32, copy=False)
    d = (np.abs(blocks).max(-1).astype(np.float64) / 127).astype(np.float32)
    codes = np.rint(blocks / np.where(d == 0, np.float32(1), d)[..., None])
    if not np.array_equal(codes * d[..., None], blocks):
        return None
    return codes.astype(np.int16), d


def _pack4(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [N, B, 32] (0..15) -> MatMulNBits' [N, B, 16], element 2j in the low nibble."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def _sources(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The graph's weight names (``model.layers.3.attn.qkv_proj``) -> their fp32 [N, K] weights."""
    out = {}
    layer = 0
    while f"model.layers.{layer}.self_attn.q_proj.weight" in state:
        p = f"model.layers.{layer}"
        attn = [state[f"{p}.self_attn.{x}_proj.weight"] for x in "qkv"]
        out[f"{p}.attn.qkv_proj"] = np.concatenate(attn)
        out[f"{p}.attn.o_proj"] = state[f"{p}.self_attn.o_proj.weight"]
        for x in ("gate", "up", "down"):
            out[f"{p}.mlp.{x}_proj"] = state[f"{p}.mlp.{x}_proj.weight"]
        layer += 1
    head = state.get("lm_head.weight", state.get("model.embed_tokens.weight"))
    if head is not None:
        out["lm_head"] = head
    return out


class _Graph:
    """An ONNX graph being edited: its initializers by name, and nodes to insert after others."""

    def __init__(self, model):
        self.graph = model.graph
        self.inits = {i.name: i for i in model.graph.initializer}
        self.after: dict[str, list] = {}  # node name -> nodes that go right after it
        self.blocksums: dict[str, str] = {}  # tensor -> its sums per block of 32

    def put(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
        if name in self.inits:
            self.inits[name].CopyFrom(tensor)
        else:
            self.graph.initializer.append(tensor)
            self.inits[name] = self.graph.initializer[-1]
        return name

    def finish(self) -> None:
        used = {i for node in self.graph.node for i in node.input}
        ordered = []
        for node in self.graph.node:
            if node.op_type == "Constant" and node.output[0] not in used:
                continue
            ordered.append(node)
            ordered.extend(self.after.get(node.name, []))
        del self.graph.node[:]
        self.graph.node.extend(ordered)


def rewrite(model_path: Path, weights: Path) -> dict[str, int]:
    """Put the exact blocks of ``weights`` (a safetensors file) into the graph at ``model_path``.
    Returns how many weights became exact Q4_1, exact Q8_0, and stayed as built."""
    import onnx
    from safetensors.numpy import load_file

    model = onnx.load(str(model_path))
    edit = _Graph(model)
    sources = _sources(load_file(str(weights)))
    counts = {"q4_1": 0, "q8_0": 0, "as_built": 0}
    for node in list(edit.graph.node):
        if node.op_type != "MatMulNBits":
            continue
        key = node.input[1].rsplit(".MatMul.", 1)[0]
        weight = sources.get(key)
        attrs = {a.name: a for a in node.attribute}
        fits = weight is not None and list(weight.shape) == [attrs["N"].i, attrs["K"].i]
        if not fits or attrs["block_size"].i != _BLOCK:
            counts["as_built"] += 1
        elif key == "lm_head" and (exact := q8_0(weight)) is not None:
            _head(edit, node, attrs, *exact)
            counts["q8_0"] += 1
        elif (exact := q4_1(weight)) is not None:
            _projection(edit, node, key, *exact)
            counts["q4_1"] += 1
        else:
            counts["as_built"] += 1
    edit.finish()
    data = model_path.with_name(model_path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(model, str(model_path), save_as_external_data=True, location=data.name)
    return counts


def _head(edit: _Graph, node, attrs, codes: np.ndarray, d: np.ndarray) -> None:
    """The LM head as 8-bit blocks (default zero point 128), and the embedding gather sharing them."""
    edit.put(node.input[1], (codes + 128).astype(np.uint8))
    edit.put(node.input[2], d)
    attrs["bits"].i = 8
    for gather in edit.graph.node:
        if gather.op_type == "GatherBlockQuantized" and gather.input[2] == node.input[2]:
            for a in gather.attribute:
                if a.name == "bits":
                    a.i = 8
            reshape = next(n for n in edit.graph.node if n.output[0] == gather.input[0])
            shape = np.array([attrs["N"].i, attrs["K"].i], np.int64)
            reshape.input[1] = edit.put("lm_head.exact_shape", shape)
            _forget_shape(edit.graph, reshape.output[0])


def _projection(edit: _Graph, node, key: str, codes, d, m) -> None:
    """``MatMulNBits`` over the Q4_1 codes (zero point 8), plus ``blocksum(x) @ (m + 8 d)``."""
    from onnx import helper

    edit.put(node.input[1], _pack4(codes))
    edit.put(node.input[2], d)
    x, k = node.input[0], codes.shape[1] * _BLOCK
    nodes = []
    if x not in edit.blocksums:
        ones = f"exact.blocksum_{k}"
        if ones not in edit.inits:  # [K, K/32]: 1 where input k is in block b
            edit.put(ones, np.repeat(np.eye(k // _BLOCK, dtype=np.float32), _BLOCK, axis=0))
        edit.blocksums[x] = f"{node.name}/exact_blocksum"
        nodes.append(helper.make_node("MatMul", [x, ones], [edit.blocksums[x]], name=edit.blocksums[x]))
    offset = edit.put(f"{key}.exact_offset", (m + 8 * d).T)
    out = node.output[0]
    node.output[0] = f"{out}/nbits"
    shift = f"{node.name}/exact_offset"
    nodes.append(helper.make_node("MatMul", [edit.blocksums[x], offset], [shift], name=shift))
    nodes.append(helper.make_node("Add", [node.output[0], shift], [out], name=f"{node.name}/exact_add"))
    edit.after[node.name] = nodes


def _forget_shape(graph, tensor: str) -> None:
    """Drop the stored shape of ``tensor`` (it changed): ONNX Runtime infers it again."""
    kept = [v for v in graph.value_info if v.name != tensor]
    del graph.value_info[:]
    graph.value_info.extend(kept)
