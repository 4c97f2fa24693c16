"""Which names the running code may write a new version under: one check, consulted wherever a
model version is registered or a dataset name recorded.

A job writes only under the names of its own project, or new ones (which it then adopts, see
:mod:`aimass.jobs.adopt`), and an import over REST only under ``default``'s, so a key that may
submit jobs or import in one project cannot add a version to another project's model or dataset,
which that project's services and trainings would then pick up as "the latest". The job worker
installs its check for the whole process (it runs exactly one job); a server request sets one for
its own call with :func:`checked`. With neither, nothing is checked: the operator's own commands
and Python calls may write any name.

>>> claim("model", "reviews")
'reviews'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Check = Callable[[str, str], None]  # (kind, name) -> None, or raise
_process: Check | None = None
_call: ContextVar[Check | None] = ContextVar("aimass_claims", default=None)


def install(check: Check | None) -> None:
    """Set (or with None, remove) the check for every thread of this process (a job worker)."""
    global _process
    _process = check


@contextmanager
def checked(check: Check) -> Iterator[None]:
    """Apply ``check`` to the writes of this call (this thread or task, and what it awaits)."""
    token = _call.set(check)
    try:
        yield
    finally:
        _call.reset(token)


def claim(kind: str, name: str) -> str:
    """``name`` if this code may write a new ``kind`` (``model`` or ``dataset``) version under it,
    or deploy into the ``service`` of that name; otherwise the check in force raises
    (PermissionDenied)."""
    for check in (_call.get(), _process):
        if check is not None:
            check(kind, name)
    return name
