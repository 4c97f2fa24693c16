"""Which names the running code may write a new version under: one check, installed by the job
worker, consulted wherever a model version is registered or a dataset name recorded.

A job writes only under the names of its own project, or new ones (which it then adopts, see
:mod:`aimass.jobs.adopt`), so a key that may submit jobs in one project cannot add a version to
another project's model or dataset, which that project's services and trainings would then pick up
as "the latest". Outside a job nothing is installed and nothing is checked: the operator's own
commands and Python calls may write any name.

>>> claim("model", "reviews")
'reviews'
"""

from __future__ import annotations

from collections.abc import Callable

Check = Callable[[str, str], None]  # (kind, name) -> None, or raise
_check: Check | None = None


def install(check: Check | None) -> None:
    """Set (or with None, remove) the check for this process: a job worker runs exactly one job."""
    global _check
    _check = check


def claim(kind: str, name: str) -> str:
    """``name`` if this process may write a new ``kind`` (``model`` or ``dataset``) version under it;
    otherwise the installed check raises (PermissionDenied, naming the owner)."""
    if _check is not None:
        _check(kind, name)
    return name
