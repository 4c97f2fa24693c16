"""int4 language models on ONNX Runtime: built once per model, decoded in a shared KV buffer.

``aimass serve --llm-quant int4`` serves a base (and its fine-tunes, through LoRA inputs:
:mod:`aimass.llm.int4_lora`) from one ONNX graph with 4-bit ``MatMulNBits`` weights and
``GroupQueryAttention``, built from the model's transformers folder by ONNX Runtime GenAI's model
builder (``onnxruntime-genai``, in ``aimass[llm]``; ~20 s for SmolLM2-135M) and cached under
``AIMASS_HOME/llm-int4/``. The graph is cut to compute logits for a prompt's last position only
(the LM head is 30% of a prompt's work), and where the model came from a Q4_1/Q8_0 GGUF its own
blocks replace the builder's rounding (:mod:`aimass.llm.exact_blocks`: the served weights are then
exactly the fp32 model's).

Decoding runs on plain ``onnxruntime``: :class:`Runner` keeps one KV buffer per layer,
``[max_batch, kv_heads, capacity, head_dim]``, bound as both the past input and the present output
(``GroupQueryAttention`` writes the new token in place). Batch row ``i`` holds the i-th running
sequence, its tokens at positions ``[0, length)``; rows of different lengths share a step (the
attention mask's row sums give each row its length, so no padding is attended). A finished row is
replaced by moving the rows behind it forward.

Why this runtime (measured in ``bench/llm_serving.py``, SmolLM2-135M, 1 thread, over HTTP): 67 tok/s
for one stream and 131 tok/s for eight, against 57 and 53 for llama.cpp's server on the shipped Q4_1
GGUF, and 33 tok/s for aimass's own int8 PyTorch path.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from filelock import FileLock

from aimass import paths
from aimass.errors import ConfigError
from aimass.llm import exact_blocks, int4_lora
from aimass.llm.prefix_cache import PrefixCache

_DONE = "model.onnx"
_FORMAT = "3"  # 2: a GGUF's own blocks (aimass.llm.exact_blocks); 3: + the LoRA graph (int4_lora)
INSTALL = "pip install 'aimass[llm]' (onnxruntime-genai builds the int4 graph)"


def _fingerprint(folder: Path) -> str:
    """A digest of a model folder's config and weight files (names, sizes, mtimes)."""
    h = hashlib.sha256(_FORMAT.encode())
    for f in sorted(folder.iterdir()):
        if f.suffix in (".json", ".safetensors"):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _once(dest: Path, make) -> Path:
    if (dest / _DONE).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        if not (dest / _DONE).is_file():
            make(dest)
    return dest


def built(folder: str | Path, name: str) -> Path:
    """The int4 ONNX folder of the transformers model in ``folder``, built once (file lock)."""
    folder = Path(folder)
    dest = paths.subdir("llm-int4") / f"{_safe(name)}-{_fingerprint(folder)}"
    return _once(dest, lambda d: build(folder, d))


def build(folder: Path, dest: Path) -> Path:
    """Run the model builder on ``folder`` (fp32/fp16 transformers weights) into ``dest``."""
    try:
        import onnxruntime_genai  # noqa: F401  (only to fail early with the install line)
    except ImportError as err:
        raise ConfigError("int4 serving needs onnxruntime-genai.", hint=INSTALL) from err
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        source = work / "source"
        source.mkdir()
        for f in folder.iterdir():  # the builder needs `architectures` in config.json
            if f.name != "config.json" and f.is_file():
                os.symlink(f.resolve(), source / f.name)
        config = json.loads((folder / "config.json").read_text())
        config.setdefault("architectures", ["LlamaForCausalLM"])
        (source / "config.json").write_text(json.dumps(config))
        out = work / "out"
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out)]
        cmd += ["-p", "int4", "-e", "cpu", "-c", str(work / "cache")]
        run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if run.returncode or not (out / _DONE).is_file():
            tail = (run.stderr or run.stdout).strip().splitlines()[-5:]
            raise ConfigError(
                f"Building the int4 graph of {folder} failed: {' | '.join(tail)}",
                hint="Serve this model without --llm-quant int4, or report the model builder's error.",
            )
        last_position_logits(out / _DONE)
        if (folder / "model.safetensors").is_file():
            exact_blocks.rewrite(out / _DONE, folder / "model.safetensors")
        int4_lora.add_inputs(out / _DONE)
        for f in out.iterdir():
            f.chmod(0o644)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def last_position_logits(model_path: Path) -> None:
    """Rewrite the graph so the LM head runs on the last position only (``logits`` [B, 1, V])."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    head = producers["logits"]
    hidden = head.input[0]
    names = ("last_pos_starts", "last_pos_ends", "last_pos_axes")
    for name, value in zip(names, (-1, 2**62, 1)):
        graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.INT64, [1], [value]))
    cut = helper.make_node("Slice", [hidden, *names], ["last_pos_hidden"], name="last_pos_slice")
    head.input[0] = "last_pos_hidden"
    nodes = []
    for node in graph.node:  # the slice goes right before the head (nodes stay sorted)
        if node.name == head.name:
            nodes.append(cut)
        nodes.append(onnx.NodeProto())
        nodes[-1].CopyFrom(node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(model_path))


class Runner:
    """One int4 graph in one ONNX Runtime session, with KV buffers for ``max_batch`` rows."""

    def __init__(self, folder: str | Path, context: int, max_batch: int = 8, threads: int = 1):
        import onnxruntime as ort

        folder = Path(folder)
        config = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
        layers, heads, head_dim = (
            config["num_hidden_layers"],
            config["num_key_value_heads"],
            config["head_size"],
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_mem_pattern = False
        self.folder, self._options = folder, options
        self.session = ort.InferenceSession(str(folder / _DONE), options, providers=["CPUExecutionProvider"])
        self.layers, self.max_batch, self.context = layers, max_batch, context
        self.adapters: dict[str | None, dict[str, np.ndarray]] = {}  # fine-tune (None: zeros) -> inputs
        self.lora_shapes: dict[str, tuple[int, int]] | None = None  # set once the LoRA graph runs
        self._bound: dict[tuple[int, int], tuple] = {}  # binding -> the row adapters it holds
        self._stacked: tuple[tuple[int, int], dict] | None = None  # one binding's stacked inputs
        self.prefixes = PrefixCache()
        # the whole context at once, in anonymous memory mapped lazily in 4 KB pages: memory is
        # committed only as rows fill. (Growing and copying a 100 MB buffer stalled every stream for
        # 0.7-1.4 s; numpy's own large arrays ask for 2 MB huge pages, and the first tokens of a row
        # then faulted in ~360 MB, 1-2 s.)
        shape = (layers, 2, max_batch, heads, context, head_dim)
        self._memory = mmap.mmap(-1, int(np.prod(shape)) * 4)
        self.kv = np.frombuffer(self._memory, np.float32).reshape(shape)
        self._bindings: dict[tuple[int, int], object] = {}

    def _binding(self, first: int, rows: int):
        """An IO binding whose KV inputs and outputs are rows ``[first, first + rows)`` of the buffer."""
        import onnxruntime as ort

        key = (first, rows)
        if key not in self._bindings:
            io = self.session.io_binding()
            for layer in range(self.layers):
                for j, kind in enumerate(("key", "value")):
                    value = ort.OrtValue.ortvalue_from_numpy(self.kv[layer, j, first : first + rows])
                    io.bind_ortvalue_input(f"past_key_values.{layer}.{kind}", value)
                    io.bind_ortvalue_output(f"present.{layer}.{kind}", value)
            self._bindings[key] = io
        return self._bindings[key]

    def add_adapter(self, name: str, model) -> None:
        """Serve fine-tune ``name`` (its LoRA loaded on ``model``) on this graph. The first one
        switches the session to the LoRA graph, which then runs every row (one copy of the weights;
        a row of the base gets zero LoRA inputs, ~12% slower than the plain graph)."""
        if self.lora_shapes is None:
            import onnxruntime as ort

            path = self.folder / int4_lora.GRAPH
            session = ort.InferenceSession(str(path), self._options, providers=["CPUExecutionProvider"])
            self.lora_shapes = {
                i.name[5:-2]: (i.shape[1], 0) for i in session.get_inputs() if i.name.endswith(".A")
            }
            for i in session.get_inputs():
                if i.name.endswith(".B"):
                    key = i.name[5:-2]
                    self.lora_shapes[key] = (self.lora_shapes[key][0], i.shape[2])
            self.session, self._bindings, self._bound = session, {}, {}
            self.adapters[None] = int4_lora.zeros(self.lora_shapes)
        self.adapters[name] = int4_lora.arrays(model, name, self.lora_shapes)

    def remove_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)
        self.prefixes.drop(name)
        self._bound, self._stacked = {}, None  # every binding is made again from live arrays

    def _bind_lora(self, io, key: tuple[int, int], adapters: tuple) -> None:
        """Bind the LoRA inputs of rows running ``adapters``, only when they change. Bindings point
        at the arrays' memory: one adapter's own arrays, or one stacked set (mixed rows) that only
        the binding ``key`` uses."""
        if self._bound.get(key) == adapters:
            return
        if len(set(adapters)) == 1:
            inputs = self.adapters[adapters[0]]
        else:
            if self._stacked is not None:
                self._bound.pop(self._stacked[0], None)  # its arrays are about to go
            inputs = int4_lora.stack([self.adapters[a] for a in adapters])
            self._stacked = (key, inputs)
        for name, value in inputs.items():
            io.bind_cpu_input(name, value)
        self._bound[key] = adapters

    def prefill(self, ids: list[int], row: int, adapter: str | None = None) -> np.ndarray:
        """Feed prompt ``ids`` to empty row ``row``; its longest cached prefix is copied in, not
        computed (:mod:`aimass.llm.prefix_cache`). Returns the next-token logits [vocab]."""
        reuse, kv = self.prefixes.match(ids, adapter)
        if reuse:
            self.kv[:, :, row, :, :reuse] = kv[:, :, :, :reuse]
        logits = self.forward(np.array([ids[reuse:]]), [reuse], first=row, adapters=[adapter])[0]
        self.prefixes.put(ids, adapter, self.kv[:, :, row, :, : len(ids)])
        return logits

    def forward(self, ids: np.ndarray, lengths: list[int], first: int = 0, adapters=None) -> np.ndarray:
        """Feed ``ids`` [n, T] to rows ``first..first+n`` holding ``lengths`` cached tokens each,
        row i through fine-tune ``adapters[i]`` (None: the base); returns the next-token logits
        [n, vocab] (the new tokens join the cache)."""
        rows, new = ids.shape
        adapters = tuple(adapters) if adapters is not None else (None,) * rows
        if self.lora_shapes is None and any(a is not None for a in adapters):
            raise KeyError(f"fine-tune {next(a for a in adapters if a)} is not served on this graph")
        need = max(lengths) + new
        if need > self.context:
            raise ValueError(f"{need} tokens exceed this runner's context of {self.context}")
        mask = (np.arange(need)[None, :] < (np.asarray(lengths)[:, None] + new)).astype(np.int64)
        io = self._binding(first, rows)
        if self.lora_shapes is not None:
            self._bind_lora(io, (first, rows), adapters)
        io.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int64))
        io.bind_cpu_input("attention_mask", mask)
        io.bind_output("logits")
        self.session.run_with_iobinding(io)
        return io.get_outputs()[-1].numpy()[:, -1, :]

    def keep(self, rows: list[int], lengths: list[int]) -> None:
        """Keep batch rows ``rows`` (ascending, holding ``lengths`` tokens) as rows ``0..len(rows)``."""
        for target, (source, length) in enumerate(zip(rows, lengths)):
            if source != target:
                self.kv[:, :, target, :, :length] = self.kv[:, :, source, :, :length]
