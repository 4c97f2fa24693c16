"""The command line: ``aimass ...``, a thin shell over the Python API.

``main.py`` holds the data/train/evaluate/predict/registry commands; each other file adds one group
(``serve``: serve, deploy, services, keys, usage; ``compress``; ``export``; ``auto``; ``jobs``;
``batch``; ``stores``: vector stores; ``webhooks``; ``home``: backup and restore;
``access``: users, groups, projects, policies, policy, audit);
``shell.py`` holds the output helpers (tables, ``--json``, errors as exit codes).

Each command imports the API (and what it needs) inside its function, so ``aimass --help`` and a
light command never load the training stack.
"""

from aimass.cli import access, auto, batch, compress, export, home, jobs, serve, stores, webhooks
from aimass.cli.main import app, main

for _group in (serve, compress, export, auto, jobs, batch, stores, webhooks, home, access):
    _group.attach(app)

__all__ = ["app", "main"]
