"""Write one benchmark's section of docs/benchmarks.md in place (shared by every script in benchmarks/)."""

from __future__ import annotations

import os
import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(heading: str, body: str, path: Path = BENCHMARKS_MD) -> Path:
    """Replace the section ``## {heading}`` (up to the next ``## ``) with ``body``, or append it; atomic."""
    body = body.strip()
    if body.startswith(f"## {heading}"):
        body = body[len(f"## {heading}"):]
    path.parent.mkdir(exist_ok=True)
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"## {heading}\n\n{body.strip()}\n"
    pat = re.compile(rf"## {re.escape(heading)}\n.*?(?=\n## |\Z)", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
