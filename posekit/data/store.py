"""The model store: workspaces kept by mesh hash and method, so a part's models are found from its CAD file.

Layout: ``ROOT/<method>/<key>/`` where ROOT is ``$POSEKIT_HOME`` or ``$XDG_CACHE_HOME/posekit``
(``~/.cache/posekit`` by default) and key is the first 16 hex digits of the part's mesh hash, or, for
a method trained for several parts at once (the refiner), of the hash of their sorted mesh hashes.
Each workspace is the method's own folder with its ``config.json`` (method, mesh hash(es), preset),
so anything ``posekit train ... --out DIR`` writes can live here, and the store is read by
scanning ``ROOT/*/*/config.json``: there is no index to go stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


def workspace_config(ws: str | Path) -> dict | None:
    """A workspace folder's config.json as a dict, None where there is none; InputError naming the file when it
    does not read as a JSON object. The one reader every workspace kind goes through."""
    from posekit.errors import InputError

    path = Path(ws) / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable workspace config ({exc})") from None
    return cfg


def read_workspace_config(ws: str | Path, method: str, make: str, what: str | None = None) -> dict:
    """A workspace's config.json, which must be ``method``'s; InputError naming the file (and ``make``, the command
    that makes one) otherwise."""
    from posekit.errors import InputError

    what = what or method
    article = "an" if what[:1].lower() in "aeio" else "a"
    cfg = workspace_config(ws)
    if cfg is None:
        raise InputError(f"{ws}: not {article} {what} workspace (no config.json; make one with `{make}`)")
    found = cfg.get("method")
    if found != method:
        raise InputError(f"{Path(ws) / 'config.json'}: method is {found!r}, not {article} {what} workspace ({method})")
    return cfg


#: the files that make a workspace's results (config and data / weights); logs and previews are not hashed
_DIGEST_SUFFIXES = (".json", ".npz", ".npy", ".pt", ".pth")


def workspace_digest(ws: str | Path) -> str:
    """A short content hash of a workspace (sha256 of its config and data / weight files, names included, first
    16 hex digits): two runs with the same digest used the same model."""
    ws = Path(ws)
    h = hashlib.sha256()
    for f in sorted(p for p in ws.rglob("*") if p.is_file() and p.suffix in _DIGEST_SUFFIXES):
        h.update(str(f.relative_to(ws)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def store_root() -> Path:
    env = os.environ.get("POSEKIT_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "posekit"


def key_for(mesh_hashes: str | list[str]) -> str:
    """The store key of one part (its mesh hash, 16 digits) or of a set of parts (hash of the sorted hashes)."""
    if isinstance(mesh_hashes, str):
        return mesh_hashes[:16]
    hashes = sorted(set(mesh_hashes))
    if len(hashes) == 1:
        return hashes[0][:16]
    return hashlib.sha256(",".join(hashes).encode()).hexdigest()[:16]


def workspace_path(method: str, mesh_hashes: str | list[str], root: Path | None = None) -> Path:
    """Where ``posekit train <method>`` without --out keeps the workspace of these parts."""
    return (root or store_root()) / method / key_for(mesh_hashes)


@dataclass
class StoreEntry:
    """One stored workspace: method, the parts it covers (mesh hashes and names), preset, steps, date, size."""

    path: Path
    method: str
    mesh_hashes: list[str]
    names: list[str]
    preset: str
    steps: int | None
    created: str
    size_bytes: int

    def covers(self, mesh_hash: str) -> bool:
        return mesh_hash in self.mesh_hashes


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _entry(path: Path) -> StoreEntry | None:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict) or "method" not in cfg:
        return None
    if "objects" in cfg:  # several parts (the refiner)
        objs = cfg["objects"]
        hashes = [o.get("mesh_hash", "") for o in objs]
        names = [str(o.get("name", "?")) for o in objs]
    else:
        hashes = [cfg.get("mesh_hash", "")]
        names = [str(cfg.get("object", {}).get("name", "?"))]
    preset = cfg.get("preset", {})
    steps = None
    ckpt = path / "checkpoints" / "last.pt"
    if isinstance(preset, dict):
        steps = preset.get("steps")
    created = cfg.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S",
                                                  time.localtime((path / "config.json").stat().st_mtime))
    if ckpt.is_file():
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ckpt.stat().st_mtime))
    return StoreEntry(path=path, method=str(cfg["method"]), mesh_hashes=hashes, names=names,
                      preset=str(preset.get("name", "?")) if isinstance(preset, dict) else str(preset),
                      steps=steps, created=created, size_bytes=_size(path))


def entries(mesh_hash: str | None = None, method: str | None = None, root: Path | None = None) -> list[StoreEntry]:
    """Stored workspaces (of one part / one method when given), newest first."""
    root = root or store_root()
    if not root.is_dir():
        return []
    found = []
    for cfg in sorted(root.glob("*/*/config.json")):
        e = _entry(cfg.parent)
        if e is None or (method and e.method != method) or (mesh_hash and not e.covers(mesh_hash)):
            continue
        found.append(e)
    return sorted(found, key=lambda e: e.created, reverse=True)


def find(mesh_hash: str, method: str, root: Path | None = None) -> StoreEntry | None:
    """The stored workspace of ``method`` for this part: its own key first, else the newest that covers it."""
    own = workspace_path(method, mesh_hash, root)
    if (own / "config.json").is_file():
        e = _entry(own)
        if e is not None and e.covers(mesh_hash):
            return e
    found = entries(mesh_hash, method, root)
    return found[0] if found else None


def remove(entry: StoreEntry) -> None:
    shutil.rmtree(entry.path)
