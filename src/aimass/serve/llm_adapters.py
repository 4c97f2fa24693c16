"""Fine-tuned language models answered by name without a deployment, as vLLM serves LoRA adapters.

A version of a text-generation model is only its LoRA adapter (~9 MB), and every adapter of one
backbone runs on the one shared base copy (:mod:`aimass.llm.hub`). So the OpenAI routes answer any
registered fine-tune the caller may use (``NAME``, ``NAME:VERSION``, ``NAME@ALIAS``, and an earlier
epoch's checkpoint of a version, ``NAME:VERSION:ckpt-step-N``) the moment training registers it:
the adapter is attached on first use and kept for the next requests. At most
``AIMASS_LLM_ADAPTERS`` (default 16) are kept beyond the deployed ones; the least recently used
idle one is detached first, and one that is decoding is never detached.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from contextlib import contextmanager

from aimass.errors import AimassError
from aimass.store import registry

TASK = "text-generation"


def _limit() -> int:
    try:
        return max(1, int(os.environ.get("AIMASS_LLM_ADAPTERS", "16")))
    except ValueError:
        return 16


class Adapters:
    """Registered fine-tunes with their adapters attached, least recently used first."""

    def __init__(self, size: int | None = None):
        self.size = size or _limit()
        self._models: OrderedDict[str, object] = OrderedDict()
        self._busy: Counter = Counter()
        self._lock = threading.Lock()

    def find(self, name: str):
        """``(ref, model)`` of the registered fine-tune ``name`` names, attached now if it was not;
        None when ``name`` names no registered version, or one that does not generate text."""
        ref, step = registry.split_checkpoint(name)
        try:
            record = registry.get_version(ref)
        except AimassError:
            return None
        if record.task != TASK:
            return None
        ref = record.ref if step is None else f"{record.ref}:ckpt-step-{step}"
        try:
            return ref, self._model(ref)
        except AimassError:  # no checkpoint kept at that step
            return None

    @contextmanager
    def lease(self, ref: str):
        """The model of ``ref`` held attached while the block decodes with it (attached again if it
        was detached since it was found)."""
        model = self._model(ref, hold=True)
        try:
            yield model
        finally:
            with self._lock:
                self._busy[ref] -= 1
                self._evict()

    def names(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def _model(self, ref: str, hold: bool = False):
        with self._lock:
            model = self._models.get(ref)
            if model is not None:
                self._models.move_to_end(ref)
                self._busy[ref] += hold
                return model
        from aimass.tasks.text_generation import TextGenerator  # torch: only where a fine-tune answers

        version, step = registry.split_checkpoint(ref)
        loaded = TextGenerator.load(registry.open_folder(registry.get_version(version)), checkpoint=step)
        with self._lock:
            model = self._models.get(ref)
            if model is None:
                model = self._models[ref] = loaded
            else:  # another request attached it meanwhile: one attachment is enough
                loaded.release()
            self._models.move_to_end(ref)
            self._busy[ref] += hold
            self._evict(keep=ref)
        return model

    def _evict(self, keep: str | None = None) -> None:
        """Detach the least recently used idle adapters beyond ``size`` (under the lock), never
        ``keep`` (the one just asked for)."""
        while len(self._models) > self.size:
            idle = next((ref for ref in self._models if not self._busy[ref] and ref != keep), None)
            if idle is None:  # every one is decoding: over the cap until one ends
                return
            self._models.pop(idle).release()
