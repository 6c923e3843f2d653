"""Refiner presets: crop size, network width and training schedule, chosen together.

``cpu``: sized for this project's 2-core machine -- 64x64 zoom crops, a ~1.3 M-parameter GroupNorm
conv net, renders of meshes decimated to 2000 faces (pyrender on llvmpipe: ~7-10 ms per crop), so
that a refiner for the 8 LM-O objects trains in about 2 hours (measured: 16,000 steps in 109 min on two
threads with ``--pool 6000``, after a 2-min pool; docs/benchmarks.md, "trained from scratch"). It carries the tiny preset's lessons
(difference and coordinate channels, no random plain colours).
``cpu-hr``: the ``cpu`` network at 128x128 crops (twice the side: depth from apparent size and small
rotations are resolved to half the pixel fraction); the weights have the same shapes, so it fine-tunes a
``cpu`` workspace (``--init-from``); about 5x the network time per training step (0.50 s against 0.09 s
forward and backward for a batch of 32 here).
``paper``: for a GPU -- 256x192 crops (DeepIM's 640x480 zoom at 4:3, downscaled), a ResNet-style
residual backbone with ~11 M parameters, larger batches, more steps.
``cpu-pretrained`` / ``cpu-pretrained-corr`` / ``paper-pretrained`` / ``tiny-pretrained``: the refiner on the shared pretrained trunk
(``RefinePreset.trunk = "lite0"``; ``network.PretrainedRefineNet``): the same inputs, outputs, loss and pair
sampling, but the crops go through ImageNet EfficientNet-Lite0 (frozen on the CPU: no backward pass
through it; its s16 stages fine-tuned in the paper variant) and only a small head is trained; ``-corr``: the head
reads the observed crop only through a local correlation volume with the render (``combine="corr"``).
``tiny``: for tests (a minute on CPU). lr 3e-4: at 2e-3 (its former value) the pose heads did not learn
at all in 800 steps (held-out xy error flat), at 3e-4 they start within ~200 steps. Uncoloured meshes are
observed in their own grey shading (plain_color_p=0): with random plain colours the network must
first learn to find the object by shape alone, which is what kept the tiny refiner at "no update"
for hundreds of steps (with the true visible mask given as the observed image, xy learned 5x
faster). Depth noise is halved: depth from apparent size is learned last (not within a test's steps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from posekit.errors import InputError


@dataclass(frozen=True)
class RefinePreset:
    """Everything that fixes the refiner's input, network and training (stored in the workspace config)."""

    name: str
    crop_size: tuple[int, int] = (64, 64)  # (W, H) of the zoom crops fed to the network
    window_scale: float = 1.4  # zoom window = scale x projected object extent (DeepIM-like)
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels of the stride-2 stages
    blocks_per_stage: int = 1  # residual blocks per stage (0 = plain conv stages)
    fc_width: int = 256
    coord_channels: bool = False  # append the crop's normalised x, y (CoordConv) to the input
    diff_channels: bool = False  # append observed - rendered RGB to the input
    pool_grid: int = 4  # the last feature map is pooled to pool_grid x pool_grid before the FC layers
    groups: int = 8  # GroupNorm groups
    max_faces: int = 2000  # decimation budget of meshes rendered while training / refining
    n_points: int = 500  # model points of the point-matching loss
    mask_weight: float = 1.0  # weight of the visible-mask BCE beside the point loss
    # noise of the initial poses around the truth (a coarse estimate's errors)
    rot_noise_deg: float = 15.0  # std of each axis-angle component; magnitude capped below
    rot_noise_max_deg: float = 35.0
    xy_noise: float = 0.04  # std of the x, y offset, fraction of the object's distance (~ a few cm at 1 m)
    z_noise: float = 0.08  # std of the relative depth error (more along depth)
    second_iter_p: float = 0.3  # share of a batch re-rendered at the network's own first output
    batch_size: int = 32
    steps: int = 20000
    lr: float = 3e-4
    checkpoint_every: int = 250
    sample_every: int = 250
    occlude_p: float = 0.5
    plain_color_p: float = 0.5  # share of observed renders of uncoloured meshes given a random plain colour
    distractor_p: float = 0.5  # another object rendered near the target (occlusion by real objects)
    clutter: int = 0  # up to this many other objects beside / behind the target (a real scene's clutter)
    fine_p: float = 0.0  # share of initial poses drawn with fine_scale x the noise (learn small corrections too)
    fine_scale: float = 0.3
    lr_schedule: str = "constant"  # or "cosine" (posekit.train.loop.learning_rate)
    dark_bg_p: float = 0.0  # share of observed backgrounds dimmed to 3-45 % (real scenes are dark: LM-O median 0.24)
    background_image_p: float = 0.5  # share of observed backgrounds cut from the --backgrounds photos, when given
    trunk: str = ""  # "" = the from-scratch network above; "lite0" = the shared pretrained EfficientNet-Lite0
    trunk_freeze: str | None = "s16"  # with a trunk: keep its ImageNet weights up to this map (None: fine-tune all)
    # with a trunk: how the observed and rendered maps meet. "concat": both maps, their difference and their
    # per-cell cosine; "corr": only local cosine correlations (radius 3 cells at s8, 2 at s16) beside the rendered
    # maps, so that nothing of the real photo reaches the head except through a cosine
    combine: str = "concat"
    extras: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["crop_size"] = list(self.crop_size)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_json(cls, d: dict) -> RefinePreset:
        d = dict(d)
        d["crop_size"] = tuple(d["crop_size"])
        d["widths"] = tuple(d["widths"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


_CPU = RefinePreset(name="cpu", coord_channels=True, diff_channels=True, plain_color_p=0.0, clutter=4, fine_p=0.25,
                    lr_schedule="cosine", steps=16000, dark_bg_p=0.5)

PRESETS: dict[str, RefinePreset] = {
    "cpu": _CPU,
    # the cpu network at twice the crop side: its weights have the same shapes (the last feature map is pooled
    # to pool_grid x pool_grid), so `--init-from` a cpu workspace fine-tunes it; ~5x the network time per step
    "cpu-hr": replace(_CPU, name="cpu-hr", crop_size=(128, 128), steps=4000),
    "paper": RefinePreset(
        name="paper", crop_size=(256, 192), widths=(64, 128, 256, 512), blocks_per_stage=2, fc_width=512,
        groups=32, max_faces=20000, n_points=1000, batch_size=64, steps=100000, lr=3e-4,
        checkpoint_every=1000, sample_every=1000,
    ),
    # 2.15 steps/s pooled on the 2 cores for the 8 LM-O objects: the whole run (pool 6000 + 12,000 steps) took 96.6 min.
    # The same head on the shared pretrained trunk (posekit.features.backbone): observed and rendered crops
    # through frozen ImageNet EfficientNet-Lite0 (no backward pass through it), their s8 / s16 maps combined
    # (both, their difference and their per-cell cosine), a small trainable head; 128-px crops because the
    # stride-8 maps of a 64-px crop are only 8 x 8 cells
    "cpu-pretrained": replace(_CPU, name="cpu-pretrained", trunk="lite0", trunk_freeze="s16", crop_size=(128, 128),
                              widths=(128, 256), fc_width=256, batch_size=16, steps=12000, lr=3e-4),
    "paper-pretrained": RefinePreset(
        name="paper-pretrained", trunk="lite0", trunk_freeze="s8", crop_size=(256, 192), widths=(256, 512),
        fc_width=512, groups=32, max_faces=20000, n_points=1000, batch_size=64, steps=60000, lr=2e-4,
        checkpoint_every=1000, sample_every=1000, coord_channels=True, lr_schedule="cosine",
    ),
    "tiny": RefinePreset(
        name="tiny", crop_size=(48, 48), widths=(16, 32, 64), blocks_per_stage=0, fc_width=128, groups=4,
        coord_channels=True, diff_channels=True,
        max_faces=800, n_points=200, batch_size=16, steps=600, lr=3e-4, checkpoint_every=200, sample_every=0,
        rot_noise_deg=8.0, rot_noise_max_deg=20.0, z_noise=0.04, second_iter_p=0.0, occlude_p=0.0,
        distractor_p=0.0, plain_color_p=0.0,
    ),
}
# cpu-pretrained with the "corr" combine: the head sees the real photo only through local cosine correlations with
# the render (the cpu-pretrained head's raw observed maps carried a depth bias from real vs rendered appearance:
# at step 2,000, from 10-deg lmo-dev starts, median te after 4 it. 76 mm with "concat", 34 mm with "corr").
# 6,000 steps: the measured run (2,000 on a 12,000-step cosine, resumed with --steps 6000), 56 min here in two
# sittings (about 52 in one)
PRESETS["cpu-pretrained-corr"] = replace(PRESETS["cpu-pretrained"], name="cpu-pretrained-corr", steps=6000, combine="corr")
PRESETS["tiny-pretrained"] = replace(PRESETS["tiny"], name="tiny-pretrained", trunk="lite0", crop_size=(64, 64),
                                     widths=(32, 64), batch_size=8, steps=300)


def get_preset(name: str) -> RefinePreset:
    """The named preset; InputError listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"--preset: unknown refiner preset {name!r}; choose one of {', '.join(PRESETS)}") from None


__all__ = ["RefinePreset", "PRESETS", "get_preset"]
