"""Many photos through one `posekit estimate` call against one call per photo: photos per second.

    python benchmarks/many_photos.py --workdir /work/runs/many [--object 8] [--separate 10]
                                     [--refine none] [--threads 2,1] [--write-docs]

The 100 lmo-dev photos (scene 2) with one part (the driller by default: it is in all 100), each photo with that part's full-object box from
scene_gt_info.json (``bbox_obj``) and its camera from the scene's scene_camera.json. One call: the photos' folder
and a BOP detections JSON of those boxes (``--boxes FILE --objects ID``), results into ``--jsonl``. Separate calls:
the first ``--separate`` photos one `posekit estimate PHOTO --bbox ... --json` each, timed one by one; 100 of them
are extrapolated from their mean (said so in the output). Both use the part's templates from the model store (a
warm-up call, not counted, builds them if there are none) and check that the poses of the photos timed both ways
are the same. Whole processes, wall clock; the load average is recorded before and after. Each comparison runs
once per torch thread count of ``--threads`` (OMP_NUM_THREADS of the posekit processes). Data from
../shared/data/lmo-dev (or $POSEKIT_DATA/lmo-dev); nothing derived from it is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, lmo_dev, write_section  # benchmarks/ is on sys.path

NAMES = {1: "ape", 5: "can", 6: "cat", 8: "driller", 9: "duck", 10: "eggbox", 11: "glue", 12: "holepuncher"}


def gt_boxes(scene: Path, obj_id: int) -> list[dict]:
    """BOP detections (score 1) of the part's full-object boxes in every image of the scene that shows it."""
    gt = json.loads((scene / "scene_gt.json").read_text())
    info = json.loads((scene / "scene_gt_info.json").read_text())
    out = []
    for im, entries in sorted(gt.items(), key=lambda kv: int(kv[0])):
        for k, e in enumerate(entries):
            box = info[im][k]["bbox_obj"]
            if e["obj_id"] == obj_id and box[2] > 0 and box[3] > 0:
                out.append({"scene_id": int(scene.name), "image_id": int(im), "category_id": obj_id,
                            "bbox": [float(v) for v in box], "score": 1.0})
    return out


def timed(args: list[str], log: Path, threads: str) -> tuple[float, int]:
    """Run `python -m posekit ARGS` from the repository (its code) with ``threads`` torch threads, stderr appended
    to ``log``: (wall s, exit)."""
    start = time.perf_counter()
    with open(log, "a") as fh:
        rc = subprocess.run([sys.executable, "-m", "posekit", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=fh, env={**os.environ, "OMP_NUM_THREADS": threads}).returncode
    return time.perf_counter() - start, rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--object", type=int, default=8)
    ap.add_argument("--separate", type=int, default=10, help="photos timed one call each (extrapolated to all)")
    ap.add_argument("--refine", default="none")
    ap.add_argument("--threads", default="2,1", help="torch thread counts to compare with, comma-separated")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    data = lmo_dev()
    scene = data / "test" / "000002"
    photos = sorted((scene / "rgb").glob("*.png"))
    cad = data / "models" / f"obj_{args.object:06d}.ply"
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    log = work / "stderr.log"
    log.write_text("")
    dets = gt_boxes(scene, args.object)
    shown = {d["image_id"] for d in dets}
    photos = [p for p in photos if int(p.stem) in shown]
    boxes = work / "boxes.json"
    boxes.write_text(json.dumps(dets))
    box_of = {d["image_id"]: ",".join(f"{v:g}" for v in d["bbox"]) for d in dets}
    part = ["--cad", str(cad), "--units", "mm", "--refine", args.refine]

    # warm-up, not counted: builds the part's templates into the model store if there are none
    warm = work / "warm.json"
    first = ["estimate", str(photos[0]), *part, "--bbox", box_of[int(photos[0].stem)], "--json", str(warm)]
    if timed(first, log, "2")[1] != 0:
        sys.exit(f"the warm-up call failed; see {log}")
    chosen = json.loads(warm.read_text())["chosen"]["coarse"]
    runs = [compare(photos, scene, part, boxes, box_of, args, work, log, t) for t in args.threads.split(",")]
    result = {"photos": len(photos), "object": args.object, "refine": args.refine, "templates": chosen,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "runs": runs}
    (work / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    if args.write_docs:
        write_section("Many photos in one process", docs_section(result, cad.name))


def compare(photos, scene, part, boxes, box_of, args, work: Path, log: Path, threads: str) -> dict:
    """One call over all photos, then ``args.separate`` calls of one photo each, with ``threads`` torch threads."""
    load_before = os.getloadavg()[0]
    lines = work / f"one_call_{threads}.jsonl"
    # --no-hypotheses: the file holds the ground-truth boxes, as --bbox gives them to the separate calls
    one_wall, one_rc = timed(["estimate", str(scene / "rgb"), *part, "--boxes", str(boxes), "--objects",
                              str(args.object), "--no-hypotheses", "--jsonl", str(lines)], log, threads)
    load_mid = os.getloadavg()[0]
    one = {Path(r["image"]).stem: r for r in map(json.loads, lines.read_text().splitlines())}
    separate, same = [], 0
    for p in photos[: args.separate]:
        out = work / f"separate_{threads}_{p.stem}.json"
        wall, rc = timed(["estimate", str(p), *part, "--bbox", box_of[int(p.stem)], "--json", str(out)], log,
                         threads)
        separate.append(wall)
        if rc == 0 and p.stem in one:
            rec = json.loads(out.read_text())["poses"][0]
            same += rec["R"] == one[p.stem]["poses"][0]["R"] and rec["t"] == one[p.stem]["poses"][0]["t"]
    n = len(photos)
    mean_sep = sum(separate) / len(separate)
    stage = sorted(r["poses"][0]["time_s"] for r in one.values() if r["poses"])
    return {
        "torch_threads": threads,
        "one_call": {"wall_s": round(one_wall, 2), "exit": one_rc, "results": len(one),
                     "photos_per_s": round(n / one_wall, 2),
                     "stage_time_s_median": round(stage[len(stage) // 2], 4) if stage else None},
        "separate": {"timed": len(separate), "wall_s": [round(w, 2) for w in separate],
                     "mean_s": round(mean_sep, 2), "median_s": round(sorted(separate)[len(separate) // 2], 2),
                     "extrapolated_s": round(n * mean_sep, 1), "photos_per_s": round(1 / mean_sep, 3),
                     "same_pose_as_one_call": f"{same} of {len(separate)}"},
        "speed_up": round(n * mean_sep / one_wall, 1),
        "load_1min": {"before": load_before, "after_one_call": load_mid, "after_separate": os.getloadavg()[0]},
    }


def docs_section(r: dict, cad: str) -> str:
    name = NAMES.get(r["object"], f"object {r['object']}")
    n = r["photos"]
    best = max(r["runs"], key=lambda x: x["speed_up"])
    rows = []
    for x in r["runs"]:
        one, sep, load = x["one_call"], x["separate"], x["load_1min"]
        rows.append(f"| {x['torch_threads']} | {one['wall_s']} s | **{one['photos_per_s']}** | {one['stage_time_s_median']} s "
                    f"| {sep['mean_s']} s ({sep['median_s']} s) | {sep['extrapolated_s']} s | {sep['photos_per_s']} "
                    f"| {x['speed_up']}x | {one['results']} (exit {one['exit']}), same poses {sep['same_pose_as_one_call']} "
                    f"| {load['before']:.1f} / {load['after_one_call']:.1f} / {load['after_separate']:.1f} |")
    templates = r["templates"].split(":")[0]  # without the machine's store path
    return f"""
**{n} lmo-dev photos through one `posekit estimate` call: {best['one_call']['photos_per_s']} photos/s against
{best['separate']['photos_per_s']} with one call per photo, {best['speed_up']}x faster (torch threads
{best['torch_threads']}; the table has both thread counts).** Templates only (`--refine {r['refine']}`), the {name}
({cad}, `--units mm`) with its full-object box from scene_gt_info.json (`bbox_obj`), each photo's camera from the
scene's scene_camera.json, {templates}. One call: `posekit estimate test/000002/rgb --boxes boxes.json --objects
{r['object']} --jsonl poses.jsonl` (the boxes as a BOP detections JSON). One call per photo: `posekit estimate
PHOTO --bbox X,Y,W,H --json pose.json`, the first {best['separate']['timed']} photos timed, {n} extrapolated from
their mean.

| torch threads | one call: wall | photos/s | stage time per photo (median, JSON) | a call per photo: mean (median) | {n} calls, extrapolated | photos/s | speed-up | results of the one call | load (1 min) before / after one call / after the separate calls |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Machine: {r['machine']}, other jobs sharing the cores. Whole processes, wall clock, one run each (the separate
calls: each timed once). With 2 torch threads on cores that other jobs also use, each backbone pass waits for a
descheduled thread (see install.md, "One call, by phase"): the stage time per photo shows it. `python
benchmarks/many_photos.py --workdir DIR --write-docs`.
"""

if __name__ == "__main__":
    main()
