"""Pictures a person looks at while a model trains: the loss curve and a grid of sample images.

Both are written atomically (tmp + os.replace) so that an image viewer refreshing the file never
sees half a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _atomic_png(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    write(tmp)
    os.replace(tmp, path)
    return path


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Running mean over ``window`` points (shorter at the start), for a readable noisy loss."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or window <= 1:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_loss_curve(steps: Sequence[int], losses: Sequence[float], path: str | Path, title: str = "training loss") -> Path:
    """Write a PNG of loss against step: raw values faint, a running mean on top, log y-axis when positive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.asarray(steps)
    losses = np.asarray(losses, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if len(steps):
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8, label="loss")
        ax.plot(steps, smooth(losses, max(1, len(losses) // 50)), color="tab:blue", lw=1.8, label="running mean")
        if np.all(losses > 0):
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()

    def write(p: Path) -> None:
        fig.savefig(p, format="png")
        plt.close(fig)

    return _atomic_png(Path(path), write)


def image_grid(rows: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tile rows of images into one uint8 image.

    ``rows``: each an array (N, H, W, 3) (uint8, or float in [0, 1]); all rows the same N, H, W.
    """
    arrs = []
    for r in rows:
        r = np.asarray(r)
        if r.dtype != np.uint8:
            r = (np.clip(r, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if r.ndim == 3:
            r = np.repeat(r[..., None], 3, axis=-1)
        arrs.append(r)
    n, h, w = arrs[0].shape[:3]
    out = np.full((len(arrs) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, r in enumerate(arrs):
        for j in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + h, x : x + w] = r[j]
    return out


def save_image_grid(rows: Sequence[np.ndarray], path: str | Path, scale: int = 1) -> Path:
    """Write :func:`image_grid` of ``rows`` as a PNG (nearest-neighbour upscaled by ``scale``)."""
    from PIL import Image

    grid = image_grid(rows)
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return _atomic_png(Path(path), lambda p: img.save(p, format="PNG"))
