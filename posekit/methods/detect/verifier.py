"""A learned verifier of the template detector's hits (issue 27, item 1): one more check beside the four.

The template detector renders each hit's pose into its window and compares the render with the photo by fixed
rules (two cosines, the outline on edges, colours). True parts and look-alike clutter score alike on them (lmo-dev:
the right box is among the pool's hits for 87 % of the targets, ranked first for 67 %). The verifier is a small
head on what the detector already computed: the frozen backbone's s16 maps of the photo crop and of the render,
their cell-wise product under the render's mask (which channels agree, and where), and the rule-based checks. It is
trained in minutes on the detector's own hits on renders of the parts over photos (``posekit render`` scenes with
``--backgrounds``), labelled right where the hit's box meets a rendered instance at IoU >= 0.5: the hard negatives
are the detector's own false peaks on clutter, on occluders and on the other parts.

On lmo-dev it ranks alone worse than the rules (a head trained on renders does not see what a real photo of the
part looks like), but as a fifth check in their mean it lifts the pool's top-1 recall from 67.3 to 68.2 % (68.4-72.1 %
with heads from other renders or seeds; docs/benchmarks.md, "A learned verifier"): the two fail on different hits.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from posekit.errors import InputError

CHECKS = ("cosine", "rendered", "edges", "colour", "contrast")  # the rule-based scores the head also reads


@dataclass(frozen=True)
class VerifierPreset:
    """How a verifier is trained (stored in its workspace)."""

    name: str
    # what the head reads: the template detector's rendered check at this crop side and backbone map (its defaults)
    verify_crop: int = 128
    verify_map: str = "s16"
    images: int = 300  # rendered scenes whose hits are the training samples
    objects: tuple[int, int] = (2, 5)  # part instances per scene (posekit render --objects)
    apparent_size: tuple[float, float] = (0.11, 0.45)  # LM-O's spread of part sizes in the photo (docs/training.md)
    occluders: int = 2
    jitter_boxes: int = 2  # per rendered instance, boxes moved and scaled about its own (a trained detector's)
    hidden: int = 32
    epochs: int = 15
    batch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VerifierPreset:
        d = dict(d)
        for k in ("objects", "apparent_size"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


PRESETS = {
    # lmo-dev (8 parts): 300 scenes, 2.5 min to render, 30 min for the hits on 2 cores, 16 s for the head
    "cpu": VerifierPreset("cpu"),
    "large": VerifierPreset("large", images=2000, epochs=30),  # more scenes, where the cores allow (GPU: the same)
    "tiny": VerifierPreset("tiny", images=3, objects=(1, 2), epochs=2),  # for tests
}


def get_preset(name: str) -> VerifierPreset:
    if name not in PRESETS:
        raise InputError(f"unknown verifier preset {name!r} (one of {', '.join(PRESETS)})")
    return PRESETS[name]


class VerifierHead(nn.Module):
    """Photo and render s16 maps (B, C, h, w), the render's mask share per cell (B, h, w) and the rule-based checks
    (B, 6) -> one logit per hit (right part, right place)."""

    def __init__(self, channels: int = 112, hidden: int = 32) -> None:
        super().__init__()
        self.cell = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(),
                                  nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU())
        self.mlp = nn.Sequential(nn.Linear(hidden + 2 + len(CHECKS) + 1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, photo: torch.Tensor, render: torch.Tensor, mask: torch.Tensor,
                checks: torch.Tensor) -> torch.Tensor:
        a = photo / photo.norm(dim=1, keepdim=True).clamp_min(1e-6)
        b = render / render.norm(dim=1, keepdim=True).clamp_min(1e-6)
        p = a * b  # which channels agree, cell by cell
        h = self.cell(p)
        total = mask.flatten(1).sum(1).clamp_min(1e-6)
        pooled = (h * mask[:, None]).flatten(2).sum(2) / total[:, None]
        cos = (p.sum(1) * mask).flatten(1).sum(1) / total
        area = mask.flatten(1).mean(1)
        return self.mlp(torch.cat([pooled, cos[:, None], area[:, None], checks], 1))[:, 0]


def check_vector(scores: dict[str, float]) -> list[float]:
    """The rule-based checks as the head reads them: ``CHECKS`` in order (colour 0 where the part has none) and
    whether the part has colours."""
    colour = scores.get("colour")
    has = colour is not None and not math.isnan(colour)
    return [float(scores.get(k, 0.0)) if k != "colour" else (float(colour) if has else 0.0) for k in CHECKS] + \
        [1.0 if has else 0.0]


class Verifier:
    """A trained head and the preset it was trained with."""

    def __init__(self, head: VerifierHead, preset: VerifierPreset, objects: list[dict], device: str = "cpu"):
        self.head = head.to(device).eval()
        self.preset = preset
        self.objects = list(objects)  # the parts it was trained on: {"mesh_hash", "name"} each
        self.device = device

    @property
    def mesh_hashes(self) -> list[str]:
        return [o["mesh_hash"] for o in self.objects]

    @torch.no_grad()
    def probability(self, photo: torch.Tensor, render: torch.Tensor, mask: torch.Tensor,
                    checks: np.ndarray) -> np.ndarray:
        """(B,) probability that each hit is its part in its place."""
        c = torch.as_tensor(np.asarray(checks, dtype=np.float32), device=self.device)
        logit = self.head(photo.float().to(self.device), render.float().to(self.device), mask.float().to(self.device), c)
        return torch.sigmoid(logit).cpu().numpy()

    def save(self, out: str | Path, extra: dict | None = None) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.head.state_dict(), out / "verifier.pt")
        cfg = {"method": "verifier", "objects": self.objects, "preset": self.preset.to_dict(), **(extra or {})}
        tmp = out / "config.json.tmp"
        tmp.write_text(json.dumps(cfg, indent=1))
        tmp.replace(out / "config.json")


def check_workspace(path: str | Path) -> dict:
    """A `posekit train verifier` workspace's config, checked (before any long work); InputError naming what is
    wrong."""
    from posekit.data.store import read_workspace_config

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"--verifier {path}: no such folder")
    cfg = read_workspace_config(path, "verifier", "posekit train verifier")
    if not (path / "verifier.pt").is_file():
        raise InputError(f"{path}: no verifier.pt (training did not finish: run `posekit train verifier` again)")
    return cfg


def load_verifier(path: str | Path, device: str = "cpu") -> Verifier:
    """A `posekit train verifier` workspace; InputError naming what is wrong."""
    path = Path(path)
    cfg = check_workspace(path)
    weights = path / "verifier.pt"
    preset = VerifierPreset.from_dict(cfg["preset"])
    head = VerifierHead(hidden=preset.hidden)
    head.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return Verifier(head, preset, cfg.get("objects", []), device)


# ------------------------------------------------------------------------------------------------ training data
@dataclass
class Samples:
    """Hits with what the head reads and their labels; ``group``: one id per (image, part) searched."""

    photo: np.ndarray  # (N, C, h, w) float16
    render: np.ndarray
    mask: np.ndarray  # (N, h, w) float16
    checks: np.ndarray  # (N, 6) float32
    label: np.ndarray  # (N,) bool
    group: np.ndarray  # (N,) int

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **asdict(self))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Samples:
        z = np.load(path)
        return cls(**{f.name: z[f.name] for f in fields(cls)})

    @classmethod
    def join(cls, parts: list[Samples]) -> Samples:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})


def collect_image(detector, image: np.ndarray, camera, instances: dict[int, list], rng: np.random.Generator,
                  jitter: int, group0: int) -> Samples | None:
    """The samples of one rendered scene: the template detector's hits of every part shown (``instances``:
    {detector object id: [amodal boxes of its instances at least 10 % visible]}, an empty list for a part shown
    less) and of one part not shown, ungated and unthinned, plus ``jitter`` boxes about each instance verified
    as a trained detector's would be; a hit is right where its box meets an instance's at IoU >= 0.5."""
    from posekit.geometry.boxcrop import box_iou
    from posekit.methods.viewbased import image_tensor

    absent = [o for o in detector.workspaces if o not in instances]
    parts = sorted(instances) + ([int(rng.choice(absent))] if absent else [])
    hits, _ = detector.find(image, camera, parts, least=0.0)
    img = image_tensor(image)
    out, group = [], group0
    for o in parts:
        boxes = instances.get(o, [])
        mine = [h for h in hits if h.obj_id == o]
        given = []
        for b in boxes:
            for _ in range(jitter):
                s = np.exp(rng.normal(0.0, 0.12, 2))
                cx = b[0] + b[2] / 2 + rng.normal(0.0, 0.08) * b[2]
                cy = b[1] + b[3] / 2 + rng.normal(0.0, 0.08) * b[3]
                given.append((cx - b[2] * s[0] / 2, cy - b[3] * s[1] / 2, b[2] * s[0], b[3] * s[1]))
        if given:
            mine += detector.verify_boxes(image, camera, o, given, [1.0] * len(given))
        if not mine:
            continue
        photo, render, mask, *_ = detector.verify_maps(o, img, camera, np.array([h.window for h in mine]),
                                                   np.stack([h.R for h in mine]), np.stack([h.t for h in mine]))
        label = np.array([max((box_iou(h.bbox, b) for b in boxes), default=0.0) >= 0.5 for h in mine])
        out.append(Samples(photo.half().cpu().numpy(), render.half().cpu().numpy(), mask.half().cpu().numpy(),
                           np.array([check_vector(h.scores) for h in mine], dtype=np.float32), label,
                           np.full(len(mine), group)))
        group += 1
    return Samples.join(out) if out else None


def fit(samples: Samples, preset: VerifierPreset, seed: int = 0, log=None) -> VerifierHead:
    """The head trained on the samples (binary cross-entropy, positives weighted up to the negatives' count)."""
    torch.manual_seed(seed)
    y = torch.as_tensor(samples.label, dtype=torch.float32)
    if y.sum() == 0 or y.sum() == len(y):
        raise InputError(f"verifier: {int(y.sum())} right hits among {len(y)}: it needs both (render more scenes)")
    photo = torch.as_tensor(samples.photo)
    render = torch.as_tensor(samples.render)
    mask = torch.as_tensor(samples.mask)
    checks = torch.as_tensor(samples.checks)
    head = VerifierHead(channels=photo.shape[1], hidden=preset.hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=preset.lr, weight_decay=preset.weight_decay)
    lossf = nn.BCEWithLogitsLoss(pos_weight=(1 - y.mean()) / y.mean())
    for epoch in range(preset.epochs):
        perm = torch.randperm(len(y))
        total = 0.0
        for i in range(0, len(y), preset.batch):
            b = perm[i : i + preset.batch]
            loss = lossf(head(photo[b].float(), render[b].float(), mask[b].float(), checks[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        if log is not None:
            log(epoch + 1, total / len(y))
    return head.eval()


def train_verifier(detector, scenes: Path, obj_map: dict[int, int], out: Path, preset: VerifierPreset,
                   seed: int = 0, progress: bool = True) -> tuple[Verifier, dict]:
    """A verifier from the hits of ``detector`` (a :class:`TemplateDetector` of the parts) on the rendered scenes
    in ``scenes`` (a `posekit render` folder; ``obj_map``: its object ids to the detector's). The samples are kept
    per 25 scenes under ``out/samples/`` (a killed run resumes there); the head (a minute) is trained last."""
    from tqdm import tqdm

    from posekit.data.bop import BopDataset
    from posekit.eval.detection import amodal_box

    ds = BopDataset(scenes)
    frames = sorted(ds.frames("train_synt"), key=lambda f: (f.scene_id, f.im_id))[: preset.images]
    if len(frames) < preset.images:
        raise InputError(f"{scenes}: {len(frames)} rendered scenes, the {preset.name} preset needs {preset.images}")
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    chunk = 25
    parts: list[Samples] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(frames), desc="verifier: hits on renders", unit="scene", disable=not progress)
    for start in range(0, len(frames), chunk):
        path = folder / f"{start:06d}.npz"
        if path.is_file():
            parts.append(Samples.load(path))
            bar.update(min(chunk, len(frames) - start))
            continue
        rng = np.random.default_rng([seed, start])
        got = []
        for k, fr in enumerate(frames[start : start + chunk]):
            inst: dict[int, list] = {}
            for g in fr.gts:
                o = obj_map.get(g.obj_id)
                if o is None:
                    continue
                inst.setdefault(o, [])
                if g.info is not None and (g.info.visib_fract or 0.0) >= 0.1:
                    inst[o].append(amodal_box(g.info, fr.camera.width, fr.camera.height))
            s = collect_image(detector, fr.rgb(), fr.camera, inst, rng, preset.jitter_boxes,
                              group0=(start + k) * 1000)
            if s is not None:
                got.append(s)
            bar.update(1)
        if got:
            done = Samples.join(got)
            done.save(path)
            parts.append(done)
    bar.close()
    samples = Samples.join(parts)
    collect_s = time.perf_counter() - t0
    losses: list[float] = []
    head = fit(samples, preset, seed, log=lambda e, v: losses.append(v))
    objects = [{"mesh_hash": m.mesh_hash, "name": m.name, "cad": str(m.source or "")} for m in detector.models.values()]
    verifier = Verifier(head, preset, objects)
    stats = {"samples": int(len(samples.label)), "right": int(samples.label.sum()), "loss": losses[-1],
             "collect_seconds": round(collect_s, 1), "train_seconds": round(time.perf_counter() - t0 - collect_s, 1)}
    verifier.save(out, {"training": stats})
    return verifier, stats


def with_images(preset: VerifierPreset, images: int | None) -> VerifierPreset:
    if images is None:
        return preset
    if images < 1:
        raise InputError(f"--images must be >= 1, got {images}")
    return replace(preset, images=int(images))
