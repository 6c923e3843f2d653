"""Benchmark: `posekit eval` over the 717 lmo-dev targets with perturbed ground truth, and a naive baseline.

It writes a results CSV of the ground-truth poses perturbed by a random rotation (3 deg sigma per axis,
re-orthonormalised) and translation (3, 3, 15 mm sigma) into a temp folder, then times

- `posekit eval` as a user runs it (a subprocess: start-up, imports, reading, errors, matching, table,
  JSON), with the default error set (ADD, ADD-S for the symmetric objects, re, te, Proj2D, MSSD, MSPD)
  and with `--adds-all` (ADD-S for every object);
- the same evaluation in-process, with the time per stage;
- a naive baseline in the same run: per pose, bop_toolkit-style straightforward code (ADD, ADD-S from an
  all-pairs distance matrix, MSSD, MSPD and Proj2D looping over symmetries) on a sample of the same
  pose pairs, against posekit's batched functions on the same sample.

Usage: python benchmarks/eval.py [--data ../shared/data/lmo-dev] [--baseline-poses 60] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import lmo_dev, write_section  # benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from posekit.data.bop import BopDataset  # noqa: E402
from posekit.data.results import write_results  # noqa: E402
from posekit.data.types import PoseEstimate  # noqa: E402
from posekit.eval import metrics as M  # noqa: E402
from posekit.eval.recall import evaluate  # noqa: E402

DEFAULT_DATA = lmo_dev()


def perturbed_results(ds: BopDataset, path: Path, seed: int = 0) -> list[tuple]:
    """Write the perturbed-GT CSV; return (obj_id, R_est, t_est, R_gt, t_gt, K) per target."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    ests, pairs = [], []
    for t in ds.targets():
        frame = ds.frame("test", t.scene_id, t.im_id)
        for _, g in frame.gts_of(t.obj_id)[: t.inst_count]:
            dR = Rotation.from_rotvec(rng.normal(0.0, np.radians(3.0), 3)).as_matrix()
            R = Rotation.from_matrix(dR @ g.R).as_matrix()  # a method's output is orthonormal
            tt = g.t + rng.normal(0.0, [3.0, 3.0, 15.0])
            ests.append(PoseEstimate(obj_id=t.obj_id, R=R, t=tt, score=1.0, scene_id=t.scene_id, im_id=t.im_id))
            pairs.append((t.obj_id, R, tt, g.R, g.t, frame.camera.K))
    write_results(path, ests)
    return pairs


def naive_errors(R_e, t_e, R_g, t_g, K, pts, syms) -> tuple[float, ...]:
    """Per pose, straight from the formulas (what a bop_toolkit-style loop does), all-pairs ADD-S."""
    pe = pts @ R_e.T + t_e
    pg = pts @ R_g.T + t_g
    add = np.linalg.norm(pe - pg, axis=1).mean()
    d2 = (pg ** 2).sum(1)[:, None] + (pe ** 2).sum(1)[None, :] - 2.0 * pg @ pe.T
    adds = np.sqrt(np.maximum(d2.min(axis=1), 0.0)).mean()

    def proj(p):
        uvw = p @ K.T
        return uvw[:, :2] / uvw[:, 2:]

    pe2 = proj(pe)
    mssd = mspd = prj = np.inf
    for S in syms:
        ps = pts @ (R_g @ S[:3, :3]).T + (R_g @ S[:3, 3] + t_g)
        mssd = min(mssd, np.linalg.norm(pe - ps, axis=1).max())
        d = np.linalg.norm(pe2 - proj(ps), axis=1)
        mspd, prj = min(mspd, d.max()), min(prj, d.mean())
    return add, adds, mssd, mspd, prj


def run_cli(data: Path, results: Path, extra: list[str]) -> tuple[float, float]:
    """(wall-clock s, CPU s of the child: user + system) of one `posekit eval` run."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "posekit", "eval", "--dataset", str(data), "--results", str(results), "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"posekit eval failed ({proc.returncode}): {proc.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return dt, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--baseline-poses", type=int, default=60, help="pose pairs the naive baseline is timed on")
    ap.add_argument("--repeats", type=int, default=2, help="subprocess runs per variant (the best is kept)")
    ap.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    a = ap.parse_args()

    ds = BopDataset(a.data)
    with tempfile.TemporaryDirectory(prefix="posekit-bench-eval-") as tmp:
        results = Path(tmp) / "perturbed.csv"
        pairs = perturbed_results(ds, results)
        cli_default = min(run_cli(a.data, results, []) for _ in range(a.repeats))
        cli_all = min(run_cli(a.data, results, ["--adds-all"]) for _ in range(a.repeats))
        t0 = time.perf_counter()
        report = evaluate(a.data, results, adds_all=True, progress=False)
        inproc = time.perf_counter() - t0

    # Naive baseline vs posekit's batched functions on the same sample of pose pairs.
    rng = np.random.default_rng(1)
    sample = [pairs[i] for i in sorted(rng.choice(len(pairs), size=min(a.baseline_poses, len(pairs)), replace=False))]
    import trimesh

    pts = {o: np.asarray(trimesh.load(ds.model_path(o, eval=True), process=False).vertices) for o in ds.obj_ids}
    syms = {o: ds.symmetry_transforms(o) for o in ds.obj_ids}
    t0 = time.perf_counter()
    naive = [naive_errors(R_e, t_e, R_g, t_g, K, pts[o], syms[o]) for o, R_e, t_e, R_g, t_g, K in sample]
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = []
    for o in sorted({p[0] for p in sample}):
        sel = [p for p in sample if p[0] == o]
        R_e, t_e = np.stack([p[1] for p in sel]), np.stack([p[2] for p in sel])
        R_g, t_g, K = np.stack([p[3] for p in sel]), np.stack([p[4] for p in sel]), sel[0][5]
        mspd, prj = M.mspd_and_proj2d(R_e, t_e, R_g, t_g, K, pts[o], syms[o])
        fast.append(np.stack([M.add(R_e, t_e, R_g, t_g, pts[o]), M.adds(R_e, t_e, R_g, t_g, pts[o], workers=-1),
                              M.mssd(R_e, t_e, R_g, t_g, pts[o], syms[o]), mspd, prj], axis=1))
    t_fast = time.perf_counter() - t0
    order = sorted(range(len(sample)), key=lambda i: sample[i][0])
    max_rel = float(np.max(np.abs(np.concatenate(fast) - np.array(naive)[order]) / np.maximum(np.abs(np.array(naive)[order]), 1e-12)))

    n = len(pairs)
    per_naive, per_fast = t_naive / len(sample), t_fast / len(sample)
    dev = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items())
    lines = [
        "## Evaluation (posekit eval)",
        "",
        f"`python benchmarks/eval.py` on lmo-dev ({n} targets, ground truth perturbed by 3 deg / (3, 3, 15) mm; {dev}).",
        "Wall-clock seconds of `posekit eval` as a subprocess (Python start-up and imports included, best of "
        f"{a.repeats}) and its CPU seconds (user + system: what the run costs when the machine is shared); "
        "the in-process run shows the stages. The naive baseline computes the same errors per pose "
        "straight from the formulas with an all-pairs ADD-S, on a sample of the same pose pairs.",
        "",
        "| what | time |",
        "|---|---|",
        f"| `posekit eval` (ADD, ADD-S for symmetric objects, re, te, Proj2D, MSSD, MSPD) | {cli_default[0]:.2f} s wall, {cli_default[1]:.2f} s CPU |",
        f"| `posekit eval --adds-all` (ADD-S for all {n} targets too) | {cli_all[0]:.2f} s wall, {cli_all[1]:.2f} s CPU |",
        f"| in-process `evaluate(..., adds_all=True)` | {inproc:.2f} s ({stages}) |",
        f"| errors per pose, posekit batched (ADD, ADD-S, MSSD, MSPD, Proj2D; {len(sample)} poses) | {1000 * per_fast:.1f} ms |",
        f"| errors per pose, naive all-pairs baseline (same poses) | {1000 * per_naive:.1f} ms |",
        f"| speed-up of the error computation | {per_naive / per_fast:.1f}x (max relative difference {max_rel:.1e}) |",
        f"| naive baseline extrapolated to {n} targets | {per_naive * n:.1f} s |",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if a.write_docs:
        write_docs(section)


def write_docs(section: str) -> None:
    write_section("Evaluation (posekit eval)", section)


if __name__ == "__main__":
    main()
