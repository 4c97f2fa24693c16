"""``aimass stores``: vector stores from the command line (the Python API of :mod:`aimass.retrieval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aimass.cli.shell import JsonFlag, command, emit, out, table

stores_app = typer.Typer(
    help="Vector stores: documents to search by meaning and by words.", no_args_is_help=True
)


def attach(app: typer.Typer) -> None:
    app.add_typer(stores_app, name="stores")


@stores_app.command("create")
@command
def create(
    name: Annotated[str, typer.Argument(help="A name of your own.")],
    documents: Annotated[list[Path], typer.Argument(help="PDF, DOCX, HTML or text files.")],
    model: Annotated[str, typer.Option("--model", help="The encoder: e5-small or minilm.")] = "e5-small",
    as_json: JsonFlag = False,
):
    """A store of DOCUMENTS, chunked and embedded before it returns."""
    from aimass.retrieval import stores

    emit(stores.build(name, list(documents), embedding_model=model), as_json, _render_store)


@stores_app.command("list")
@command
def list_stores(as_json: JsonFlag = False):
    """Every store, newest first."""
    from aimass.retrieval import stores

    rows = [{**s, "files": s["file_counts"]["completed"]} for s in stores.listed()]
    columns = ["id", "name", "status", "files", "usage_bytes", "embedding_model"]
    emit(rows, as_json, lambda r: out.print(table(r, columns, "vector stores")))


@stores_app.command("search")
@command
def search(
    store: Annotated[str, typer.Argument(help="The store's id (vs_...).")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top: Annotated[int, typer.Option("--top", "-n", help="How many passages (1 to 50).")] = 5,
    as_json: JsonFlag = False,
):
    """The store's best passages for QUERY, by meaning and by words."""
    from aimass.retrieval import search as searching

    emit(searching.search(store, query, max_num_results=top), as_json, _render_hits)


@stores_app.command("export")
@command
def export(
    store: Annotated[str, typer.Argument(help="The store's id (vs_...).")],
    folder: Annotated[Path, typer.Argument(help="A new or empty folder to write it into.")],
    as_json: JsonFlag = False,
):
    """Write STORE (documents, attributes, every chunk and its vector) into FOLDER, for `import` elsewhere."""
    from aimass.retrieval import portable

    done = portable.export_store(store, folder)
    emit(done, as_json, lambda d: out.print(f"{d['files']} documents, {d['chunks']} chunks -> {d['folder']}"))


@stores_app.command("import")
@command
def import_(
    folder: Annotated[Path, typer.Argument(help="A folder `aimass stores export` wrote.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name the new store (default: as exported).")
    ] = None,
    as_json: JsonFlag = False,
):
    """A new store from FOLDER, searchable at once: nothing is embedded again."""
    from aimass.retrieval import portable

    emit(portable.import_store(folder, name), as_json, _render_store)


@stores_app.command("push")
@command
def push(
    store: Annotated[str, typer.Argument(help="The store's id (vs_...).")],
    url: Annotated[str, typer.Argument(help="s3://BUCKET[/PREFIX], or a store named in AIMASS_STORES.")],
    as_json: JsonFlag = False,
):
    """Upload STORE (as `export` writes it, sealed) to URL/vector-stores/<id>/v<N>, for `pull` elsewhere."""
    from aimass import sharing
    from aimass.retrieval import portable

    done = portable.push_store(store, sharing.store_url(url))
    emit(
        done,
        as_json,
        lambda d: out.print(
            f"{d['files']} documents, {d['chunks']} chunks -> {d['url']}"
            + (" (already there: nothing sent)" if d["unchanged"] else f" ({d['bytes']:,} bytes)")
        ),
    )


@stores_app.command("pull")
@command
def pull(
    url: Annotated[str, typer.Argument(help="s3://.../vector-stores/<id>[/vN] (without vN: the newest).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name the new store (default: as pushed).")
    ] = None,
    as_json: JsonFlag = False,
):
    """A new store from a pushed one: every file checked against its sums, nothing embedded again."""
    from aimass.retrieval import portable

    emit(portable.pull_store(url, name), as_json, _render_store)


@stores_app.command("delete")
@command
def delete(store: Annotated[str, typer.Argument(help="The store's id (vs_...).")], as_json: JsonFlag = False):
    """Delete the store and its chunks (the documents' uploads stay)."""
    from aimass.retrieval import stores

    emit(stores.remove(store), as_json)


def _render_store(store: dict) -> None:
    counts = store["file_counts"]
    out.print(
        f"[bold]{store['id']}[/] {store['name']!r}: {counts['completed']} of {counts['total']} files embedded"
        + (f", {counts['failed']} failed" if counts["failed"] else "")
        + f" ({store['usage_bytes']:,} bytes, {store['embedding_model']})"
    )


def _render_hits(page: dict) -> None:
    for i, hit in enumerate(page["data"], 1):
        text = " ".join(hit["content"][0]["text"].split())
        out.print(f"[bold]{i}. {hit['filename']}[/] ({hit['score']:.3f})  {text[:200]}")
