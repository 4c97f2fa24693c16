"""One background thread that processes the files added to vector stores, oldest first.

Adding a file answers at once (``in_progress``); this thread chunks and embeds it, one file at a
time, so a large upload never holds a request open and never takes more than one core's share of
embedding away from the models being served. :meth:`Worker.resume` queues what a stopped server
left ``in_progress``, each file for the key that added it (metered and held to its quota as then).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from aimass.retrieval import stores

log = logging.getLogger("aimass.retrieval")
Done = Callable[[str | None, str, int, float], None]  # (key id, encoder, tokens, milliseconds)
Admit = Callable[[str, int], object]  # (key id, tokens) -> a hold with release(), or QuotaExceeded


class Worker:
    """``done`` meters a processed file's tokens to the key that added it, under the store's encoder
    (as it was when the file was started): the tokens of every group embedded, also when the file
    was taken out, its store deleted or an error ended it halfway (the work was done). ``admit`` is
    asked, once a file is chunked and before it is embedded, whether that key may still spend its
    tokens (a quota): files queued by one key one after another are each checked against what the
    ones before them used, so a key past its quota has its next files ``failed``
    (``rate_limit_exceeded``), not embedded."""

    def __init__(self, done: Done | None = None, admit: Admit | None = None):
        self._queue: queue.Queue = queue.Queue()
        self._done, self._admit = done, admit
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0  # files submitted and not processed yet
        self.idle = threading.Event()  # set while nothing is pending
        self.idle.set()

    def submit(self, store_id: str, file_id: str, key_id: str | None = None) -> None:
        with self._lock:
            self._pending += 1
            self.idle.clear()
        self._queue.put((store_id, file_id, key_id))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="vector-stores", daemon=True)
                self._thread.start()

    def resume(self) -> int:
        """Queue every file left ``in_progress``, for the key that added it; how many."""
        found = stores.pending()
        for store_id, file_id, key_id in found:
            self.submit(store_id, file_id, key_id)
        return len(found)

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            store_id, file_id, key_id = item
            began, holds, spent = time.perf_counter(), [], {}  # spent: encoder -> tokens embedded

            def admit(tokens: int, key_id=key_id, holds=holds) -> None:
                if key_id and self._admit is not None:
                    holds.append(self._admit(key_id, tokens))  # held until metered below

            def embedded(model: str, tokens: int, spent=spent) -> None:
                spent[model] = spent.get(model, 0) + tokens

            try:
                stores.process(store_id, file_id, admit, embedded)
            except Exception:  # noqa: BLE001 — the next file is still processed
                log.exception("vector store %s: file %s was not processed", store_id, file_id)
            finally:
                self._meter(key_id, spent, (time.perf_counter() - began) * 1000)
                for hold in holds:
                    hold.release()
            with self._lock:
                self._pending -= 1
                if not self._pending:
                    self.idle.set()

    def _meter(self, key_id: str | None, spent: dict[str, int], ms: float) -> None:
        for model, tokens in spent.items():
            if tokens and self._done is not None:
                try:
                    self._done(key_id, model, tokens, ms)
                except Exception:  # noqa: BLE001 — never stops the thread
                    log.exception("the tokens of key %s were not metered", key_id)
