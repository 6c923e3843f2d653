"""The AAE's presets in one table: network size, crop size, training length, render cache and codebook size.

``paper`` follows Sundermeyer et al. (ECCV 2018): 128x128 crops, encoder 128/256/256/512 filters
(5x5, stride 2), latent 128, bootstrapped L2 over the hardest 25 % of pixels, Adam 2e-4, batch 64,
30k steps, codebook 2562 view points x 36 in-plane angles = 92,232 entries. ``cpu`` is sized to
train a useful model in about half an hour on two CPU cores (docs/training.md gives the measured
speed and what it costs in accuracy). ``tiny`` exists for tests and smoke runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from posekit.errors import InputError
from posekit.render.centred import CropSpec


@dataclass(frozen=True)
class AaePreset:
    """Everything that sizes an AAE run.

    image_size: crop side S (pixels) the network sees. render_size: side of the clean renders the
    crops are cut from (larger, so that crops are downsampled, not upsampled). filters: encoder conv
    widths (the decoder mirrors them). latent: code length. norm: "none" (the paper) or "group"
    (GroupNorm, for small batches). cache_views: random rotations rendered once into the training
    cache. codebook_views x codebook_inplane: codebook size. distance_factor: render distance in
    model diameters. crop_pad: the square crop is this times the larger side of the tight box.
    lr_schedule: "constant" or "cosine" (decay to 5 % of lr). threads: torch CPU threads (an
    OMP_NUM_THREADS set by the user wins). render_max_faces: meshes with more faces are decimated
    (open3d quadric, colours kept) before the cache and codebook renders: at these render sizes the
    triangles of a 45k-face LINEMOD scan are below a pixel, and a 10k-face copy renders 3x faster
    with mask IoU 0.999 (docs/training.md); None renders the full mesh. encoder: "conv" (the paper's) or
    "lite0" (the shared pretrained trunk + a trainable projection, ``network.PretrainedEncoder``; the decoder
    is still sized by ``filters``); trunk_freeze: the trunk's ImageNet weights kept up to this map.
    """

    name: str
    image_size: int
    render_size: int
    filters: tuple[int, ...]
    latent: int
    batch: int
    steps: int
    lr: float
    cache_views: int
    codebook_views: int
    codebook_inplane: int
    checkpoint_every: int
    sample_every: int
    norm: str = "none"
    bootstrap_ratio: float = 0.25
    distance_factor: float = 5.0
    crop_pad: float = 1.2
    lr_schedule: str = "constant"
    threads: int | None = None
    render_max_faces: int | None = 10000
    encoder: str = "conv"
    trunk_freeze: str | None = "s16"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AaePreset:
        d = dict(d)
        d["filters"] = tuple(d["filters"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def crop_spec(self) -> CropSpec:
        """The clean centred crops this preset renders (cache and codebook)."""
        return CropSpec(image_size=self.image_size, render_size=self.render_size, crop_pad=self.crop_pad,
                        distance_factor=self.distance_factor, render_max_faces=self.render_max_faces)

    def with_steps(self, steps: int | None) -> AaePreset:
        return self if steps is None else replace(self, steps=int(steps))


PRESETS: dict[str, AaePreset] = {
    "paper": AaePreset(
        name="paper", image_size=128, render_size=256, filters=(128, 256, 256, 512), latent=128, batch=64,
        steps=30000, lr=2e-4, cache_views=20000, codebook_views=2562, codebook_inplane=36,
        checkpoint_every=1000, sample_every=500,
    ),
    "cpu": AaePreset(
        name="cpu", image_size=64, render_size=128, filters=(32, 64, 64, 128), latent=128, batch=32,
        steps=5000, lr=5e-4, cache_views=4000, codebook_views=642, codebook_inplane=36,
        checkpoint_every=250, sample_every=250, norm="group", lr_schedule="cosine", threads=1,
    ),
    "tiny": AaePreset(
        name="tiny", image_size=48, render_size=64, filters=(16, 32, 32, 64), latent=64, batch=32,
        steps=400, lr=1e-3, cache_views=500, codebook_views=162, codebook_inplane=36,
        checkpoint_every=100, sample_every=100, norm="group", threads=1,
    ),
}
# the encoder on the shared pretrained trunk (frozen on the CPU): crops of 96 px so its stride-16 map has 6 x 6 cells
PRESETS["cpu-pretrained"] = replace(PRESETS["cpu"], name="cpu-pretrained", encoder="lite0", image_size=96,
                                    render_size=128, threads=None)
PRESETS["paper-pretrained"] = replace(PRESETS["paper"], name="paper-pretrained", encoder="lite0", trunk_freeze="s8")
PRESETS["tiny-pretrained"] = replace(PRESETS["tiny"], name="tiny-pretrained", encoder="lite0", image_size=64,
                                     render_size=96, steps=200)


def get_preset(name: str) -> AaePreset:
    """The preset called ``name``; InputError listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}") from None
