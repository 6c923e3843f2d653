"""Atomic training checkpoints: a kill at any moment leaves either the old or the new file, never half of one.

A checkpoint is one ``torch.save`` dict (model and optimiser state, step, loss history,
RNG states, the task's own state) written to ``<name>.tmp`` and renamed over the old file
with ``os.replace``, which is atomic on POSIX and Windows for files on one filesystem.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posekit.errors import InputError


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (tmp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; InputError naming the file if it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint there")
    try:
        # Our own files hold numpy arrays and plain Python containers besides tensors.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise InputError(f"{path}: not a readable posekit checkpoint ({type(exc).__name__}: {exc})") from None


def load_weights(net: torch.nn.Module, path: str | Path) -> int:
    """Load a checkpoint's weights into ``net``; returns the step it was saved at.

    A checkpoint whose weights do not fit the network its workspace's config.json describes (edited or
    mixed-up workspace files) is an InputError naming both, not a traceback.
    """
    state = load_checkpoint(path)
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise InputError(f"{path}: the checkpoint does not fit the network described by "
                         f"{Path(path).parent.parent / 'config.json'} ({first})") from None
    return int(state.get("step", 0))


def rng_state() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch CPU and CUDA) so that a resumed run draws the same numbers."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only where CUDA is present)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except RuntimeError:  # a different number of GPUs than at save time: keep the fresh states
            pass
