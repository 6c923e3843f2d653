"""Benchmark: images/s of `posekit render` against a bare pyrender loop on the same model, in the same run.

For each image size (640x480 full frames and 128x128 crops) and worker count (1, 2) it times

- posekit, matched: the dataset generator with one target per image and no extras (no distractors, primitives,
  occluders, background, noise or blur), writing rgb, depth, mask, mask_visib PNGs and the BOP JSON; its content
  matches the bare loop's, so the ratio is posekit's overhead;
- bare pyrender: a hand-written loop (one mesh, a directional light, a random pose per image, one render, the mask
  from depth > 0) writing the rgb, depth and mask PNGs with PIL; with 2 workers two such loops run in parallel
  processes on half the images each;
- posekit, default randomisation (2-3 objects, primitives, occluders, backgrounds, noise): for information.

Usage: python benchmarks/render.py [--model PLY] [--n-full 40] [--n-crop 120] [--write-docs]
The model defaults to LM-O's cat (../shared/data/lmo-dev/models/obj_000006.ply).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import lmo_dev, write_section  # benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from posekit.render.dataset import RenderJob, default_camera, run_job  # noqa: E402
from posekit.render.scenes import RandomizationConfig, random_rotation  # noqa: E402

DEFAULT_MODEL = lmo_dev() / "models" / "obj_000006.ply"
MATCHED = dict(objects=(1, 1), distractors=(0, 0), primitives=0, occluders=0, background="none", noise=0.0,
               blur=0.0, blur_prob=0.0, lights=(1, 1), out_of_frame=0.0)


def load(path: Path):
    from posekit.cad.load import load_model

    return load_model(path, units="mm")


def _bare_worker(args) -> int:
    """A hand-written pyrender loop: render n images of the model at random poses, write rgb/depth/mask PNGs."""
    path, size, n, seed, out = args
    from PIL import Image

    from posekit.render.egl import import_pyrender

    pr = import_pyrender()
    model = load(Path(path))
    W, H = size
    cam = default_camera((W, H))
    K = cam.K
    tm = model.to_trimesh()
    mesh = pr.Mesh.from_trimesh(tm)
    scene = pr.Scene(ambient_light=[0.3, 0.3, 0.3], bg_color=[0, 0, 0, 1])
    node = scene.add(mesh)
    scene.add(pr.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=10, zfar=10000))
    scene.add(pr.DirectionalLight(intensity=3.0))
    r = pr.OffscreenRenderer(W, H)
    rng = np.random.default_rng(seed)
    f = K[0, 0]
    flip = np.diag([1.0, -1.0, -1.0])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    centre = model.bbox_min + model.bbox_size / 2
    for i in range(n):
        R = random_rotation(rng)
        d = rng.uniform(f * model.diameter / (0.6 * min(W, H)), f * model.diameter / (0.2 * min(W, H)))
        t = np.array([0.0, 0.0, d]) - R @ centre
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = flip @ R, flip @ t
        scene.set_pose(node, T)
        rgb, depth = r.render(scene)
        Image.fromarray(rgb).save(out / f"{i:06d}.png")
        Image.fromarray(np.round(depth / 0.1).astype(np.uint16)).save(out / f"{i:06d}_d.png")
        Image.fromarray(((depth > 0) * 255).astype(np.uint8)).save(out / f"{i:06d}_m.png")
    r.delete()
    return n


def bare_loop(model_path: Path, size, n: int, workers: int, tmp: Path) -> float:
    """Images/s of the bare loop with ``workers`` processes (startup excluded: each process warms up first)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_bare_worker, [(str(model_path), size, 1, 99 + w, str(tmp / f"warm{w}")) for w in range(workers)])
        per = [n // workers + (w < n % workers) for w in range(workers)]
        t0 = time.perf_counter()
        pool.map(_bare_worker, [(str(model_path), size, per[w], w, str(tmp / f"bare{w}")) for w in range(workers)])
        return n / (time.perf_counter() - t0)


def posekit_run(model, size, n: int, workers: int, tmp: Path, cfg: dict) -> float:
    """Images/s of posekit's generator (run_job, as `posekit render` calls it)."""
    job = RenderJob(targets=[model], camera=default_camera(size), count=n, seed=0, config=RandomizationConfig(**cfg))
    out = tmp / f"pk_{size[0]}_{workers}_{len(cfg)}"
    if out.exists():
        shutil.rmtree(out)
    s = run_job(job, out, workers=workers, progress=False)
    return s.images_per_second


def posekit_rate(model, size, n, workers, tmp, cfg) -> float:
    """Like posekit_run but with the pool start-up (process spawn + GL context) subtracted, as for the bare loop:
    the rate over the last n images of a 2n+... run is approximated by timing n and a short warm run."""
    warm = max(2 * workers, 2)
    t_warm = warm / posekit_run(model, size, warm, workers, tmp, cfg)
    t_full = (n + warm) / posekit_run(model, size, n + warm, workers, tmp, cfg)
    return n / max(t_full - t_warm, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--n-full", type=int, default=40, help="images per measurement at 640x480")
    ap.add_argument("--n-crop", type=int, default=120, help="images per measurement at 128x128")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    a = ap.parse_args()
    model = load(a.model)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for size, n in (((640, 480), a.n_full), ((128, 128), a.n_crop)):
            for w in a.workers:
                bare = bare_loop(a.model, size, n, w, tmp)
                pk = posekit_rate(model, size, n, w, tmp, MATCHED)
                full = posekit_rate(model, size, n, w, tmp, {})
                rows.append((size, w, n, bare, pk, full))
                print(f"{size[0]}x{size[1]} workers={w} n={n}: bare {bare:.1f} img/s, posekit matched {pk:.1f} "
                      f"img/s (ratio {pk / bare:.2f}), posekit default randomisation {full:.1f} img/s", flush=True)
    table = format_table(rows, a.model)
    print(table)
    if a.write_docs:
        write_docs(table)


def format_table(rows, model_path: Path) -> str:
    dev = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, " \
          f"PYOPENGL_PLATFORM={os.environ.get('PYOPENGL_PLATFORM', 'egl')}"
    lines = [
        "## Rendering (posekit render)",
        "",
        f"`python benchmarks/render.py` on {model_path.name} ({dev}). Images/s, start-up excluded; posekit "
        "\"matched\" renders the same content as the bare pyrender loop (1 object, no background/noise) and "
        "writes the full BOP output; \"default\" is the default domain randomisation.",
        "",
        "| size | workers | images | bare pyrender | posekit matched | ratio | posekit default | scaling (matched, vs 1 worker) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {size: pk for size, w, _, _, pk, _ in rows if w == 1}
    for size, w, n, bare, pk, full in rows:
        scale = f"{pk / base[size]:.2f}x" if size in base else "-"
        lines.append(f"| {size[0]}x{size[1]} | {w} | {n} | {bare:.1f} | {pk:.1f} | {pk / bare:.2f} | {full:.1f} | {scale} |")
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    write_section("Rendering (posekit render)", section)


if __name__ == "__main__":
    main()
