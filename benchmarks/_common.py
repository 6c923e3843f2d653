"""What every script in benchmarks/ shares: where the real data lives, and writing its docs/benchmarks.md section."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"


def lmo_dev() -> Path:
    """The LM-O dev data: $POSEKIT_DATA/lmo-dev, else ../shared/data/lmo-dev next to the repository."""
    env = os.environ.get("POSEKIT_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "lmo-dev"


def run_posekit(*args: str) -> float:
    """Run a posekit command in a fresh interpreter, streaming its output; stop on failure. Wall seconds."""
    cmd = [sys.executable, "-m", "posekit", *args]
    print("+", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - start


def torch_threads() -> int:
    """Set torch's intra-op threads from OMP_NUM_THREADS (default 2, this machine's cores); returns it."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    return torch.get_num_threads()


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
