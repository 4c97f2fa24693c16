"""The ``predict.py`` scripts that :func:`aimass.exporters.export` writes into an exported folder.

Each script runs on its own, next to the files of one export, with only the few packages its
README lists (no aimass). One file per task and format: ``text_onnx.py``, ``image_onnx.py``,
``text_torch.py``, ``image_torch.py``. What two scripts share lives once, in ``image_prep.py`` and
``text_prep.py``: in this package a script imports it between ``# shared: FILE`` and
``# end shared``; :func:`script` writes FILE's code there instead, so the exported file imports
nothing of aimass.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = re.compile(r"^# shared: (\w+\.py)\b.*?^# end shared\n", re.MULTILINE | re.DOTALL)
PREAMBLE = re.compile(r'\A""".*?"""\n+(from __future__ import annotations\n+)?', re.DOTALL)


def script(name: str) -> str:
    """The text of the standalone script ``name`` with each shared file's code written in."""

    def inline(found: re.Match) -> str:
        code = PREAMBLE.sub("", (HERE / found.group(1)).read_text(encoding="utf-8"))
        return f"# from {found.group(1)} (one source for the exported scripts)\n{code}"

    return SHARED.sub(inline, (HERE / name).read_text(encoding="utf-8"))
