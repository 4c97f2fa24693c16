"""RAG benchmark: questions about a small staff handbook, answered by ``POST /v1/responses`` with and
without the ``file_search`` tool, through the official ``openai`` client against a live server.

The handbook is 6 short documents (English and Chinese) uploaded with ``purpose="assistants"``
into one vector store. Each of 10 questions has one document that answers it and a phrase the
answer must contain. Measured: whether ``file_search`` put that document first (retrieval), and
whether the answer contains the phrase, with the tool and without it (the same model, greedy,
40 tokens: the peer). The bundled SmolLM2-135M is what ships; pass ``--model`` to measure a served
fine-tune or a larger base.

Bars: retrieval top-1 >= 0.9; answers with file_search >= answers without.

Usage::

    python bench/rag_answers.py [--model smollm2-135m]

Prints one table, writes ``bench/results/rag_answers.json`` and exits 0 whatever the bars say
(about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["AIMASS_HOME"] = tempfile.mkdtemp(prefix="aimass-rag-")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "rag_answers.json"
HANDBOOK = {
    "leave.md": "Every employee is entitled to twenty-five days of paid annual leave each year, plus public "
    "holidays. Unused days may be carried over until the end of March.",
    "expenses.txt": "Claim travel costs within thirty days on form EXP-4471, with the receipts attached. "
    "Finance pays approved claims with the next salary.",
    "hours.txt": "The office opens at 8 am and closes at 6 pm on Fridays. The car park shuts at 7 pm.",
    "it.md": "Forgotten passwords are reset at the IT desk on the second floor, or by calling "
    "extension 4100.",
    "parking.txt": "Parking permits are renewed every January at the reception desk.",
    "zh.txt": "新员工试用期为三个月。试用期内每月有一天带薪病假。",
}
QUESTIONS = [
    ("How many days of paid annual leave does an employee get?", "leave.md", "twenty-five"),
    ("Until when may unused leave days be carried over?", "leave.md", "march"),
    ("Which form do I use to claim travel costs?", "expenses.txt", "EXP-4471"),
    ("Within how many days must travel costs be claimed?", "expenses.txt", "thirty"),
    ("What time does the office close on Fridays?", "hours.txt", "6 pm"),
    ("When does the car park shut?", "hours.txt", "7 pm"),
    ("Which extension do I call for a forgotten password?", "it.md", "4100"),
    ("On which floor is the IT desk?", "it.md", "second"),
    ("When are parking permits renewed?", "parking.txt", "january"),
    ("新员工的试用期有多长？", "zh.txt", "三个月"),
]
console = Console(width=160)


@contextmanager
def live_server(app):
    """uvicorn on 127.0.0.1, a free port, in a thread of this process (the base model loaded here
    is the one it serves); yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not (server.started and server.servers):
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args(argv)

    import openai

    from aimass.llm.hub import HUB
    from aimass.serve import auth
    from aimass.serve.app import create_app

    if args.model in ("smollm2-135m",):
        HUB.base(args.model)  # a base model is served by name once loaded
    _, key = auth.create_key("bench", ["manage"])
    rows, began = [], time.perf_counter()
    with live_server(create_app([])) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=600)
        ids = {
            n: client.files.create(file=(n, t.encode()), purpose="assistants").id for n, t in HANDBOOK.items()
        }
        store = client.vector_stores.create(name="handbook", file_ids=list(ids.values()))
        while client.vector_stores.retrieve(store.id).status != "completed":
            time.sleep(0.3)
        tool = {"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 2}
        for question, source, phrase in QUESTIONS:
            ask = {"model": args.model, "input": question, "max_output_tokens": 40, "temperature": 0}
            grounded = client.responses.create(**ask, tools=[tool], include=["file_search_call.results"])
            alone = client.responses.create(**ask)
            search = grounded.output[0]
            rows.append(
                {
                    "question": question,
                    "retrieved first": search.results[0].filename if search.results else None,
                    "retrieval hit": bool(search.results) and search.results[0].filename == source,
                    "with file_search": phrase.lower() in grounded.output_text.lower(),
                    "without": phrase.lower() in alone.output_text.lower(),
                    "answer with file_search": grounded.output_text.strip(),
                    "answer without": alone.output_text.strip(),
                }
            )
    n = len(rows)
    hits = sum(r["retrieval hit"] for r in rows) / n
    grounded_ok = sum(r["with file_search"] for r in rows) / n
    alone_ok = sum(r["without"] for r in rows) / n
    bars = [
        {"bar": f"retrieval top-1 >= 0.9 (measured {hits:.2f})", "pass": hits >= 0.9},
        {
            "bar": f"answers with file_search >= without ({grounded_ok:.2f} vs {alone_ok:.2f})",
            "pass": grounded_ok >= alone_ok,
        },
    ]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "model": args.model,
        "questions": n,
        "retrieval top-1": hits,
        "answers containing the fact": {"with file_search": grounded_ok, "without": alone_ok},
        "seconds": round(time.perf_counter() - began, 1),
        "rows": rows,
        "bars": bars,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    table = Table(title=f"{n} handbook questions, {args.model}")
    for column in ("question", "retrieved first", "with file_search", "without"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["question"], str(r["retrieved first"]), str(r["with file_search"]), str(r["without"]))
    console.print(table)
    for bar in bars:
        console.print(("PASS " if bar["pass"] else "FAIL ") + bar["bar"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
