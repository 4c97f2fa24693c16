"""Where aimass keeps its files: ``AIMASS_HOME`` (default ``~/.aimass``).

Paths inside the home are stored relative to it (:func:`to_home`) and resolved against the
home in use when read (:func:`from_home`), so a home moved to another disk or restored from
a backup finds its own files:

>>> to_home("/srv/aimass/models/reviews/v1", root=Path("/srv/aimass"))
'models/reviews/v1'
>>> from_home("models/reviews/v1", root=Path("/mnt/backup/aimass"))
'/mnt/backup/aimass/models/reviews/v1'
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from aimass.errors import ConfigError, NotFoundError

HOME_FOLDERS = ("models", "datasets", "runs", "jobs", "backbones", "cache", "samples", "tmp", "logs")
FEATURES = (
    "cache/features"  # the embedding cache fits write (aimass.train.cache), cleared on a dataset delete
)


_PRIVATE: set[Path] = set()  # homes this process made owner-only (checked once each)


def home() -> Path:
    """The root folder for datasets, models, caches and the metadata database (absolute), created
    mode 0700: it holds training data, the webhooks' signing secrets and the keys' hashes."""
    root = Path(os.environ.get("AIMASS_HOME") or Path.home() / ".aimass").expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if root not in _PRIVATE:
        _owner_only(root)
        _PRIVATE.add(root)
    return root


def _owner_only(folder: Path) -> None:
    """Make ``folder`` 0700 when it is this user's and others may enter it (an older aimass made
    its home 0755). A folder of another user or a shared one (sticky, like ``/tmp``) is left as it
    is, and so is one on a read-only disk."""
    try:
        found = folder.stat()
        if found.st_mode & 0o077 and not found.st_mode & 0o1000 and found.st_uid == os.getuid():
            folder.chmod(0o700)
    except OSError:
        pass


def subdir(name: str) -> Path:
    """A folder under :func:`home`, created on first use."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def to_home(path: str | Path, root: Path | None = None) -> str:
    """``path`` relative to the home (POSIX, e.g. ``models/reviews/v1``) when it lies inside it;
    any other path absolute, as given.

    Args:
        path: A path; a relative one is taken from the current directory.
        root: The home (default: :func:`home`).
    """
    root = root or home()
    path = Path(path).absolute()
    if path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    real_root, real = Path(os.path.realpath(root)), Path(os.path.realpath(path))
    return real.relative_to(real_root).as_posix() if real.is_relative_to(real_root) else str(path)


def from_home(stored: str, root: Path | None = None) -> str:
    """The absolute path of a stored path, in the home in use.

    A relative path is taken from the home. An absolute one under the home is kept. An
    absolute one elsewhere was written by an older aimass in a home that has since moved
    (``/old/home/models/reviews/v1``): its part from a known home folder on
    (``models/reviews/v1``, see ``HOME_FOLDERS``) is used when the current home holds it;
    otherwise the path is kept as stored.

    Args:
        stored: The path as stored.
        root: The home (default: :func:`home`).
    """
    root = root or home()
    path = Path(stored)
    if path.is_absolute() and path.is_relative_to(root):
        return stored
    local = root / path
    if path.is_absolute() or not local.exists():
        moved = _moved(path, root)
        if moved is not None:
            return str(moved)
    return stored if path.is_absolute() else str(local)


def _moved(path: Path, root: Path) -> Path | None:
    """The first ``root/<known folder>/...`` built from the tail of ``path`` that exists."""
    parts = path.parts
    for i, part in enumerate(parts):
        if part in HOME_FOLDERS:
            candidate = root.joinpath(*parts[i:])
            if candidate.exists():
                return candidate
    return None


def data_roots() -> list[Path]:
    """Folders whose files a REST caller may name as data (import, train, auto): ``AIMASS_HOME/
    uploads`` plus the operator's ``AIMASS_DATA_ROOTS`` (separated by ``os.pathsep``), real paths.
    The CLI and Python API run as the user and read any path the user can."""
    extra = [p for p in os.environ.get("AIMASS_DATA_ROOTS", "").split(os.pathsep) if p.strip()]
    roots = [subdir("uploads"), *(Path(p).expanduser() for p in extra)]
    return [Path(os.path.realpath(r)) for r in roots]


def outside_roots(value: str, roots: list[Path]) -> Path | None:
    """``value`` as a real path when it names a file or folder outside every root: absolute,
    ``~``, ``..``, or a relative path that exists from the current directory; None for a
    name (a dataset, a backbone) or a path inside a root. Inside ``AIMASS_HOME/uploads`` only a
    path within one upload's folder (``uploads/<id>/...``, the ``path`` an upload answers) is
    granted: the folder of every project's uploads, or a file left beside them, is no one's. Which
    caller may name a path in one upload's folder is its project's to decide (:func:`upload_of`)."""
    real = _real(value)
    return None if real is None or any(_inside(real, r) for r in roots) else real


def upload_of(value: str) -> str | None:
    """The folder name (the upload's id) of the upload ``value`` names a path in
    (``AIMASS_HOME/uploads/<id>/...``, read as :func:`outside_roots` reads a path, links
    resolved); None for a name or any other path. An upload is data of the project it was sent to:
    the REST layer decides who may name it."""
    real = _real(value)
    uploads = Path(os.path.realpath(subdir("uploads")))
    if real is None or not _inside(real, uploads):
        return None
    return real.relative_to(uploads).parts[0]


def _real(value: str) -> Path | None:
    """``value`` as a real path when it reads as one (absolute, ``~``, ``..``, or a relative path
    that exists from the current directory); None for a name (a dataset, a backbone)."""
    if "\0" in value:  # no file has such a name: nothing can be opened by it
        return None
    value = value.removeprefix("hf:")  # transformers reads a folder named so (hub_repo refuses it)
    path = Path(value).expanduser()
    if not (path.is_absolute() or value.startswith("~") or ".." in path.parts or _exists(path)):
        return None
    return Path(os.path.realpath(path))


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")  # NAME or ORG/NAME


def hub_repo(name: str) -> str:
    """The Hugging Face Hub id of ``hf:ORG/NAME``; a ConfigError when the rest is not a Hub id, or
    names a folder of this machine (transformers would read that folder instead: ``hf:/srv/x``
    or ``hf:tmp/x`` must not reach past the data roots a path is held to).

    >>> hub_repo("hf:Qwen/Qwen2.5-0.5B-Instruct")
    'Qwen/Qwen2.5-0.5B-Instruct'
    >>> hub_repo("hf:/etc")
    Traceback (most recent call last):
    ...
    aimass.errors.ConfigError: 'hf:/etc' is not a Hugging Face model id ...
    """
    repo = name.removeprefix("hf:")
    if not HUB_ID.fullmatch(repo) or ".." in repo:
        raise ConfigError(
            f"{name[:200]!r} is not a Hugging Face model id (ORG/NAME).",
            hint="Write hf:ORG/NAME (letters, digits, '-', '_' and '.'); "
            "give a local model folder as its path.",
        )
    if _exists(Path(repo)):
        raise ConfigError(
            f"{name[:200]!r} names a folder of this machine ({repo!r}), not only a Hub model.",
            hint="Give the folder as a path (without hf:) to load it, or run from another directory.",
        )
    return repo


def _inside(real: Path, root: Path) -> bool:
    if not real.is_relative_to(root):
        return False
    return root != Path(os.path.realpath(subdir("uploads"))) or len(real.relative_to(root).parts) >= 2


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system, say: no such file
        return False


def package_dir(package: str, install: str | None = None) -> Path:
    """The folder of an installed model package, found without importing it (``find_spec`` on the
    top-level name); a clear error with ``install`` (default: ``pip install PACKAGE``) otherwise."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            f"The model package '{package}' is not installed.",
            hint=install or f"pip install {package.replace('_', '-')} (or: make install).",
        )
    return Path(spec.submodule_search_locations[0])
