"""AAE on real LM-O images: train one workspace per object, estimate with ground-truth boxes, evaluate.

    python benchmarks/aae_lmo.py --workdir /work/runs/aae_lmo [--preset cpu] [--steps N]
                                 [--objects 1,5,6] [--boxes gt-visib] [--write-docs] [--train-only]

Each object's workspace is trained with `posekit train aae` (resumed where a previous run stopped,
skipped when finished), then `posekit estimate --dataset` writes a BOP results CSV over the lmo-dev
targets and `posekit eval` scores it. Wall time per object is kept in WORKDIR/train_times.json.
The data comes from ../shared/data/lmo-dev (or $POSEKIT_DATA/lmo-dev); nothing trained on it is
written into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from _common import lmo_dev, run_posekit, write_section  # benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parent.parent



def workspace_done(ws: Path, steps: int | None) -> bool:
    cfg = ws / "config.json"
    if not (cfg.is_file() and (ws / "codebook.npz").is_file()):
        return False
    want = steps or json.loads(cfg.read_text())["preset"]["steps"]
    import torch

    state = torch.load(ws / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    return int(state.get("step", 0)) >= int(want)


def train_all(data: Path, workdir: Path, objects: list[int], preset: str, steps: int | None) -> dict:
    times_file = workdir / "train_times.json"
    for obj_id in objects:
        ws = workdir / f"obj_{obj_id:06d}"
        if workspace_done(ws, steps):
            print(f"obj {obj_id}: trained already", flush=True)
            continue
        args = ["train", "aae", "--cad", str(data / "models" / f"obj_{obj_id:06d}.ply"), "--out", str(ws),
                "--preset", preset, "--units", "mm"]
        if steps:
            args += ["--steps", str(steps)]
        if (ws / "checkpoints" / "last.pt").is_file():
            args.append("--resume")
        elapsed = run_posekit(*args)
        # Re-read before writing: one stream per core shares this file.
        times = json.loads(times_file.read_text()) if times_file.is_file() else {}
        times[str(obj_id)] = times.get(str(obj_id), 0.0) + elapsed
        tmp = times_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(times, indent=1))
        os.replace(tmp, times_file)
    return json.loads(times_file.read_text()) if times_file.is_file() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--objects", default="1,5,6,8,9,10,11,12")
    ap.add_argument("--boxes", default="gt-visib")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--train-only", action="store_true", help="train the workspaces and stop (run one per core)")
    a = ap.parse_args()
    data = lmo_dev()
    if not data.is_dir():
        sys.exit(f"lmo-dev not found at {data} (set POSEKIT_DATA)")
    objects = [int(v) for v in a.objects.split(",")]
    a.workdir.mkdir(parents=True, exist_ok=True)
    times = train_all(data, a.workdir, objects, a.preset, a.steps)
    if a.train_only:
        return

    results = a.workdir / f"results_{a.boxes}.csv"
    est_s = run_posekit("estimate", "--dataset", str(data), "--model-dir", str(a.workdir), "--boxes", a.boxes,
            "--objects", ",".join(map(str, objects)), "--out", str(results))
    out = a.workdir / f"eval_{a.boxes}"
    run_posekit("eval", "--dataset", str(data), "--results", str(results), "--out", str(out))
    report = json.loads((out / "eval.json").read_text())

    steps_done = {}
    for obj_id in objects:
        cfg = json.loads((a.workdir / f"obj_{obj_id:06d}" / "config.json").read_text())
        steps_done[obj_id] = (cfg["preset"]["name"], a.steps or cfg["preset"]["steps"])
    adds = report["metrics"]["add_s"]["recall_per_object"]
    rows = ["| object | preset, steps | train wall (min) | ADD(-S) 0.1d | AR_MSSD | AR_MSPD |", "|---|---|---|---|---|---|"]
    mean = {"adds": [], "mssd": [], "mspd": []}
    for obj_id in objects:
        o = report["objects"][str(obj_id)]
        r = adds[str(obj_id)][-1]
        mean["adds"].append(r)
        mean["mssd"].append(o["ar_mssd"])
        mean["mspd"].append(o["ar_mspd"])
        name, st = steps_done[obj_id]
        rows.append(f"| {obj_id} | {name}, {st} | {times.get(str(obj_id), float('nan')) / 60:.1f} | "
                    f"{100 * r:.1f} % | {o['ar_mssd']:.3f} | {o['ar_mspd']:.3f} |")
    avg = {k: sum(v) / len(v) for k, v in mean.items()}
    rows.append(f"| **mean** | | | **{100 * avg['adds']:.1f} %** | **{avg['mssd']:.3f}** | **{avg['mspd']:.3f}** |")
    body = "\n".join([
        f"`python benchmarks/aae_lmo.py --workdir WORKDIR --preset {a.preset}"
        + (f" --steps {a.steps}" if a.steps else "") + f" --boxes {a.boxes} --write-docs` on lmo-dev "
        f"({report['counts']['targets']} targets, 100 real images; boxes: {a.boxes}); "
        f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU. Estimation of all targets took {est_s:.0f} s "
        "(process start and model loading included).",
        "",
        *rows,
        "",
        "ADD(-S): ADD-S for eggbox (10) and glue (11), ADD otherwise, recall at 0.1 of the diameter. "
        "AR_MSSD / AR_MSPD: BOP'19 recall averaged over its thresholds (VSD needs depth, which lmo-dev lacks).",
    ])
    print(body)
    if a.write_docs:
        write_section("AAE on real LM-O images (lmo-dev)", body)


if __name__ == "__main__":
    main()
