"""``aimass backup`` and ``aimass restore``: the whole ``AIMASS_HOME`` in one archive and back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aimass.cli.shell import JsonFlag, command, emit, out


def attach(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)


@command
def backup(
    output: Annotated[Path, typer.Argument(help="The archive to write: .tar, or .tar.gz for a smaller one.")],
    include_cache: Annotated[
        bool,
        typer.Option(help="Keep the feature cache and converted backbones (rebuilt on demand otherwise)."),
    ] = False,
    as_json: JsonFlag = False,
):
    """Back up AIMASS_HOME (safe while the server runs): database, datasets, models, jobs, keys."""
    from aimass.store import backup as backups

    done = backups.backup(output, include_cache=include_cache)
    emit(
        done,
        as_json,
        lambda d: out.print(
            f"Backed up {d['files']:,} files ({d['bytes'] / 2**20:,.1f} MiB) to {d['path']} "
            f"in {d['seconds']} s."
            + (f" Changed while read: {', '.join(d['changed'])}." if d["changed"] else "")
            + " It holds the admin token and key hashes: keep it private."
        ),
    )


@command
def restore(
    archive: Annotated[Path, typer.Argument(help="A file written by `aimass backup`.")],
    home: Annotated[
        Path | None, typer.Option(help="An empty or new folder to restore into (default: AIMASS_HOME).")
    ] = None,
    as_json: JsonFlag = False,
):
    """Restore a backup into an empty folder, checking every file against its manifest first."""
    from aimass.store import backup as backups

    done = backups.restore(archive, home)
    emit(
        done,
        as_json,
        lambda d: out.print(
            f"Restored {d['files']:,} files ({d['bytes'] / 2**20:,.1f} MiB, backed up {d['created']}) "
            f"into {d['home']}; every sha256 and the database's integrity check passed.\n"
            f"Use it: export AIMASS_HOME={d['home']}"
        ),
    )
