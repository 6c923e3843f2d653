"""The DeepIM-style refiner: speed per iteration, and accuracy on real LM-O images.

    python benchmarks/refine.py speed [--preset cpu] [--write-docs]
        ms per refiner iteration (render + network) on lmo-dev frames at batch 1 and 8, with pyrender and
        with PyTorch3D as the renderer, in the same run (weights do not change the cost: an untrained
        network of the preset's shape is used).

    python benchmarks/refine.py speed-kinds [--write-docs]
        ms per iteration of every refinement kind in one run (DeepIM cpu, DeepIM on the pretrained trunk,
        the feature search, the feature polish per step), batch 1 and 8, as ratios to the DeepIM cpu refiner.

    python benchmarks/refine.py search RESULTS.csv --refiner features[:KEY=VALUE,...] --out R.csv [--iters 4]
        The feature search from a results CSV's poses (e.g. the templates'), written as a results CSV (for sweep).

    python benchmarks/refine.py speed-search [--images 8] [--results RESULTS.csv] [--write-docs]
        --refine features --depth-sweep with warped in-plane candidates (now) against every candidate rendered, in
        one process on the same frames, alternating: seconds per part, split into render, warps, crops, backbone.

    python benchmarks/refine.py lmo --aae-dir DIR --refiner WS [--boxes gt-visib] [--write-docs]
        AAE alone vs AAE + refiner (1, 2, 4 iterations; 4 with the best-scored iterate kept by --score mask,
        edges and features; with --polish N, default 3, 0 = leave out) on lmo-dev, through `posekit estimate --dataset` and
        `posekit eval`: ADD(-S) 0.1d, AR_MSSD, AR_MSPD per object and mean.

    python benchmarks/refine.py synthetic --refiner WS [--write-docs]
        One iteration on fresh rendered pairs with the training noise: correlation of predicted and true
        updates, median rotation / translation error before and after.

    python benchmarks/refine.py backgrounds --refiner WS [--write-docs]
        The same perturbed poses refined on the real image, on the objects re-rendered at their true poses
        over it, and over grey / black: where the refiner's sim-to-real loss comes from.

    python benchmarks/refine.py perturbed --refiner WS [--polish N] [--write-docs]
        The refiner from ground truth perturbed by known noise (two levels) on the real lmo-dev images:
        the same metrics plus median rotation / translation error after 0, 1, 2, 4 iterations, and the
        iterate each --score mode keeps (with --polish N, also the last iterate polished N steps).

    python benchmarks/refine.py drift --refiner WS [--images 40] [--write-docs]
        Signed offsets after each iteration on real images (is the added error systematic?), depth offset
        per object, an oracle's pick among the iterates and how well each --score ranks them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from _common import (  # benchmarks/ is on sys.path when a script runs
    lmo_dev,
    run_posekit,
    torch_threads,
    write_section,
)

REPO = Path(__file__).resolve().parent.parent
#: the --score modes measured for a trained (DeepIM) refiner; the feature search has only its own ("features")
DEEPIM_SCORES = ("mask", "edges", "features")



def _speed_frame():
    """The speed benchmarks' input: the lmo-dev models, its first frame's observation and (``poses(batch)``) ``batch``
    of its ground-truth instances of the 8 objects (repeated as needed) offset by 5, -5, 20 mm: keys, R, t."""
    from posekit.data.bop import BopDataset

    ds = BopDataset(lmo_dev())
    models = [ds.load_model(o) for o in ds.obj_ids]
    frame = next(iter(ds.frames("test")))
    gts = [g for g in frame.gts if g.obj_id in ds.obj_ids][:8]

    def poses(batch):
        sel = [gts[i % len(gts)] for i in range(batch)]
        return ([g.obj_id for g in sel], np.stack([g.R for g in sel]),
                np.stack([g.t for g in sel]) + np.array([5.0, -5.0, 20.0]))

    return models, frame.observation(), poses


def speed(preset_name: str, repeats: int) -> str:
    import torch

    from posekit.methods.refine.network import build_network
    from posekit.methods.refine.pairs import prepare_object
    from posekit.methods.refine.presets import get_preset
    from posekit.methods.refine.refiner import Refiner

    torch_threads()
    preset = get_preset(preset_name)
    models, obs, poses = _speed_frame()
    objects = [prepare_object(m, preset) for m in models]
    rows = []
    for renderer in ("pyrender", "pytorch3d"):
        torch.manual_seed(0)
        ref = Refiner(build_network(preset), preset, objects, device="cpu", renderer=renderer)
        try:
            for batch in (1, 8):
                keys, R, t = poses(batch)
                ref.refine(obs, keys, R, t, iters=1)  # warm-up (GL context, mesh upload)
                best = None
                for _ in range(repeats):
                    run = ref.refine(obs, keys, R, t, iters=2)
                    cand = (np.mean(run.times), np.mean(run.render_times), np.mean(run.network_times))
                    best = cand if best is None or cand[0] < best[0] else best
                rows.append((renderer, batch, *best))
        finally:
            ref.close()
    base = {b: total for r, b, total, _, _ in rows if r == "pyrender"}
    lines = [
        f"`python benchmarks/refine.py speed --preset {preset_name}` on an lmo-dev frame (8 LM-O objects, "
        f"{preset.crop_size[0]}x{preset.crop_size[1]} crops, meshes decimated to {preset.max_faces} faces; untrained "
        f"network of the preset's shape); {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, no GPU. Best of {repeats} runs of 2 iterations; ms per iteration for the whole batch.",
        "",
        "| renderer | batch | ms / iteration | render + crop ms | network ms | vs pyrender |",
        "|---|---|---|---|---|---|",
    ]
    for r, b, total, rend, net in rows:
        lines.append(f"| {r} | {b} | {1000 * total:.0f} | {1000 * rend:.0f} | {1000 * net:.0f} | {total / base[b]:.2f}x |")
    lines += ["", "`--renderer auto` picks pyrender on the CPU and PyTorch3D on CUDA."]
    return "\n".join(lines)


def speed_kinds(repeats: int) -> str:
    """Every refinement kind in one run on one lmo-dev frame, batch 1 and 8: the DeepIM refiner (cpu preset),
    the refiner on the pretrained trunk (cpu-pretrained and its correlation head cpu-pretrained-corr; untrained
    networks of the presets' shapes: weights do not change the cost), the feature search (--refine features) and its gradient polish (ms per step)."""
    import torch

    from posekit.data.types import RefineRun
    from posekit.methods.featurefit import FeatureRefiner
    from posekit.methods.refine.network import build_network
    from posekit.methods.refine.pairs import prepare_object
    from posekit.methods.refine.presets import get_preset
    from posekit.methods.refine.refiner import Refiner

    torch_threads()
    models, obs, poses = _speed_frame()
    refiners = []
    for name in ("cpu", "cpu-pretrained", "cpu-pretrained-corr"):
        preset = get_preset(name)
        torch.manual_seed(0)
        refiners.append((f"DeepIM, {name} preset ({preset.crop_size[0]} px)",
                         Refiner(build_network(preset), preset, [prepare_object(m, preset) for m in models],
                                 device="cpu", renderer="pyrender")))
    feat = FeatureRefiner(models, device="cpu")
    refiners.append((f"features: search ({feat.config.crop} px, 11 candidates)", feat))
    rows = []
    try:
        for label, ref in refiners:
            for batch in (1, 8):
                keys, R, t = poses(batch)
                ref.refine(obs, keys, R, t, iters=1)  # warm-up (GL context, mesh upload)
                best = min(np.mean(ref.refine(obs, keys, R, t, iters=2).times) for _ in range(repeats))
                rows.append((label, batch, 1000 * best))
        for batch in (1, 8):
            keys, R, t = poses(batch)
            run = RefineRun.start(batch, R, t, 0)
            feat.polish(run, keys, steps=1, observation=obs)  # warm-up
            best = min(feat.polish(run, keys, steps=5, observation=obs).seconds / 6 for _ in range(repeats))
            rows.append((f"features: gradient polish ({feat.config.crop} px, {feat.config.polish_faces} faces), "
                         "per step", batch, 1000 * best))
    finally:
        for _, ref in refiners:
            ref.close()
    base = {b: ms for label, b, ms in rows if label.startswith("DeepIM, cpu preset")}
    lines = [
        "`python benchmarks/refine.py speed-kinds` on an lmo-dev frame (8 LM-O objects; DeepIM networks untrained, "
        f"of the presets' shapes; pyrender for the loops, PyTorch3D for the polish); {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, no GPU. Best of {repeats} runs; ms for the "
        "whole batch per iteration (per step for the polish, which also renders and scores its last pose).",
        "",
        "| kind | batch | ms / iteration | ms per instance | vs DeepIM cpu |",
        "|---|---|---|---|---|",
    ]
    for label, b, ms in rows:
        lines.append(f"| {label} | {b} | {ms:.0f} | {ms / b:.0f} | {ms / base[b]:.2f}x |")
    return "\n".join(lines)


def speed_search(images: int, results: Path | None, a: str = "", b: str = "warp=false") -> str:
    """The feature search with its depth sweep (``--refine features --depth-sweep``) in two settings, ``a`` (default:
    as it is now) and ``b`` (default: every candidate rendered, ``warp=False``, the search before the warps), as
    ``KEY=VALUE,...`` changes of its FeatureFitConfig, in the same process on the same lmo-dev frames, alternating
    which goes first; seconds per part and where they go (render, warps and crops, backbone, the rest)."""
    import time

    import torch

    import posekit.methods.featurefit.refiner as mod
    from posekit.data.bop import BopDataset
    from posekit.methods.featurefit import FeatureRefiner, search_config

    torch_threads()
    ds = BopDataset(lmo_dev())
    frames, _ = _frames_and_truth(ds)
    by_frame = _estimates_by_frame(results) if results else None
    keys = sorted(by_frame if by_frame else frames)[: images + 1]
    models = [ds.load_model(o) for o in ds.obj_ids]

    now = FeatureRefiner(models, device="cpu", config=features_config("features:" + a, search_config(True)))
    before = FeatureRefiner(models, device="cpu", config=features_config("features:" + b, search_config(True)),
                            backbone=now.backbone)
    spent = {"now": {}, "before": {}}
    which = ["now"]

    def timed(obj, name, label):
        f = getattr(obj, name)

        def g(*a, **k):
            start = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                d = spent[which[0]]
                d[label] = d.get(label, 0.0) + time.perf_counter() - start
        setattr(obj, name, g)

    timed(mod, "render_in_crops", "render")
    timed(mod, "warp_images", "warp")
    timed(mod, "crop_images", "crop")
    timed(now.backbone, "features", "backbone")  # the shared backbone
    parts = 0
    try:
        for n, key in enumerate(keys):
            obs = frames[key].observation()
            if by_frame:
                es = by_frame[key]
                ids, R, t = [e.obj_id for e in es], np.stack([e.R for e in es]), np.stack([e.t for e in es])
            else:
                gts = frames[key].gts
                ids, R, t = [g.obj_id for g in gts], np.stack([g.R for g in gts]), np.stack([g.t for g in gts])
            order = [("now", now), ("before", before)][:: 1 if n % 2 else -1]
            for label, ref in order:
                which[0] = label
                start = time.perf_counter()
                ref.refine(obs, ids, R, t, iters=4)
                spent[label]["total"] = spent[label].get("total", 0.0) + time.perf_counter() - start
            if n == 0:  # the first frame warms both up (GL contexts, mesh uploads): not counted
                spent = {"now": {}, "before": {}}
                continue
            parts += len(ids)
    finally:
        now.close()
        before.close()
    name_a = f"`{a}`" if a else "as it is now"
    name_b = f"`{b}`" if b else "as it is now"
    opts = (f"{' --results ' + str(results) if results else ''}{' --a ' + a if a else ''}"
            f"{' --b ' + b if b != 'warp=false' else ''}")
    lines = [
        f"`python benchmarks/refine.py speed-search --images {images}{opts}`: "
        f"`--refine features --depth-sweep` (4 iterations) on {len(keys) - 1} lmo-dev frames ({parts} parts, "
        f"{'the poses of ' + results.name if results else 'ground-truth poses'}), the search {name_a} against "
        f"{name_b}, in one process, alternating; {platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"threads {torch.get_num_threads()}, no GPU, pyrender; load as stated beside the table.",
        "",
        "| search | s per part | render | warps | crops | backbone | rest | vs b |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, name in (("before", f"b: {name_b}"), ("now", f"a: {name_a}")):
        d = spent[label]
        rest = d["total"] - sum(v for k, v in d.items() if k != "total")
        cells = [f"{d.get(k, 0.0) / parts:.3f}" for k in ("render", "warp", "crop", "backbone")]
        lines.append(f"| {name} | {d['total'] / parts:.3f} | " + " | ".join(cells) +
                     f" | {rest / parts:.3f} | {d['total'] / spent['before']['total']:.2f}x |")
    return "\n".join(lines)


def _eval(results: Path, out: Path, objects: list[int] | None = None, targets: Path | None = None) -> dict:
    """`posekit eval` on lmo-dev (only ``objects``' targets when given; ``targets``: a BOP targets file) -> its
    eval.json."""
    extra = ["--objects", ",".join(map(str, objects))] if objects else []
    extra += ["--targets", str(targets)] if targets else []
    run_posekit("eval", "--dataset", str(lmo_dev()), "--results", str(results), "--out", str(out), "--quiet", *extra)
    return json.loads((out / "eval.json").read_text())


def _summary(rep: dict) -> tuple[float, float, float]:
    """(ADD(-S) 0.1d recall, AR_MSSD, AR_MSPD) over all targets of an eval report."""
    return rep["metrics"]["add_s"]["recall"][-1], rep["bop19"]["ar_mssd"], rep["bop19"]["ar_mspd"]


def _per_object_table(reports: dict[str, dict]) -> list[str]:
    """Rows per object: ADD(-S) / AR_MSSD / AR_MSPD for each named report."""
    names = list(reports)
    first = reports[names[0]]
    head = "| object | " + " | ".join(f"{n}: ADD(-S) / MSSD / MSPD" for n in names) + " |"
    lines = [head, "|---|" + "---|" * len(names)]
    objs = sorted(first["objects"], key=int)
    # (names, objects, 3): ADD(-S) recall, AR_MSSD, AR_MSPD
    v = np.array([[(r["metrics"]["add_s"]["recall_per_object"][o][-1], r["objects"][o]["ar_mssd"],
                    r["objects"][o]["ar_mspd"]) for o in objs] for r in reports.values()])

    def row(label, cells):
        return f"| {label} | " + " | ".join(f"{100 * a:.1f} % / {m:.3f} / {p:.3f}" for a, m, p in cells) + " |"

    lines += [row(o, v[:, j]) for j, o in enumerate(objs)]
    # the unweighted mean over objects (the summary table pools all targets instead, as BOP does)
    lines.append(row("mean of objects", v.mean(axis=1)))
    return lines


def lmo(aae_dir: Path, refiner: Path, boxes: str, out_dir: Path, polish: int, scores: tuple[str, ...] = DEEPIM_SCORES,
        coarse: str = "AAE") -> str:
    data = lmo_dev()
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_features(refiner):  # the training-free feature search: no workspace, its own score
        ref, scores = ["--refine", "features"], ("features",)
    else:
        ref = ["--refine", "deepim", "--refiner", str(refiner)]
    variants = [(coarse, []), *[(f"{coarse} + {k} it.", [*ref, "--iters", str(k)]) for k in (1, 2, 4)],
                *[(f"{coarse} + 4 it. scored ({m})", [*ref, "--iters", "4", "--score", m]) for m in scores]]
    if polish > 0:  # slow on a CPU (PyTorch3D soft silhouettes): --polish 0 leaves it out
        variants.append((f"{coarse} + 4 it. + polish {polish}", [*ref, "--iters", "4", "--polish", str(polish)]))
    lines = [
        f"`python benchmarks/refine.py lmo --aae-dir {coarse.upper()} --refiner {'features' if is_features(refiner) else 'WS'}"
        f" --boxes {boxes}` on lmo-dev (100 real images, "
        f"all targets of the 8 objects); {platform.machine()}, {os.cpu_count()} CPUs, no GPU. {coarse} workspaces: the "
        "section above; refiner: " + ("the training-free feature search (`--refine features`). " if is_features(refiner)
                                      else "the workspace's preset and steps are in the refiner section of docs/training.md. ") +
        "Recalls over all targets (BOP'19 pooling); seconds per image include the process start.",
        "",
        "| variant | ADD(-S) 0.1d | AR_MSSD | AR_MSPD | s per image | s per object estimate |",
        "|---|---|---|---|---|---|",
    ]
    reports = {}
    for name, extra in variants:
        tag = name.replace(" ", "_").replace("+", "").replace(".", "")
        res = out_dir / f"results_{tag}.csv"
        secs = run_posekit("estimate", "--dataset", str(data), "--model-dir", str(aae_dir), "--boxes", boxes,
                       "--out", str(res), *extra)
        rep = reports[name] = _eval(res, out_dir / f"eval_{tag}")
        adds, mssd, mspd = _summary(rep)
        n_est = max(1, sum(1 for line in res.read_text().splitlines()[1:] if line.strip()))
        lines.append(f"| {name} | {100 * adds:.1f} % | {mssd:.3f} | {mspd:.3f} | {secs / 100:.2f} | {secs / n_est:.3f} |")
    lines += ["", "Per object, every variant (last row: the unweighted mean over the objects; the table above pools all "
              "targets, as BOP's scores do):", "", *_per_object_table(reports),
              "", "Anchors: DeepIM on LM-O about 55 % ADD(-S) (real-trained, PoseCNN init); CosyPose about 63 AR "
              "(synthetic PBR training); GDR-Net AR_MSPD 80.7 / AR_MSSD 62.5."]
    return "\n".join(lines)


NOISE_LEVELS = {  # name: (rotation angle deg about a random axis, std of x/y offset mm, std of z offset mm)
    "10 deg, 10/30 mm": (10.0, 10.0, 30.0),
    "20 deg, 20/60 mm": (20.0, 20.0, 60.0),
}


def is_features(refiner: Path | str) -> bool:
    """``--refiner features`` (or ``features:KEY=VALUE,...``, FeatureFitConfig fields) names the training-free
    feature search instead of a DeepIM workspace."""
    return str(refiner) == "features" or str(refiner).startswith("features:")


def features_config(refiner: Path | str, base=None):
    """The FeatureFitConfig that ``features:KEY=VALUE,...`` names: those changes to ``base`` (default: the defaults,
    which plain ``features`` names)."""
    from dataclasses import fields, replace

    from posekit.methods.featurefit import FeatureFitConfig

    cfg = base if base is not None else FeatureFitConfig()
    spec = str(refiner).partition(":")[2]
    types = {f.name: type(getattr(cfg, f.name)) for f in fields(cfg)}
    changes = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"--refiner features: unknown setting {key!r}; known: {', '.join(types)}")
        if types[key] is bool:
            if value.lower() not in ("1", "0", "true", "false"):
                raise SystemExit(f"--refiner features: {key} takes true or false, got {value!r}")
            changes[key] = value.lower() in ("1", "true")
        else:
            changes[key] = types[key](value)
    return replace(cfg, **changes)


def load_refiner(refiner_ws: Path, ds):
    """The refiner to study: a DeepIM workspace, or (``features``) the feature search over the dataset's models."""
    if is_features(refiner_ws):
        from posekit.methods.featurefit import FeatureRefiner

        return FeatureRefiner([ds.load_model(o) for o in ds.obj_ids], device="cpu", config=features_config(refiner_ws))
    from posekit.methods.refine.refiner import Refiner

    return Refiner.load(refiner_ws, device="cpu")


def perturb_ground_truth(gts, rng: np.random.Generator, angle_deg: float, sxy: float, sz: float):
    """Poses (B, 3, 3), (B, 3) of ground-truth instances ``gts`` turned by ``angle_deg`` about a random axis
    (camera frame) and shifted by Gaussian noise of std (sxy, sxy, sz) mm: known noise for the refiner."""
    from scipy.spatial.transform import Rotation

    axes = rng.normal(size=(len(gts), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    R0 = Rotation.from_rotvec(axes * np.deg2rad(angle_deg)).as_matrix() @ np.stack([g.R for g in gts])
    t0 = np.stack([g.t for g in gts]) + rng.normal(size=(len(gts), 3)) * np.array([sxy, sxy, sz])
    return R0, t0


def perturbed(refiner_ws: Path, out_dir: Path, iters: tuple[int, ...] = (1, 2, 4), seed: int = 0,
              scores: tuple[str, ...] = DEEPIM_SCORES, polish: int = 0, objects: list[int] | None = None,
              noise: tuple[int, ...] = (0, 1), n_images: int | None = None, first: int = 0) -> str:
    """Refine ground truth perturbed by known noise on the real lmo-dev images; how much noise is removed.

    ``polish`` > 0 adds a row: the last iterate polished for that many steps (DeepIM: towards the refiner's
    predicted mask; features: feature-metric steps through PyTorch3D). ``noise``: which of NOISE_LEVELS.
    ``n_images``: only the first images (the figures then cover their targets only); ``first``: skip this many
    images first (their perturbations are still drawn, so every image keeps the full run's start)."""
    from tqdm import tqdm

    from posekit.data.bop import BopDataset
    from posekit.data.results import write_results
    from posekit.data.types import PoseEstimate
    from posekit.eval.metrics import rotation_error, translation_error

    torch_threads()
    ds = BopDataset(lmo_dev())
    refiner = load_refiner(refiner_ws, ds)
    if is_features(refiner_ws):
        scores = ("features",)
    known = set(objects or ds.obj_ids)
    targets = ds.targets()
    wanted = {(t.scene_id, t.im_id, t.obj_id) for t in targets}
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"`python benchmarks/refine.py perturbed --refiner {refiner_ws if is_features(refiner_ws) else 'WS'}"
        + (f" --objects {','.join(map(str, objects))}" if objects else "") + (f"{f' --first {first}' if first else ''}{f' --images {n_images}' if n_images else ''} --iters "
           f"{','.join(map(str, iters))}` on lmo-dev images {first + 1}-{first + n_images if n_images else 100}"
           if n_images or first else "` on lmo-dev (100 real images)") + ": every ground-truth "
        "instance of the 8 objects that is a BOP'19 target and at least 10 % visible, its pose perturbed by a rotation "
        "of a fixed angle about a random axis and a Gaussian translation offset (x/y and z std), then refined; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU, pyrender renderer. Median rotation error over the "
        "asymmetric objects (symmetric ones have no unique angle); median translation error over all. Rows \"best of 0-4 "
        "by X score\": the iterate (the start included) that `posekit estimate --score X` keeps."
        + (f" Row \"{max(iters)} + polish {polish}\": the last iterate after `--polish {polish}` ("
           + ("feature-metric gradient steps through PyTorch3D's RGB rendering and the frozen backbone, depth kept"
              if is_features(refiner_ws) else "towards the refiner's predicted mask")
           + "; its ms / image is the polish alone)." if polish else ""),
        "",
        "| noise | iterations | ADD(-S) 0.1d | AR_MSSD | AR_MSPD | median re (deg) | median te (mm) | ms / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    symmetric = {o for o, info in ds.models_info.items() if info.get("symmetries_discrete") or info.get("symmetries_continuous")}
    for li, (label, (angle, sxy, sz)) in enumerate(NOISE_LEVELS.items()):
        if li not in noise:
            continue
        rng = np.random.default_rng(seed + li)
        pkey = f"{max(iters)} + polish {polish}"
        keys = (0, *iters, *scores, *((pkey,) if polish else ()))  # a score mode: the best-scored iterate (refine(score=mode))
        per_iter: dict = {k: [] for k in keys}
        errs: dict = {k: [] for k in keys}
        ms, ms_polish = [], []
        all_frames = list(ds.frames("test"))
        frames = all_frames[first:][:n_images]
        targets_file = None
        if n_images or first:  # scored over these images' targets only
            kept = {(f.scene_id, f.im_id) for f in frames}
            targets_file = out_dir / "targets_subset.json"
            targets_file.write_text(json.dumps([t.to_json() for t in targets if (t.scene_id, t.im_id) in kept]))
        def instances(frame):
            return [g for g in frame.gts if g.obj_id in known and (frame.scene_id, frame.im_id, g.obj_id) in wanted
                    and (g.visib_fract is None or g.visib_fract >= 0.1)]

        for frame in all_frames[:first]:  # the skipped images' draws, so the rest start as in the full run
            if skipped := instances(frame):
                perturb_ground_truth(skipped, rng, angle, sxy, sz)
        for frame in tqdm(frames, desc=f"perturbed {label}", file=sys.stderr):
            sel = instances(frame)
            if not sel:
                continue
            R0, t0 = perturb_ground_truth(sel, rng, angle, sxy, sz)
            # one run per score mode; the iterates do not depend on the mode (deterministic), so the
            # per-iteration rows come from the first run, which is also the one timed
            final, run = {}, None
            for mode in scores or (None,):
                start = time.perf_counter()
                r = refiner.refine(frame.observation(), [g.obj_id for g in sel], R0, t0, iters=max(iters), score=mode)
                if run is None:
                    run = r
                    ms.append(1000 * (time.perf_counter() - start))
                if mode is not None:
                    final[mode] = r.final
            if polish:
                start = time.perf_counter()
                pr = refiner.polish(run, [g.obj_id for g in sel], steps=polish, observation=frame.observation())
                ms_polish.append(1000 * (time.perf_counter() - start))
                final[pkey] = (pr.R, pr.t)
            for k in per_iter:
                Rk, tk = final[k] if k in final else (run.R[k], run.t[k])
                for i, g in enumerate(sel):
                    per_iter[k].append(PoseEstimate(g.obj_id, Rk[i], tk[i], scene_id=frame.scene_id,
                                                    im_id=frame.im_id, time=1.0))
                    errs[k].append((float(rotation_error(Rk[i], g.R)), float(translation_error(tk[i], g.t)),
                                    g.obj_id in symmetric))
        for k, ests in per_iter.items():
            tag = f"noise{li}_it{k}"
            res = write_results(out_dir / f"results_{tag}.csv", ests)
            adds, mssd, mspd = _summary(_eval(res, out_dir / f"eval_{tag}", objects, targets_file))
            e = np.array(errs[k])
            re = np.median(e[e[:, 2] == 0, 0])
            te = np.median(e[:, 1])
            timing = (f"{np.median(ms):.0f} ({max(iters)} it.{' + ' + scores[0] + ' score' if scores else ''})"
                      if k == 0 else f"{np.median(ms_polish):.0f}" if k == pkey else "")
            it = f"best of 0-{max(iters)} by {k} score" if k in scores else k
            lines.append(f"| {label if k == 0 else ''} | {it} | {100 * adds:.1f} % | {mssd:.3f} | {mspd:.3f} | "
                         f"{re:.1f} | {te:.1f} | {timing} |")
        print("\n".join(lines), flush=True)
    refiner.close()
    return "\n".join(lines)


def drift(refiner_ws: Path, n_images: int = 40, iters: int = 3, seed: int = 0) -> str:
    """Is the error the refiner adds on real images systematic? Signed camera-frame offsets (refined - truth)
    after each iteration, the depth offset per object, how often an oracle picking the best iterate would
    succeed, and how well the scores (``--score``) rank the iterates."""
    from posekit.data.bop import BopDataset
    from posekit.eval.metrics import add as add_error

    torch_threads()
    ds = BopDataset(lmo_dev())
    ref = load_refiner(refiner_ws, ds)
    models = {o: ds.load_model(o) for o in ds.obj_ids}
    rng = np.random.default_rng(seed)
    modes = ("features",) if is_features(refiner_ws) else DEEPIM_SCORES
    offsets, objs, add, scores = [], [], [], {m: [] for m in modes}
    for n, frame in enumerate(ds.frames("test")):
        if n >= n_images:
            break
        sel = [g for g in frame.gts if g.obj_id in set(ds.obj_ids) and (g.visib_fract is None or g.visib_fract >= 0.3)]
        if not sel:
            continue
        R0, t0 = perturb_ground_truth(sel, rng, 10.0, 10.0, 30.0)
        runs = {m: ref.refine(frame.observation(), [g.obj_id for g in sel], R0, t0, iters=iters, score=m) for m in modes}
        run = runs[modes[0]]
        for i, g in enumerate(sel):
            o = models[g.obj_id]
            add.append(add_error(run.R[:, i], run.t[:, i], g.R, g.t, o.vertices) / o.diameter)
            offsets.append(run.t[:, i] - g.t)
            objs.append(g.obj_id)
            for m in modes:
                scores[m].append(runs[m].scores[:, i])
    off, objs, add = np.array(offsets), np.array(objs), np.array(add)
    ref.close()
    lines = [
        f"`python benchmarks/refine.py drift --refiner {refiner_ws if is_features(refiner_ws) else 'WS'}`: "
        f"the first {n_images} lmo-dev images, the {len(objs)} "
        f"instances at least 30 % visible, ground truth perturbed by 10 deg / 10-10-30 mm, {iters} iterations. "
        "Signed offsets refined - truth in the camera frame (mm, medians); ADD < 0.1d is plain ADD (no symmetry).",
        "",
        "| iteration | median dx | median dy | median dz | median abs dz | ADD < 0.1d |",
        "|---|---|---|---|---|---|",
    ]
    for k in range(iters + 1):
        d = off[:, k]
        lines.append(f"| {k} | {np.median(d[:, 0]):.1f} | {np.median(d[:, 1]):.1f} | {np.median(d[:, 2]):.1f} | "
                     f"{np.median(np.abs(d[:, 2])):.1f} | {100 * np.mean(add[:, k] < 0.1):.1f} % |")
    lines += ["", "| object | instances | median dz per iteration (mm) |", "|---|---|---|"]
    for o in np.unique(objs):
        m = objs == o
        lines.append(f"| {o} | {m.sum()} | " + " / ".join(f"{np.median(off[m, k, 2]):.1f}" for k in range(iters + 1)) + " |")
    best = add.min(1)
    lines += ["", f"Oracle (the best of the {iters + 1} poses by true error): ADD < 0.1d {100 * np.mean(best < 0.1):.1f} %.",
              "", "| score | ADD < 0.1d of the kept pose | mean per-instance corr(score, -error) |", "|---|---|---|"]
    for m in modes:
        sc = np.array(scores[m])
        kept = add[np.arange(len(add)), sc.argmax(1)]
        corr = [np.corrcoef(a, -e)[0, 1] for a, e in zip(sc, add, strict=True) if a.std() > 0 and e.std() > 0]
        lines.append(f"| {m} | {100 * np.mean(kept < 0.1):.1f} % | {np.mean(corr):.2f} |")
    return "\n".join(lines)


def _frames_and_truth(ds) -> tuple[dict, dict]:
    """lmo-dev's test frames by (scene_id, im_id) and their ground-truth instances by (scene_id, im_id, obj_id)."""
    frames = {(f.scene_id, f.im_id): f for f in ds.frames("test")}
    return frames, {(k[0], k[1], g.obj_id): g for k, f in frames.items() for g in f.gts}


def _estimates_by_frame(path: Path) -> dict:
    """A results CSV's estimates grouped by (scene_id, im_id)."""
    from posekit.data.results import read_results

    by_frame: dict = {}
    for e in read_results(path)[0]:
        by_frame.setdefault((e.scene_id, e.im_id), []).append(e)
    return by_frame


COMPONENTS = ("as refined", "true depth", "true rotation", "true image-plane position")


def components(runs: list[Path], out_dir: Path, objects: list[int] | None = None) -> str:
    """Which part of the pose limits a refiner on real images: the poses of ``perturbed`` runs (its
    results_*.csv files) re-scored with one part replaced by the truth -- depth (t scaled along its viewing ray
    to the true z), rotation, or the image-plane position (t moved to the true ray at its own depth)."""
    from posekit.data.bop import BopDataset
    from posekit.data.results import read_results, write_results
    from posekit.data.types import PoseEstimate

    _, gt = _frames_and_truth(BopDataset(lmo_dev()))
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"`python benchmarks/refine.py components {' '.join(str(r) for r in runs)}` on lmo-dev: each run's poses "
        "scored as refined and with one part replaced by the ground truth (depth: t scaled along its viewing ray "
        "to the true z; rotation: R = R_gt; image-plane position: t moved onto the true viewing ray at its own "
        "depth); `posekit eval` over the perturbed objects' targets.",
        "",
        "| poses | " + " | ".join(f"{c}: ADD(-S) / MSSD / MSPD" for c in COMPONENTS) + " |",
        "|---|" + "---|" * len(COMPONENTS),
    ]
    for path in runs:
        ests, _ = read_results(path)
        cells = []
        for ci, comp in enumerate(COMPONENTS):
            fixed = []
            for e in ests:
                g = gt[(e.scene_id, e.im_id, e.obj_id)]
                R, t = np.asarray(e.R, float), np.asarray(e.t, float)
                if comp == "true depth":
                    t = t * (g.t[2] / t[2])
                elif comp == "true rotation":
                    R = g.R
                elif comp == "true image-plane position":
                    t = np.asarray(g.t, float) * (t[2] / g.t[2])
                fixed.append(PoseEstimate(e.obj_id, R, t, scene_id=e.scene_id, im_id=e.im_id, time=e.time))
            tag = f"{path.parent.name}_{path.stem}_{ci}"
            res = write_results(out_dir / f"results_{tag}.csv", fixed)
            adds, mssd, mspd = _summary(_eval(res, out_dir / f"eval_{tag}", objects))
            cells.append(f"{100 * adds:.1f} % / {mssd:.3f} / {mspd:.3f}")
        lines.append(f"| {path.parent.name}/{path.name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def search(start: Path, refiner: str, out: Path, iters: int = 4) -> str:
    """The feature search (``features:KEY=VALUE,...`` settings, e.g. ``warp=false``) from the poses of a results CSV
    (e.g. the templates'), written as a results CSV for ``sweep`` and ``posekit eval``."""
    from tqdm import tqdm

    from posekit.data.bop import BopDataset
    from posekit.data.results import write_results
    from posekit.data.types import PoseEstimate

    torch_threads()
    ds = BopDataset(lmo_dev())
    frames, _ = _frames_and_truth(ds)
    ref = load_refiner(refiner, ds)
    found = []
    try:
        for key, es in tqdm(sorted(_estimates_by_frame(start).items()), desc="search", file=sys.stderr):
            begin = time.perf_counter()
            run = ref.refine(frames[key].observation(), [e.obj_id for e in es], np.stack([e.R for e in es]),
                             np.stack([e.t for e in es]), iters=iters)
            sec = (time.perf_counter() - begin) / len(es)
            R, t = run.final
            found += [PoseEstimate(e.obj_id, R[i], t[i], score=e.score, scene_id=e.scene_id, im_id=e.im_id, time=sec)
                      for i, e in enumerate(es)]
    finally:
        ref.close()
    write_results(out, found)
    return f"wrote {len(found)} poses to {out}: `--refiner {refiner}`, {iters} iterations from {start}"


def sweep(runs: list[Path], refiner: str, out_dir: Path, objects: list[int] | None = None,
          targets: Path | None = None) -> str:
    """The feature search's last depth sweep (``features:depth_range=...``) applied to the poses of ``perturbed``
    runs (results_*.csv): ADD(-S), AR and the median depth error before and after. ``targets``: score over these
    BOP targets only (a ``perturbed --images N`` run's targets_subset.json)."""
    from tqdm import tqdm

    from posekit.data.bop import BopDataset
    from posekit.data.results import write_results
    from posekit.data.types import PoseEstimate
    from posekit.methods.featurefit.refiner import pick_depth

    torch_threads()
    ds = BopDataset(lmo_dev())
    ref = load_refiner(refiner, ds)
    if ref.config.depth_range <= 0:
        raise SystemExit("sweep: give the sweep's settings, e.g. --refiner features:depth_range=0.08")
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, gt = _frames_and_truth(ds)
    lines = [
        f"`python benchmarks/refine.py sweep {' '.join(str(r) for r in runs)} --refiner {refiner}{' --targets ' + str(targets) if targets else ''}` on lmo-dev: each "
        "run's poses, then the depth sweep alone (rotation and image-plane position kept); `posekit eval` over the "
        f"perturbed objects' targets; {platform.machine()}, {os.cpu_count()} CPUs, no GPU.",
        "",
        "| poses | ADD(-S) 0.1d | AR_MSSD | AR_MSPD | median abs dz (mm) | ms per instance |",
        "|---|---|---|---|---|---|",
    ]
    for path in runs:
        by_frame = _estimates_by_frame(path)
        # with one round, also the alternatives from the same scores: the best taken even at an end, and the
        # other of the grid's pick and the sub-grid (parabola) peak
        one_round = ref.config.depth_rounds <= 1
        other = "grid pick" if ref.config.depth_subgrid else "sub-grid peak"
        half_grid = "+ depth sweep, every other scale (scores of the same renders)"
        variants = {"+ depth sweep": [],
                    **({"+ depth sweep, ends taken too": [], f"+ depth sweep, {other}": [], half_grid: []}
                       if one_round else {})}
        dz = {path.name: [], **{k: [] for k in variants}}
        sec = 0.0
        for key, es in tqdm(by_frame.items(), desc=f"sweep {path.name}", file=sys.stderr):
            R = np.stack([e.R for e in es])
            t = np.stack([e.t for e in es])
            start = time.perf_counter()
            sw = ref.depth_sweep(frames[key].observation(), [e.obj_id for e in es], R, t)
            sec += time.perf_counter() - start
            argmax = t * sw.scales[sw.scores.argmax(1)][:, None]
            alt = pick_depth(t, sw.scales, sw.scores, not ref.config.depth_subgrid)
            # a grid of half the scales over the same range (9 -> 5), picked from the same renders' scores (their
            # union mask is the 9 renders', nearly the 5's: the nearest render spans both)
            half = pick_depth(t, sw.scales[::2], sw.scores[:, ::2], ref.config.depth_subgrid)
            for i, e in enumerate(es):
                g = gt[(e.scene_id, e.im_id, e.obj_id)]
                dz[path.name].append(abs(e.t[2] - g.t[2]))
                for label, ti in zip(variants, (sw.t[i], argmax[i], alt[i], half[i])[: len(variants)], strict=True):
                    dz[label].append(abs(ti[2] - g.t[2]))
                    variants[label].append(PoseEstimate(e.obj_id, e.R, ti, scene_id=e.scene_id, im_id=e.im_id,
                                                        time=e.time))
        tag = f"{path.parent.name}_{path.stem}"
        summ = {path.name: _summary(_eval(path, out_dir / f"eval_{tag}_before", objects, targets))}
        for vi, (label, est) in enumerate(variants.items()):
            res = write_results(out_dir / f"results_{tag}_swept{vi}.csv", est)
            summ[label] = _summary(_eval(res, out_dir / f"eval_{tag}_swept{vi}", objects, targets))
        for label, (a, m1, m2) in summ.items():
            ms = f"{1000 * sec / len(dz[label]):.0f}" if label == "+ depth sweep" else ""
            lines.append(f"| {label} | {100 * a:.1f} % | {m1:.3f} | {m2:.3f} | {np.median(dz[label]):.1f} | {ms} |")
        print("\n".join(lines[-3:]), flush=True)
    ref.close()
    return "\n".join(lines)


def mask_depth(runs: list[Path], refiner_ws: Path, out_dir: Path, depth_range: float = 0.08, samples: int = 9,
               objects: list[int] | None = None) -> str:
    """Depth from a DeepIM refiner's predicted visible mask for the poses of ``perturbed`` runs (results_*.csv):
    one network pass at each pose gives the mask (its update is not applied), then the pose is moved along its
    viewing ray to the best of ``samples`` scales in 1 +- ``depth_range`` by the soft IoU of the render with that
    mask (a best at either end of the range keeps the depth, as the feature search's sweep)."""
    import torch
    from tqdm import tqdm

    from posekit.data.bop import BopDataset
    from posekit.data.results import write_results
    from posekit.data.types import PoseEstimate
    from posekit.methods.featurefit.refiner import pick_depth
    from posekit.methods.polish import soft_iou_loss
    from posekit.render.crops import render_in_crops

    torch_threads()
    ds = BopDataset(lmo_dev())
    ref = load_refiner(refiner_ws, ds)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, gt = _frames_and_truth(ds)
    scales = 1.0 + np.linspace(-depth_range, depth_range, samples)
    size = tuple(ref.preset.crop_size)
    lines = [
        f"`python benchmarks/refine.py mask-depth RUNS --refiner WS` ({refiner_preset(refiner_ws)} preset) on "
        "lmo-dev: each run's poses; the DeepIM network's visible-mask prediction at each pose (its update not "
        f"applied); the pose moved along its viewing ray to the best of {samples} scales in 1 +- {depth_range} by "
        "the soft IoU of the render with that mask (a best at a range end keeps the depth); `posekit eval` over "
        f"the perturbed objects' targets; {platform.machine()}, {os.cpu_count()} CPUs, no GPU.",
        "",
        "| poses | ADD(-S) 0.1d | AR_MSSD | AR_MSPD | median abs dz (mm) | ms per instance |",
        "|---|---|---|---|---|---|",
    ]
    for path in runs:
        by_frame = _estimates_by_frame(path)
        swept, dz0, dz1, sec = [], [], [], 0.0
        for key, es in tqdm(by_frame.items(), desc=f"mask-depth {path.name}", file=sys.stderr):
            objs = [e.obj_id for e in es]
            R = np.stack([e.R for e in es])
            t = np.stack([e.t for e in es])
            start = time.perf_counter()
            run = ref.refine(frames[key].observation(), objs, R, t, iters=1)
            idx = np.array([ref.object_index(o) for o in objs])
            n = len(scales)
            tc = t[:, None] * scales[None, :, None]
            _, mask = render_in_crops(ref._get_renderer(), [o.render_model for o in ref.objects], np.repeat(idx, n),
                                      np.repeat(R, n, axis=0), tc.reshape(-1, 3), np.repeat(run.K_crops, n, axis=0), size)
            target = torch.as_tensor(run.mask_probs, dtype=torch.float32).repeat_interleave(n, dim=0)
            iou = 1.0 - soft_iou_loss(mask[:, 0].float(), target).view(len(t), n).numpy()
            t1 = pick_depth(t, scales, iou)
            sec += time.perf_counter() - start
            for i, e in enumerate(es):
                g = gt[(e.scene_id, e.im_id, e.obj_id)]
                dz0.append(abs(t[i][2] - g.t[2]))
                dz1.append(abs(t1[i][2] - g.t[2]))
                swept.append(PoseEstimate(e.obj_id, e.R, t1[i], scene_id=e.scene_id, im_id=e.im_id, time=e.time))
        tag = f"{path.parent.name}_{path.stem}"
        before = _summary(_eval(path, out_dir / f"eval_{tag}_given", objects))
        res = write_results(out_dir / f"results_{tag}_mask_depth.csv", swept)
        after = _summary(_eval(res, out_dir / f"eval_{tag}_mask_depth", objects))
        for label, (a, m1, m2), dz in ((path.name, before, dz0), ("+ depth from the predicted mask", after, dz1)):
            ms = f"{1000 * sec / len(dz1):.0f}" if label != path.name else ""
            lines.append(f"| {label} | {100 * a:.1f} % | {m1:.3f} | {m2:.3f} | {np.median(dz):.1f} | {ms} |")
        print("\n".join(lines[-2:]), flush=True)
    ref.close()
    return "\n".join(lines)


def synthetic(refiner_ws: Path, n: int = 96, seed: int = 123) -> str:
    """One iteration on fresh rendered pairs from the training distribution: does the refiner predict the
    update (correlation of predicted and true vx, vy, vz) and how much error does it remove."""
    import torch

    from posekit.eval.metrics import rotation_error
    from posekit.geometry.update import apply_update, target_update
    from posekit.methods.refine.pairs import DEFAULT_CAMERA, SyntheticObserved, make_pairs, perturb_poses
    from posekit.methods.refine.refiner import Refiner
    from posekit.render.gl import OffscreenRenderer

    torch_threads()
    ref = Refiner.load(refiner_ws, device="cpu")
    pre = ref.preset
    src = SyntheticObserved(ref.objects, pre, OffscreenRenderer(*SyntheticObserved.patch_size_for(pre)),
                            camera=DEFAULT_CAMERA)
    o = src.sample(n, torch.Generator().manual_seed(seed))
    R0, t0 = perturb_poses(o.R, o.t, pre, np.random.default_rng(seed))
    pb = make_pairs(o.images, o.K, R0, t0, o.obj_index, ref.objects, pre, OffscreenRenderer(*pre.crop_size),
                    masks=o.masks)
    with torch.no_grad():
        out = ref.net(pb.inputs)
    K, unit = pb.K.double(), pb.unit.double()
    _, v_true = target_update(pb.R_src.double(), pb.t_src.double(), torch.as_tensor(o.R), torch.as_tensor(o.t), K, unit)
    v = out.v.double()
    corr = [float(np.corrcoef(v[:, j].numpy(), v_true[:, j].numpy())[0, 1]) for j in range(3)]
    R1, t1 = apply_update(pb.R_src.double(), pb.t_src.double(), out.dR.double(), v, K, unit)
    asym = np.array([len(ref.objects[int(i)].symmetries) == 1 for i in o.obj_index])  # a unique angle to compare
    re0 = np.median(rotation_error(R0[asym], o.R[asym]))
    re1 = np.median(rotation_error(R1.numpy()[asym], o.R[asym]))
    step = np.median(rotation_error(out.dR.double().numpy()[asym], np.eye(3)[None].repeat(int(asym.sum()), 0)))
    te0 = np.median(np.linalg.norm(t0 - o.t, axis=1))
    te1 = np.median(np.linalg.norm(t1.numpy() - o.t, axis=1))
    ref.close()
    return "\n".join([
        f"`python benchmarks/refine.py synthetic --refiner WS`: {n} fresh domain-randomised rendered pairs of the "
        f"workspace's objects with the training noise (seed {seed}), one iteration.",
        "",
        "| corr(vx) | corr(vy) | corr(vz) | median re (deg), asymmetric objects | median predicted rotation step (deg) "
        "| median te (mm) |",
        "|---|---|---|---|---|---|",
        f"| {corr[0]:.2f} | {corr[1]:.2f} | {corr[2]:.2f} | {re0:.1f} -> {re1:.1f} | {step:.1f} | {te0:.1f} -> {te1:.1f} |",
    ])


def backgrounds(refiner_ws: Path, n_images: int = 12, seed: int = 0) -> str:
    """Where the refiner loses on real images: the same perturbed poses refined on the real image, on the
    real image with the objects re-rendered at their true poses, and on those renders over plain grey levels."""

    from posekit.data.bop import BopDataset
    from posekit.data.types import Observation
    from posekit.methods.refine.refiner import Refiner
    from posekit.render.gl import OffscreenRenderer
    from posekit.render.types import RenderObject

    torch_threads()
    ds = BopDataset(lmo_dev())
    ref = Refiner.load(refiner_ws, device="cpu")
    models = {o: ds.load_model(o) for o in ds.obj_ids}
    rng = np.random.default_rng(seed)
    plain = {"renders over light grey (200)": 200, "renders over grey (110)": 110, "renders over dark grey (40)": 40,
             "renders over black": 0}
    kinds = ("real image", "renders over the real image", *plain)
    te: dict[str, list] = {k: [] for k in kinds}
    rend = None
    for fi, frame in enumerate(ds.frames("test")):
        if fi >= n_images:
            break
        sel = [g for g in frame.gts if g.obj_id in models and (g.visib_fract or 0) >= 0.3]
        if not sel:
            continue
        obs = frame.observation()
        rend = rend or OffscreenRenderer(obs.camera.width, obs.camera.height)
        r = rend.render(obs.camera, [RenderObject(models[g.obj_id], g.R, g.t) for g in frame.gts if g.obj_id in models],
                        with_masks=False)
        m = r.labels > 0
        images = {}
        bases = (None, obs.image, *(np.full_like(obs.image, v) for v in plain.values()))
        for k, base in zip(kinds, bases, strict=True):
            im = obs.image if base is None else base.copy()
            if base is not None:
                im[m] = r.rgb[m]
            images[k] = im
        R0, t0 = perturb_ground_truth(sel, rng, *NOISE_LEVELS["10 deg, 10/30 mm"])
        for k in kinds:
            run = ref.refine(Observation(images[k], obs.camera), [g.obj_id for g in sel], R0, t0, iters=2)
            te[k] += [[np.linalg.norm(run.t[i, j] - g.t) for i in range(3)] for j, g in enumerate(sel)]
    ref.close()
    if rend is not None:
        rend.close()
    lines = [
        f"`python benchmarks/refine.py backgrounds --refiner WS`: the first {n_images} lmo-dev images, instances at "
        "least 30 % visible, ground truth perturbed by 10 deg and 10/10/30 mm (x/y/z std); the same initial poses "
        f"refined on {len(kinds)} versions of each image.",
        "",
        "| observed image | instances | median te, start (mm) | after 1 it. | after 2 it. |",
        "|---|---|---|---|---|",
    ]
    for k in kinds:
        v = np.median(np.array(te[k]), axis=0)
        lines.append(f"| {k} | {len(te[k])} | {v[0]:.1f} | {v[1]:.1f} | {v[2]:.1f} |")
    return "\n".join(lines)


def refiner_preset(workspace: Path) -> str:
    """The preset name a refiner workspace was trained with (its config.json)."""
    from posekit.methods.refine.train import read_config

    if is_features(workspace):
        return "features"
    return str(read_config(workspace)["preset"]["name"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--preset", default="cpu")
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--write-docs", action="store_true")
    m = sub.add_parser("lmo")
    m.add_argument("--aae-dir", type=Path, required=True)
    m.add_argument("--refiner", type=Path, required=True)
    m.add_argument("--boxes", default="gt-visib")
    m.add_argument("--out", type=Path, default=Path("refine_lmo"))
    m.add_argument("--polish", type=int, default=3)
    m.add_argument("--coarse", default="AAE", help="the coarse stage's name in the table (e.g. templates)")
    m.add_argument("--write-docs", action="store_true")
    bg = sub.add_parser("backgrounds")
    bg.add_argument("--refiner", type=Path, required=True)
    bg.add_argument("--write-docs", action="store_true")
    sy = sub.add_parser("synthetic")
    sy.add_argument("--refiner", type=Path, required=True)
    sy.add_argument("--write-docs", action="store_true")
    sk = sub.add_parser("speed-kinds")
    sk.add_argument("--repeats", type=int, default=3)
    ss = sub.add_parser("speed-search", help="the feature search now vs every candidate rendered, per stage")
    ss.add_argument("--images", type=int, default=8)
    ss.add_argument("--results", type=Path, default=None, help="start from these poses (a results CSV)")
    ss.add_argument("--a", default="", help="the first setting, KEY=VALUE,... of FeatureFitConfig (default: now)")
    ss.add_argument("--b", default="warp=false", help="the baseline setting (default: every candidate rendered)")
    ss.add_argument("--write-docs", action="store_true")
    sk.add_argument("--write-docs", action="store_true")
    dr = sub.add_parser("drift")
    dr.add_argument("--refiner", type=Path, required=True)
    dr.add_argument("--images", type=int, default=40)
    dr.add_argument("--write-docs", action="store_true")
    co = sub.add_parser("components", help="re-score perturbed runs' poses with one part set to the truth")
    co.add_argument("runs", type=Path, nargs="+", help="results_*.csv files written by `perturbed`")
    co.add_argument("--out", type=Path, default=Path("refine_components"))
    co.add_argument("--objects", default=None, help="only these object ids (comma-separated)")
    co.add_argument("--write-docs", action="store_true")
    se = sub.add_parser("search", help="the feature search from a results CSV's poses, to a results CSV")
    se.add_argument("start", type=Path)
    se.add_argument("--refiner", default="features", help="features:KEY=VALUE,... (FeatureFitConfig fields)")
    se.add_argument("--out", type=Path, required=True)
    se.add_argument("--iters", type=int, default=4)
    sw = sub.add_parser("sweep", help="the feature search's depth sweep alone on perturbed runs' poses")
    sw.add_argument("runs", type=Path, nargs="+", help="results_*.csv files written by `perturbed`")
    sw.add_argument("--refiner", required=True, help="features:depth_range=...,depth_score=...")
    sw.add_argument("--out", type=Path, default=Path("refine_sweep"))
    sw.add_argument("--objects", default=None, help="only these object ids (comma-separated)")
    sw.add_argument("--targets", type=Path, default=None, help="score over these BOP targets only")
    sw.add_argument("--write-docs", action="store_true")
    md = sub.add_parser("mask-depth", help="depth from a DeepIM refiner's predicted mask for perturbed runs' poses")
    md.add_argument("runs", type=Path, nargs="+", help="results_*.csv files written by `perturbed`")
    md.add_argument("--refiner", type=Path, required=True)
    md.add_argument("--out", type=Path, default=Path("refine_mask_depth"))
    md.add_argument("--objects", default=None, help="only these object ids (comma-separated)")
    md.add_argument("--write-docs", action="store_true")
    pz = sub.add_parser("perturbed")
    pz.add_argument("--refiner", type=Path, required=True)
    pz.add_argument("--out", type=Path, default=Path("refine_perturbed"))
    pz.add_argument("--polish", type=int, default=0, help="add a row: the last iterate after N polish steps")
    pz.add_argument("--objects", default=None, help="only these object ids (comma-separated)")
    pz.add_argument("--noise", default="0,1", help="which noise levels (0: 10 deg, 1: 20 deg; comma-separated)")
    pz.add_argument("--iters", default="1,2,4", help="the iterations reported (comma-separated; the most are run)")
    pz.add_argument("--images", type=int, default=None, help="only the first N images (a quicker look)")
    pz.add_argument("--first", type=int, default=0, help="skip this many images first (the rest keep their starts)")
    pz.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    if a.what == "speed":
        body = speed(a.preset, a.repeats)
        heading = "Refiner speed (DeepIM-style)"
    elif a.what == "speed-kinds":
        body = speed_kinds(a.repeats)
        heading = "Refinement speed by kind (DeepIM, pretrained trunk, features)"
    elif a.what == "search":
        print(search(a.start, a.refiner, a.out, a.iters))
        return
    elif a.what == "speed-search":
        body = speed_search(a.images, a.results, a.a, a.b)
        heading = "Feature search speed: warped candidates (lmo-dev)"
    elif a.what == "backgrounds":
        body = backgrounds(a.refiner)
        heading = "Refiner: real image vs renders over it (lmo-dev)"
    elif a.what == "synthetic":
        body = synthetic(a.refiner)
        heading = "Refiner on rendered pairs (training distribution)"
    elif a.what == "drift":
        body = drift(a.refiner, a.images)
        heading = "Refiner: is its error on real images systematic? (lmo-dev)"
    elif a.what == "components":
        body = components(a.runs, a.out, [int(v) for v in a.objects.split(",")] if a.objects else None)
        heading = "Refinement: which part of the pose limits it (lmo-dev)"
    elif a.what == "sweep":
        body = sweep(a.runs, a.refiner, a.out, [int(v) for v in a.objects.split(",")] if a.objects else None,
                     a.targets)
        heading = "Feature search: the depth sweep (lmo-dev)"
    elif a.what == "mask-depth":
        body = mask_depth(a.runs, a.refiner, a.out, objects=[int(v) for v in a.objects.split(",")] if a.objects else None)
        heading = "Refinement: depth from the refiner's predicted mask (lmo-dev)"
    elif a.what == "perturbed":
        objs = [int(v) for v in a.objects.split(",")] if a.objects else None
        body = perturbed(a.refiner, a.out, iters=tuple(int(v) for v in a.iters.split(",")), polish=a.polish,
                         objects=objs, noise=tuple(int(v) for v in a.noise.split(",")), n_images=a.images,
                         first=a.first)
        heading = "Refiner from perturbed ground truth (lmo-dev)"
        if a.polish and is_features(a.refiner):  # beside the search's own section, not over it
            heading = "Refiner from perturbed ground truth (lmo-dev, feature polish)"
    else:
        body = lmo(a.aae_dir, a.refiner, a.boxes, a.out, a.polish, coarse=a.coarse)
        heading = "Refiner on real LM-O images (lmo-dev)" if a.coarse == "AAE" else f"Refiner behind {a.coarse} (lmo-dev)"
    preset = a.preset if a.what == "speed" else "cpu" if a.what in ("speed-kinds", "speed-search", "components", "sweep") else refiner_preset(a.refiner)
    if is_features(getattr(a, "refiner", "")):
        heading = f"{heading[:-1]}, --refine features)" if heading.endswith(")") else f"{heading} (--refine features)"
    elif preset != "cpu":  # another preset's figures get their own sections beside the cpu preset's
        heading = f"{heading[:-1]}, {preset} preset)" if heading.endswith(")") else f"{heading} ({preset} preset)"
    print(body)
    if a.write_docs:
        write_section(heading, body)


if __name__ == "__main__":
    main()
