"""The README's and docs/'s Python blocks run as written and their links resolve, so the docs cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import shared_backbones

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def indexed_pages() -> list[Path]:
    """docs/index.md, then the pages of docs/ in the order it links them."""
    listed = [DOCS / "index.md"]
    for target in LINK.findall(FENCE.sub("", listed[0].read_text())):
        page = (DOCS / target.split("#")[0]).resolve()
        if page.parent == DOCS and page.suffix == ".md" and page.exists() and page not in listed:
            listed.append(page)
    return listed


def doc_pages() -> list[Path]:
    """README, the indexed pages in index order, then any page the index does not link (by name)."""
    listed = indexed_pages()
    return [README, *listed, *sorted(set(DOCS.glob("*.md")) - set(listed))]


def python_blocks() -> list[tuple[str, str]]:
    """(where, code) of every ```python block, in reading order."""
    return [
        (f"{page.relative_to(ROOT)} block {number}", code)
        for page in doc_pages()
        for number, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S), 1)
    ]


def test_readme_opens_with_the_two_commands():
    first = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first.strip().splitlines()]
    assert commands == ["make quickstart", "make test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_index_lists_every_page():
    unlisted = sorted(p.name for p in set(DOCS.glob("*.md")) - set(indexed_pages()))
    assert not unlisted, f"docs/index.md does not link {unlisted}; add a row for each"


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.*?)\s*$", FENCE.sub("", page.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_relative_links_resolve():
    broken = []
    for page in [*doc_pages(), *sorted((ROOT / "bench" / "results").glob("*.md"))]:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


# The blocks run in order in one interpreter, each in a fresh namespace, as a user pastes them
# into one session (one torch import instead of one per block); later blocks use what earlier
# ones stored (the "reviews" model, reviews.csv), so the README comes first and docs/ follow in
# the order of docs/index.md.
RUNNER = """
import json, sys, traceback
for where, block in json.load(open(sys.argv[1])):
    try:
        exec(compile(block, where, "exec"), {"__name__": "__main__"})
    except BaseException:
        print(f"{where} failed:", block, traceback.format_exc(), sep="\\n", file=sys.stderr)
        sys.exit(1)
"""


def test_doc_python_blocks_run(tmp_path):
    blocks = python_blocks()
    assert len(blocks) >= 2
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    home = shared_backbones(tmp_path / "home")
    env = {**os.environ, "AIMASS_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, "blocks.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_no_merge_conflict_markers_are_left():
    """A merge that left ``<<<<<<<`` / ``>>>>>>>`` lines in a doc or source file fails here."""
    marker = re.compile(r"^(<{7}|>{7}) ", re.MULTILINE)
    files = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("bench/**/*.md")]
    files += [*ROOT.glob("src/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py")]
    files += [*ROOT.glob("src/**/*.html"), ROOT / ".importlinter", ROOT / "pyproject.toml"]
    left = [str(f.relative_to(ROOT)) for f in files if marker.search(f.read_text(encoding="utf-8"))]
    assert not left, f"conflict markers in {left}"
