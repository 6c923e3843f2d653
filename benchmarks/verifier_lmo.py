"""The learned verifier on lmo-dev, offline: an earlier detection run's hits re-ranked by heads trained on renders.

``collect RUN.json OUT``: every hit of a `detect_lmo.py run` (run ungated and unthinned: ``--config
box_overlap=1.01,min_score=0``) with what the verifier reads (the s16 maps of the photo's crop and of the hit's pose
rendered into it, the render's mask, the rule-based checks) into OUT.npz, and its image, part, box and scores into
OUT.json. No label is used to train anything: lmo-dev's ground truth only scores the ranking.

``study OUT --train WS [--seeds 0,1,2]``: heads fitted (as `posekit train verifier` fits them) on the samples a
`posekit train verifier` workspace collected on its renders, one per seed; each ranks the run's hits three ways --
the rules' ``combined`` mean, the verifier alone, and the verifier as one more check in the mean (what the detector
does) -- scored as `detect_lmo.py eval` scores a run: top-1 recall@IoU 0.5 (targets at least half visible) and COCO
AP on amodal boxes as bop_toolkit computes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _common import lmo_dev, torch_threads  # benchmarks/ is on sys.path
from detect_lmo import recall_of


def cmd_collect(args) -> None:
    import torch
    from tqdm import tqdm

    from posekit.data.bop import BopDataset
    from posekit.methods.detect import DetectorConfig, TemplateDetector, TemplateHit
    from posekit.methods.detect.verifier import check_vector
    from posekit.methods.templates import load_workspace
    from posekit.methods.viewbased import image_tensor

    torch_threads()
    run = json.loads(Path(args.run).read_text())
    ds = BopDataset(lmo_dev())
    objects = run["objects"]
    models = {o: ds.load_model(o) for o in objects}
    wss = {o: load_workspace(Path(args.templates) / f"obj_{o:06d}", model=models[o]) for o in objects}
    det = TemplateDetector(wss, models, DetectorConfig())
    maps: dict[str, list] = {"photo": [], "render": [], "mask": [], "checks": []}
    meta = []
    with torch.no_grad():
        for key, rec in tqdm(run["images"].items(), desc="verifier inputs", unit="image", file=sys.stderr):
            fr = ds.frame("test", *(int(v) for v in key.split("/")))
            img = image_tensor(fr.rgb())
            for o in objects:
                hits = [TemplateHit(h["obj_id"], tuple(h["bbox"]), 0.0, np.asarray(h["R"]), np.asarray(h["t"]),
                                    tuple(h["window"]), h["scores"]) for h in rec["hits"] if h["obj_id"] == o]
                if not hits:
                    continue
                fa, fb, w, *_ = det.verify_maps(o, img, fr.camera, np.array([h.window for h in hits]),
                                                np.stack([h.R for h in hits]), np.stack([h.t for h in hits]))
                maps["photo"].append(fa.half().numpy())
                maps["render"].append(fb.half().numpy())
                maps["mask"].append(w.half().numpy())
                maps["checks"].append(np.array([check_vector(h.scores) for h in hits], dtype=np.float32))
                meta += [{"key": key, "obj_id": o, "bbox": list(h.bbox), "scores": h.scores} for h in hits]
    det.close()
    np.savez(f"{args.out}.npz", **{k: np.concatenate(v) for k, v in maps.items()})
    Path(f"{args.out}.json").write_text(json.dumps({"run": args.run, "config": run["config"], "objects": objects,
                                                    "hits": meta}))
    print(f"{len(meta)} hits of {len(run['images'])} images -> {args.out}.npz/.json")


def cmd_study(args) -> None:
    import torch

    from posekit.methods.detect.verifier import Samples, VerifierPreset, fit, get_preset

    torch_threads()
    z = np.load(f"{args.hits}.npz")
    info = json.loads(Path(f"{args.hits}.json").read_text())
    train = Samples.join([Samples.load(p) for p in sorted((Path(args.train) / "samples").glob("*.npz"))])
    cfg = json.loads((Path(args.train) / "config.json").read_text())
    preset = VerifierPreset.from_dict(cfg["preset"]) if "preset" in cfg else get_preset("cpu")
    print(f"training samples: {len(train.label)} ({int(train.label.sum())} right) from {args.train}; "
          f"lmo-dev hits: {len(info['hits'])} from {info['run']}")
    x = [torch.as_tensor(z[k]) for k in ("photo", "render", "mask")]
    checks = torch.as_tensor(z["checks"])
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        head = fit(train, preset, seed)
        with torch.no_grad():
            p = torch.cat([torch.sigmoid(head(*(t[i : i + 2048].float() for t in x), checks[i : i + 2048]))
                           for i in range(0, len(checks), 2048)]).numpy()
        run = {"config": info["config"], "objects": info["objects"], "images": {}}
        for h, v in zip(info["hits"], p, strict=True):
            s = h["scores"]
            n = 4 if "colour" in s else 2  # the rules' checks in the combined mean (with colours: four)
            scores = {**s, "verifier": float(v), "with_verifier": (n * s["combined"] + float(v)) / (n + 1)}
            run["images"].setdefault(h["key"], {"hits": [], "times": {"total": 0.0}})["hits"].append(
                {"obj_id": h["obj_id"], "bbox": h["bbox"], "scores": scores})
        for score in ("combined", "verifier", "with_verifier"):
            if score == "combined" and rows:  # the rules alone: one row, the same for every seed
                continue
            r50, _, ap, _, _ = recall_of(run, score, 3)
            found = sum(v[0] for v in r50.values()) / max(1, sum(v[1] for v in r50.values()))
            per = " ".join(f"{o}:{v[0] / max(v[1], 1):.0%}" for o, v in r50.items())
            rows.append(f"| {score} | {'-' if score == 'combined' else seed} | {found:.1%} | {ap['AP']:.3f} | "
                        f"{ap['AP50']:.3f} | {per} |")
    print("| ranking | seed | recall@0.5 (visib >= 0.5) | AP | AP50 | per object |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("run")
    c.add_argument("out", help="OUT: writes OUT.npz and OUT.json")
    c.add_argument("--templates", required=True, help="the run's templates (obj_XXXXXX workspaces)")
    s = sub.add_parser("study")
    s.add_argument("hits", help="OUT of `collect`")
    s.add_argument("--train", required=True, help="a `posekit train verifier` workspace (its samples/)")
    s.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    {"collect": cmd_collect, "study": cmd_study}[args.cmd](args)


if __name__ == "__main__":
    main()
